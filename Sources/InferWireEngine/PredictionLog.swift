import DequeModule
import Foundation
public import InferWireCore
public import InferWireProto
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The serving pipeline's data destination: a sample of infer requests and their answers,
/// written per model version as JSON Lines files that rotate at a size cap, and running
/// statistics of every input feature per version, computed from the same sample.
///
/// The request path only offers a record to a bounded buffer (``offer(_:)``): when the
/// buffer is full the record is dropped and counted, and the request never waits. One
/// writer thread drains the buffer, renders records and writes files.
public final class PredictionLog: Sendable {
    /// Where and how much to log.
    public struct Configuration: Sendable, Hashable {
        /// Files go to `<directory>/<model>/<version>/predictions-<n>.jsonl`.
        public var directory: String
        /// The share of infer requests recorded, 0 to 1 (one request in `1/rate`).
        public var sampleRate: Double
        /// A file is closed and the next begun once it holds this many bytes.
        public var maxFileBytes: Int
        /// Files kept per model version; the oldest beyond are deleted.
        public var maxFiles: Int
        /// Records waiting for the writer, at most; more are dropped.
        public var bufferRecords: Int
        /// Input bytes of waiting records, at most; more are dropped.
        public var bufferBytes: Int
        /// Features (columns of an input) with statistics, per input; the rest are not tracked.
        public var maxFeatures: Int

        public init(
            directory: String, sampleRate: Double = 0.01, maxFileBytes: Int = 64 << 20, maxFiles: Int = 8,
            bufferRecords: Int = 4096, bufferBytes: Int = 64 << 20, maxFeatures: Int = 256
        ) {
            self.directory = directory
            self.sampleRate = sampleRate
            self.maxFileBytes = maxFileBytes
            self.maxFiles = maxFiles
            self.bufferRecords = bufferRecords
            self.bufferBytes = bufferBytes
            self.maxFeatures = maxFeatures
        }
    }

    /// One answered request.
    public struct Record: Sendable {
        public var time: Date
        public var model: String
        public var version: Int64
        public var requestID: String
        public var traceID: String?
        public var inputs: [Tensor]
        /// The serialized InferResponse, or the error.
        public var answer: Result<[UInt8], InferWireError>

        var inputBytes: Int { self.inputs.reduce(0) { $0 + $1.data.count } }
    }

    /// Running statistics of one feature: column `index` of input `input`.
    public struct FeatureStatistics: Sendable, Hashable {
        public var input: String
        public var index: Int
        /// Values seen, NaN excluded.
        public var count: UInt64 = 0
        public var mean: Double = 0
        /// Sum of squared differences from the mean (Welford); variance is `m2 / count`.
        var m2: Double = 0
        public var min: Double = .infinity
        public var max: Double = -.infinity
        /// NaN values seen: missing values, as exporters encode them.
        public var missing: UInt64 = 0

        public var variance: Double { self.count > 0 ? self.m2 / Double(self.count) : 0 }

        /// The statistics as MODEL_STATISTICS sends them.
        public var wire: Inferwire_V1_FeatureStatistics {
            var message = Inferwire_V1_FeatureStatistics()
            message.input = self.input
            message.index = UInt32(self.index)
            message.count = self.count
            message.mean = self.mean
            message.variance = self.variance
            message.min = self.count > 0 ? self.min : 0
            message.max = self.count > 0 ? self.max : 0
            message.missing = self.missing
            return message
        }

        mutating func add(_ value: Double) {
            guard !value.isNaN else {
                self.missing += 1
                return
            }
            self.count += 1
            let delta = value - self.mean
            self.mean += delta / Double(self.count)
            self.m2 += delta * (value - self.mean)
            self.min = Swift.min(self.min, value)
            self.max = Swift.max(self.max, value)
        }
    }

    /// What was written and dropped since start.
    public struct Counts: Sendable, Hashable {
        public var written: UInt64 = 0
        /// Offered while the buffer was full.
        public var dropped: UInt64 = 0
        /// Lost to a failed write (a full disk, a removed directory).
        public var failed: UInt64 = 0
        public var buffered: Int = 0
    }

    private struct Buffer {
        var records = Deque<Record>()
        var bytes = 0
        var closed = false
        var counts = Counts()
        /// Records accepted since start, and of those, records the writer has finished with.
        var accepted: UInt64 = 0
        var finished: UInt64 = 0
    }

    public let configuration: Configuration
    /// Which requests are offered (``Configuration/sampleRate``).
    public let sample: OneInN
    private let buffer = Mutex(Buffer())
    private let wakeup = DispatchSemaphore(value: 0)
    private let stopped = DispatchSemaphore(value: 0)
    /// Signalled whenever the writer finishes a batch, for ``flush()``.
    private let progress = NSCondition()
    private let writerGate: DispatchSemaphore?
    private let statistics = Mutex<[String: [Int64: [FeatureStatistics]]]>([:])

    /// Starts the writer thread. The directory is created if missing.
    public convenience init(configuration: Configuration) throws(InferWireError) {
        try self.init(configuration: configuration, writerGate: nil)
    }

    /// - Parameter writerGate: when set, the writer waits on it before each batch (tests hold
    ///   the writer with it to fill the buffer).
    init(configuration: Configuration, writerGate: DispatchSemaphore?) throws(InferWireError) {
        self.configuration = configuration
        self.writerGate = writerGate
        self.sample = OneInN(rate: configuration.sampleRate)
        do {
            try FileManager.default.createDirectory(atPath: configuration.directory, withIntermediateDirectories: true)
        } catch {
            throw InferWireError(
                code: .failedPrecondition,
                message: "cannot create the prediction log directory \(configuration.directory): \(error)", cause: error
            )
        }
        let thread = Thread { [self] in
            var writer = Writer(configuration: configuration)
            self.drain(into: &writer)
            writer.closeAll()
            self.stopped.signal()
        }
        thread.name = "inferwire-prediction-log"
        thread.start()
    }

    /// Hands a record to the writer; drops and counts it when the buffer is full. Never blocks
    /// beyond a short lock.
    public func offer(_ record: Record) {
        let bytes = record.inputBytes
        let accepted = self.buffer.withLock { buffer -> Bool in
            guard !buffer.closed, buffer.records.count < self.configuration.bufferRecords,
                buffer.bytes + bytes <= self.configuration.bufferBytes
            else {
                buffer.counts.dropped += 1
                return false
            }
            buffer.records.append(record)
            buffer.bytes += bytes
            buffer.accepted += 1
            return true
        }
        if accepted { self.wakeup.signal() }
    }

    /// Written, dropped and waiting records.
    public var counts: Counts {
        self.buffer.withLock { buffer in
            var counts = buffer.counts
            counts.buffered = buffer.records.count
            return counts
        }
    }

    /// Feature statistics of every model version seen, by model and version.
    public func featureStatistics() -> [String: [Int64: [FeatureStatistics]]] {
        self.statistics.withLock { $0 }
    }

    /// Feature statistics of one model version (empty when none was sampled).
    public func featureStatistics(model: String, version: Int64) -> [FeatureStatistics] {
        self.statistics.withLock { $0[model]?[version] ?? [] }
    }

    /// Writes what is buffered, closes the files and stops the writer; later offers are dropped.
    /// Blocks until done: call off any event loop, after the servers stopped.
    public func close() {
        let first = self.buffer.withLock { buffer -> Bool in
            defer { buffer.closed = true }
            return !buffer.closed
        }
        guard first else { return }
        self.wakeup.signal()
        self.stopped.wait()
    }

    /// Blocks until every record accepted so far has been written (for tests and tools).
    public func flush() {
        let target = self.buffer.withLock { $0.accepted }
        self.progress.lock()
        defer { self.progress.unlock() }
        while self.buffer.withLock({ $0.finished < target && !$0.closed }) {
            self.progress.wait()
        }
    }

    private func drain(into writer: inout Writer) {
        while true {
            self.wakeup.wait()
            self.writerGate?.wait()
            while true {
                let (batch, closed) = self.buffer.withLock { buffer -> ([Record], Bool) in
                    let batch = Array(buffer.records)
                    buffer.records.removeAll()
                    return (batch, buffer.closed)
                }
                if batch.isEmpty {
                    if closed { return }
                    break
                }
                var written: UInt64 = 0
                var failed: UInt64 = 0
                for record in batch {
                    self.updateStatistics(record)
                    if writer.write(record) { written += 1 } else { failed += 1 }
                }
                writer.flush()
                let bytes = batch.reduce(0) { $0 + $1.inputBytes }
                self.buffer.withLock { buffer in
                    buffer.counts.written += written
                    buffer.counts.failed += failed
                    buffer.bytes -= bytes
                    buffer.finished += UInt64(batch.count)
                }
                self.progress.lock()
                self.progress.broadcast()
                self.progress.unlock()
            }
        }
    }

    /// Adds the record's numeric inputs to the version's feature statistics: for an input of
    /// shape [rows, features...], feature i is the i-th value of every row.
    private func updateStatistics(_ record: Record) {
        var updates: [(Int, [Double], Int, String)] = []
        for (position, input) in record.inputs.enumerated() {
            guard let values = PredictionLog.numbers(input), !values.isEmpty else { continue }
            let rows = input.shape.count > 1 ? max(1, input.shape[0]) : 1
            let features = values.count / rows
            guard features > 0 else { continue }
            updates.append((position, values, features, input.name))
        }
        guard !updates.isEmpty else { return }
        let maxFeatures = self.configuration.maxFeatures
        self.statistics.withLock { all in
            var features = all[record.model]?[record.version] ?? []
            for (_, values, width, name) in updates {
                let tracked = min(width, maxFeatures)
                var base = features.firstIndex { $0.input == name }
                if base == nil {
                    base = features.count
                    features += (0..<tracked).map { FeatureStatistics(input: name, index: $0) }
                }
                for (offset, value) in values.enumerated() where offset % width < tracked {
                    features[base! + offset % width].add(value)
                }
            }
            all[record.model, default: [:]][record.version] = features
        }
    }

    /// The elements of a numeric tensor as doubles; nil for BYTES and unknown types.
    static func numbers(_ tensor: Tensor) -> [Double]? {
        let count = tensor.elementCount
        guard let size = tensor.dataType.elementSize, tensor.data.count == count * size else { return nil }
        return tensor.data.withUnsafeBytes { raw -> [Double]? in
            func load<T: BinaryInteger>(_: T.Type) -> [Double] {
                (0..<count).map { Double(raw.loadUnaligned(fromByteOffset: $0 * size, as: T.self)) }
            }
            switch tensor.dataType {
            case .bool, .uint8: return load(UInt8.self)
            case .int8: return load(Int8.self)
            case .int16: return load(Int16.self)
            case .int32: return load(Int32.self)
            case .int64: return load(Int64.self)
            case .fp16:
                return (0..<count).map {
                    Double(Float(Float16(bitPattern: raw.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self))))
                }
            case .fp32: return (0..<count).map { Double(raw.loadUnaligned(fromByteOffset: $0 * 4, as: Float.self)) }
            case .fp64: return (0..<count).map { raw.loadUnaligned(fromByteOffset: $0 * 8, as: Double.self) }
            default: return nil
            }
        }
    }

    /// The elements of a BYTES tensor as strings (invalid UTF-8 repaired).
    static func strings(_ tensor: Tensor) -> [String]? {
        guard tensor.dataType == .bytes else { return nil }
        var strings: [String] = []
        var offset = tensor.data.startIndex
        while offset + 4 <= tensor.data.endIndex {
            let length = tensor.data[offset..<offset + 4].enumerated().reduce(0) {
                $0 | Int($1.element) << (8 * $1.offset)
            }
            offset += 4
            guard offset + length <= tensor.data.endIndex else { return nil }
            strings.append(String(decoding: tensor.data[offset..<offset + length], as: UTF8.self))
            offset += length
        }
        return strings
    }
}

extension PredictionLog {
    /// Renders records as JSON lines into each version's current file, rotating by size.
    struct Writer {
        struct OpenFile {
            var handle: UnsafeMutablePointer<FILE>
            var bytes: Int
        }

        let configuration: Configuration
        var files: [String: OpenFile] = [:]

        init(configuration: Configuration) {
            self.configuration = configuration
        }

        /// Appends the record's line; false when it could not be written.
        mutating func write(_ record: Record) -> Bool {
            let directory = "\(self.configuration.directory)/\(record.model)/\(record.version)"
            let line = Self.line(record)
            if let open = self.files[directory], open.bytes + line.utf8.count > self.configuration.maxFileBytes,
                open.bytes > 0
            {
                fclose(open.handle)
                self.files[directory] = nil
            }
            if self.files[directory] == nil {
                guard let opened = self.open(in: directory) else { return false }
                self.files[directory] = opened
            }
            var written = 0
            var text = line
            let handle = self.files[directory]!.handle
            text.withUTF8 { bytes in written = fwrite(bytes.baseAddress, 1, bytes.count, handle) }
            self.files[directory]!.bytes += written
            return written == text.utf8.count
        }

        mutating func flush() {
            for file in self.files.values { fflush(file.handle) }
        }

        mutating func closeAll() {
            for file in self.files.values { fclose(file.handle) }
            self.files = [:]
        }

        /// Opens the next file in `directory` (numbered after the highest there) and deletes
        /// the oldest beyond ``Configuration/maxFiles``.
        func open(in directory: String) -> OpenFile? {
            try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let existing = Self.numberedFiles(in: directory)
            let next = (existing.last?.number ?? 0) + 1
            let keep = max(0, self.configuration.maxFiles - 1)
            for old in existing.dropLast(keep) {
                try? FileManager.default.removeItem(atPath: directory + "/" + old.name)
            }
            let path = directory + "/" + Self.fileName(next)
            guard let handle = fopen(path, "w") else { return nil }
            return OpenFile(handle: handle, bytes: 0)
        }

        static func fileName(_ number: Int) -> String {
            let digits = String(number)
            return "predictions-" + String(repeating: "0", count: max(0, 6 - digits.count)) + digits + ".jsonl"
        }

        /// The `predictions-<n>.jsonl` files of a directory, oldest (lowest n) first.
        static func numberedFiles(in directory: String) -> [(name: String, number: Int)] {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
            return names.compactMap { name -> (String, Int)? in
                guard name.hasPrefix("predictions-"), name.hasSuffix(".jsonl"),
                    let number = Int(name.dropFirst("predictions-".count).dropLast(".jsonl".count))
                else { return nil }
                return (name, number)
            }.sorted { $0.1 < $1.1 }
        }

        /// One record as a JSON object on one line.
        static func line(_ record: Record) -> String {
            var text = "{\"time\":"
            JSONText.appendString(JSONText.timestamp(record.time), to: &text)
            text += ",\"model\":"
            JSONText.appendString(record.model, to: &text)
            text += ",\"version\":\(record.version)"
            if !record.requestID.isEmpty {
                text += ",\"request_id\":"
                JSONText.appendString(record.requestID, to: &text)
            }
            if let trace = record.traceID {
                text += ",\"trace_id\":"
                JSONText.appendString(trace, to: &text)
            }
            text += ",\"inputs\":"
            appendTensors(record.inputs, to: &text)
            switch record.answer {
            case .success(let bytes):
                text += ",\"code\":\"OK\",\"outputs\":"
                if let response = try? Inferwire_V1_InferResponse(serializedBytes: bytes) {
                    appendTensors(response.outputs.compactMap { try? Tensor(wire: $0) }, to: &text)
                } else {
                    text += "{}"
                }
            case .failure(let error):
                text += ",\"code\":\"\(error.code)\",\"error\":"
                JSONText.appendString(error.message, to: &text)
            }
            return text + "}\n"
        }

        static func appendTensors(_ tensors: [Tensor], to text: inout String) {
            text += "{"
            for (index, tensor) in tensors.enumerated() {
                if index > 0 { text += "," }
                JSONText.appendString(tensor.name, to: &text)
                text +=
                    ":{\"datatype\":\"\(tensor.dataType.name)\",\"shape\":[\(tensor.shape.map(String.init).joined(separator: ","))],\"data\":["
                if let numbers = PredictionLog.numbers(tensor) {
                    let integral = tensor.dataType != .fp16 && tensor.dataType != .fp32 && tensor.dataType != .fp64
                    for (position, value) in numbers.enumerated() {
                        if position > 0 { text += "," }
                        if integral {
                            text += String(Int64(value))
                        } else if tensor.dataType == .fp32 {
                            text += Float(value).isFinite ? "\(Float(value))" : "null"
                        } else {
                            text += value.isFinite ? "\(value)" : "null"
                        }
                    }
                } else if let strings = PredictionLog.strings(tensor) {
                    for (position, string) in strings.enumerated() {
                        if position > 0 { text += "," }
                        JSONText.appendString(string, to: &text)
                    }
                }
                text += "]}"
            }
            text += "}"
        }
    }
}
