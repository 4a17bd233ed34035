import DequeModule
import Dispatch
import Foundation
public import InferWireCore
public import InferWireProto
import Synchronization

/// How a model version merges concurrent requests, from its `ModelConfig`.
public struct BatchingPolicy: Sendable, Hashable {
    /// Requests are merged only when true (config has `dynamic_batching` and the model a batch dimension).
    public var enabled: Bool
    /// Largest merged batch, in rows.
    public var maxBatchSize: Int
    /// Sizes worth waiting for, ascending.
    public var preferredBatchSizes: [Int]
    /// How long the oldest queued request may wait for others; zero never waits.
    public var maxQueueDelay: Duration
    /// Requests the queue holds before refusing with RESOURCE_EXHAUSTED.
    public var maxQueueSize: Int

    public init(config: Inferwire_V1_ModelConfig, signature: ModelSignature) {
        let batching = config.dynamicBatching
        self.enabled = config.hasDynamicBatching && signature.maxBatchSize > 0
        self.maxBatchSize = max(1, signature.maxBatchSize)
        self.preferredBatchSizes = batching.preferredBatchSize.map(Int.init).filter {
            $0 > 0 && $0 <= max(1, signature.maxBatchSize)
        }.sorted()
        // At most a minute: a longer wait is a configuration mistake, not a policy.
        self.maxQueueDelay = .microseconds(min(max(0, batching.maxQueueDelayUs), 60_000_000))
        self.maxQueueSize = batching.maxQueueSize > 0 ? Int(batching.maxQueueSize) : 1024
    }
}

/// The queue, dynamic batcher and execution instances of one model version.
///
/// Requests wait in two queues (HIGH before NORMAL). Each instance is a thread that, when
/// free, takes the request at the head of the queues and, with batching on, every queued
/// request that can share its execution (same dtypes and non-batch dimensions) up to
/// `maxBatchSize` rows — at once when `maxQueueDelay` is zero, so a lone request never
/// waits. It runs the model once, splits the outputs back by rows, and answers each caller.
/// Requests whose deadline passed or whose caller cancelled are answered without running.
public final class ModelScheduler: Sendable {
    struct Entry: Sendable {
        let request: PreparedRequest
        let shape: ShapeKey
        let arrival: ContinuousClock.Instant
        let deadline: ContinuousClock.Instant?
        let cancellation: RequestCancellation?
        let respond: @Sendable (Result<[UInt8], InferWireError>) -> Void
    }

    /// What must match for two requests to share an execution.
    struct ShapeKey: Hashable, Sendable {
        var types: [DataType]
        var innerShapes: [[Int]]

        init(_ inputs: [Tensor], batched: Bool) {
            self.types = inputs.map(\.dataType)
            self.innerShapes = inputs.map { batched ? Array($0.shape.dropFirst()) : $0.shape }
        }

        private init() {
            self.types = []
            self.innerShapes = []
        }

        /// For a request that runs alone and never joins a queue: nothing to compare.
        static let alone = ShapeKey()
    }

    /// Why a request must be answered without running: its caller cancelled it, or its
    /// deadline passed (`queued`: while it waited in a queue). nil: it may run.
    static func refusal(
        cancellation: RequestCancellation?, deadline: ContinuousClock.Instant?, now: ContinuousClock.Instant,
        queued: Bool
    ) -> InferWireError? {
        if cancellation?.isCancelled == true {
            return InferWireError(code: .cancelled, message: "cancelled before execution")
        }
        if let deadline, now >= deadline {
            return InferWireError(
                code: .deadlineExceeded,
                message: queued ? "deadline passed in the queue" : "deadline passed before execution")
        }
        return nil
    }

    private struct State {
        var high = Deque<Entry>()
        var normal = Deque<Entry>()
        var stopped = false
        /// Executions in progress: instance threads running a batch, and callers running a
        /// request in place (``runIfIdle``). Never more than `instances`.
        var busy = 0
        /// Moving average of single-row execution times, and how many were seen.
        var singleRowNanos = 0.0
        var singleRowSamples = 0
        var count: Int { self.high.count + self.normal.count }

        mutating func finished(execution: Duration, rows: Int) {
            self.busy -= 1
            guard rows == 1 else { return }
            let nanos = Double(execution.inNanoseconds)
            self.singleRowNanos = self.singleRowSamples == 0 ? nanos : 0.8 * self.singleRowNanos + 0.2 * nanos
            self.singleRowSamples += 1
        }
    }

    private enum Step {
        case exit
        case wait(until: ContinuousClock.Instant?)
        case run([Entry])
    }

    /// The default of ``inPlaceExecutionLimit``: long enough for a small tabular model, short
    /// enough that an I/O thread is never held long.
    public static let defaultInPlaceExecutionLimit: Duration = .microseconds(100)
    /// A single-row request runs on the caller's thread (``runIfIdle``) only while this
    /// version's recent single-row executions average less than this.
    public let inPlaceExecutionLimit: Duration
    /// Single-row executions measured before any request may run in place.
    static let inPlaceWarmupSamples = 8

    public let policy: BatchingPolicy
    public let label: String
    private let state = Mutex(State())
    private let wakeup = DispatchSemaphore(value: 0)
    private let instances: Int
    /// Entered by each instance thread while it runs; empty once all have exited.
    private let running = DispatchGroup()
    let statistics = Mutex(SchedulerStatistics())

    /// - Parameters:
    ///   - label: names the instance threads (`inferwire-<label>-<n>`).
    ///   - policy: how requests are merged.
    ///   - instances: execution threads, and the bound on concurrent executions.
    ///   - inPlaceExecutionLimit: see ``inPlaceExecutionLimit``; `.zero` never runs in place.
    public init(
        label: String, policy: BatchingPolicy, instances: Int,
        inPlaceExecutionLimit: Duration = ModelScheduler.defaultInPlaceExecutionLimit
    ) {
        self.label = label
        self.policy = policy
        self.instances = instances
        self.inPlaceExecutionLimit = inPlaceExecutionLimit
        for index in 0..<instances {
            self.running.enter()
            let thread = Thread { [self] in
                self.instanceLoop()
                self.running.leave()
            }
            thread.name = "inferwire-\(label)-\(index)"
            thread.start()
        }
    }

    /// Queues a request; answers at once with RESOURCE_EXHAUSTED if the queue is full.
    func submit(
        _ request: PreparedRequest, deadline: ContinuousClock.Instant?, cancellation: RequestCancellation?,
        respond: @escaping @Sendable (Result<[UInt8], InferWireError>) -> Void
    ) {
        let entry = Entry(
            request: request, shape: ShapeKey(request.inputs, batched: self.policy.enabled), arrival: .now,
            deadline: deadline, cancellation: cancellation, respond: respond)
        let refusal = self.state.withLock { state -> InferWireError? in
            if state.stopped {
                return InferWireError(
                    code: .unavailable,
                    message: "model '\(request.model.name)' version \(request.model.version) is shutting down")
            }
            guard state.count < self.policy.maxQueueSize else {
                return InferWireError(
                    code: .resourceExhausted,
                    message:
                        "model '\(request.model.name)' version \(request.model.version) has \(self.policy.maxQueueSize) requests queued"
                )
            }
            if request.priority == .high { state.high.append(entry) } else { state.normal.append(entry) }
            return nil
        }
        if let refusal {
            self.statistics.withLock { $0.recordRefusal(refusal.code, received: request.received) }
            respond(.failure(refusal))
            return
        }
        self.wakeup.signal()
    }

    /// Runs a single-row request on the calling thread, at once, when waiting for an instance
    /// would gain nothing: no request is queued (so there is nothing to batch it with), the
    /// queue delay is zero, an instance is free (the execution takes its place), and this
    /// version's single-row executions have recently been short (under
    /// ``inPlaceExecutionLimit``), so the caller (an I/O thread) is held only briefly.
    /// This saves the two cross-thread wake-ups of a queued request. Returns false, having
    /// done nothing, when the request must be submitted instead.
    func runIfIdle(
        _ request: PreparedRequest, deadline: ContinuousClock.Instant?, cancellation: RequestCancellation?,
        respond: @escaping @Sendable (Result<[UInt8], InferWireError>) -> Void
    ) -> Bool {
        guard request.rows == 1, self.policy.maxQueueDelay == .zero else { return false }
        // Answered without running, and without claiming an instance.
        let now = ContinuousClock.now
        if let refusal = Self.refusal(cancellation: cancellation, deadline: deadline, now: now, queued: false) {
            self.statistics.withLock { $0.recordRefusal(refusal.code, received: request.received) }
            respond(.failure(refusal))
            return true
        }
        let limit = Double(self.inPlaceExecutionLimit.inNanoseconds)
        let claimed = self.state.withLock { state -> Bool in
            guard !state.stopped, state.count == 0, state.busy < self.instances,
                state.singleRowSamples >= Self.inPlaceWarmupSamples, state.singleRowNanos < limit
            else { return false }
            state.busy += 1
            // Under the lock, so waitUntilStopped() after shutdown() also waits for this run.
            self.running.enter()
            return true
        }
        guard claimed else { return false }
        let entry = Entry(
            request: request, shape: .alone, arrival: now, deadline: deadline, cancellation: cancellation,
            respond: respond)
        let execution = self.execute([entry])
        let queued = self.state.withLock { state in
            state.finished(execution: execution, rows: 1)
            return state.count
        }
        self.running.leave()
        // Requests that arrived meanwhile found every instance busy: wake one for them.
        if queued > 0 { self.wakeup.signal() }
        return true
    }

    /// Lets the instance threads exit once the queue is empty.
    public func shutdown() {
        self.state.withLock { $0.stopped = true }
        for _ in 0..<self.instances { self.wakeup.signal() }
    }

    /// Blocks until every instance thread has exited (after ``shutdown()`` and a drained queue)
    /// and no request is running in place.
    public func waitUntilStopped() {
        self.running.wait()
    }

    /// Requests currently queued.
    public var queued: Int { self.state.withLock { $0.count } }

    private func instanceLoop() {
        while true {
            var dropped: [(Entry, InferWireError)] = []
            let step = self.state.withLock { state in
                let step = self.nextStep(&state, dropped: &dropped)
                if case .run = step { state.busy += 1 }
                return step
            }
            if !dropped.isEmpty {
                self.statistics.withLock { stats in
                    for (entry, error) in dropped { stats.recordRefusal(error.code, received: entry.request.received) }
                }
            }
            for (entry, error) in dropped { entry.respond(.failure(error)) }
            switch step {
            case .exit:
                return
            case .wait(let until):
                if let until {
                    let remaining = until - .now
                    if remaining > .zero {
                        _ = self.wakeup.wait(timeout: .now() + .nanoseconds(Int(remaining.inNanoseconds)))
                    }
                } else {
                    self.wakeup.wait()
                }
            case .run(let batch):
                let execution = self.execute(batch)
                let rows = batch.count == 1 ? batch[0].request.rows : 0
                let queued = self.state.withLock { state in
                    state.finished(execution: execution, rows: rows)
                    return state.count
                }
                // Others may have been left waiting while this instance was busy.
                if queued > 0 { self.wakeup.signal() }
            }
        }
    }

    /// Decides, under the lock, what an idle instance does next.
    private func nextStep(_ state: inout State, dropped: inout [(Entry, InferWireError)]) -> Step {
        let now = ContinuousClock.now
        // Answer, without running, what was cancelled or expired at the heads of the queues.
        func prune(_ queue: inout Deque<Entry>) {
            queue.removeAll { entry in
                guard
                    let refusal = Self.refusal(
                        cancellation: entry.cancellation, deadline: entry.deadline, now: now, queued: true)
                else {
                    return false
                }
                dropped.append((entry, refusal))
                return true
            }
        }
        prune(&state.high)
        prune(&state.normal)
        if state.count == 0 { return state.stopped ? .exit : .wait(until: nil) }
        // Every instance's place is taken (a caller is running a request in place).
        if state.busy >= self.instances { return .wait(until: nil) }
        guard self.policy.enabled else {
            return .run([state.high.popFirst() ?? state.normal.popFirst()!])
        }
        let head = state.high.first ?? state.normal.first!
        // Rows that could join the head's batch.
        var available = 0
        for entry in state.high where entry.shape == head.shape { available += entry.request.rows }
        for entry in state.normal where entry.shape == head.shape { available += entry.request.rows }
        if self.policy.maxQueueDelay > .zero, !state.stopped {
            // Waiting stops once any preferred size (or the maximum) is queued, at the
            // oldest arrival + delay, or before the earliest deadline would pass.
            let target = self.policy.preferredBatchSizes.first ?? self.policy.maxBatchSize
            let oldest = min(state.high.first?.arrival ?? now, state.normal.first?.arrival ?? now)
            var due = oldest + self.policy.maxQueueDelay
            for entry in state.high { if let d = entry.deadline { due = min(due, d) } }
            for entry in state.normal { if let d = entry.deadline { due = min(due, d) } }
            if available < target, now < due { return .wait(until: due) }
        }
        // Take compatible requests in queue order (HIGH first) up to the batch limit, or
        // to the largest preferred size that the available rows reach.
        var limit = self.policy.maxBatchSize
        if let preferred = self.policy.preferredBatchSizes.last(where: { $0 <= available }) { limit = preferred }
        var batch: [Entry] = []
        var rows = 0
        func take(from queue: inout Deque<Entry>) {
            var kept = Deque<Entry>()
            while let entry = queue.popFirst() {
                if entry.shape == head.shape, rows + entry.request.rows <= limit || batch.isEmpty {
                    batch.append(entry)
                    rows += entry.request.rows
                } else {
                    kept.append(entry)
                }
            }
            queue = kept
        }
        take(from: &state.high)
        take(from: &state.normal)
        return .run(batch)
    }

    /// Runs a batch, answers every request in it, records statistics; returns the model's run time.
    @discardableResult
    private func execute(_ batch: [Entry]) -> Duration {
        let start = ContinuousClock.now
        let model = batch[0].request.model
        let result: Result<[[Tensor]], InferWireError>
        if batch.count == 1 {
            result = Result { () throws(InferWireError) in [try model.run(batch[0].request.inputs)] }
        } else {
            result = Result { () throws(InferWireError) in
                let outputs = try model.run(Batching.merge(batch.map(\.request.inputs)))
                return try Batching.split(outputs, rows: batch.map(\.request.rows), model: model)
            }
        }
        let end = ContinuousClock.now
        let responses: [Result<[UInt8], InferWireError>]
        switch result {
        case .success(let perRequest):
            responses = zip(batch, perRequest).map { entry, outputs in
                Result { () throws(InferWireError) in try entry.request.response(outputs: outputs) }
            }
        case .failure(let error) where batch.count > 1:
            // One request's inputs (an index out of range, say) must not fail the others:
            // run each alone, so every caller gets the answer its own inputs give.
            _ = error
            responses = batch.map { entry in Result { () throws(InferWireError) in try entry.request.run() } }
        case .failure(let error):
            responses = [.failure(error)]
        }
        // Recorded before answering, so a caller that reads statistics after its answer sees it.
        let answered = ContinuousClock.now
        let rows = batch.reduce(0) { $0 + $1.request.rows }
        self.statistics.withLock { stats in
            stats.recordExecution(rows: rows)
            let compute = SchedulerStatistics.micros(end - start)
            let epoch = SlidingWindow.epoch(answered)
            for (entry, response) in zip(batch, responses) {
                stats.recordRequest(
                    queued: SchedulerStatistics.micros(start - entry.arrival), compute: compute,
                    code: response.code, received: entry.request.received, answered: answered, epoch: epoch)
            }
        }
        for entry in batch {
            guard let trace = entry.request.trace else { continue }
            trace.child("inferwire.queue", from: entry.arrival, to: start)
            trace.child("inferwire.compute", from: start, to: end, batchSize: rows)
        }
        for (entry, response) in zip(batch, responses) { entry.respond(response) }
        return end - start
    }
}

extension Result {
    var isFailure: Bool { if case .failure = self { true } else { false } }
}

extension Result<[UInt8], InferWireError> {
    /// The status the answer carries: OK, or the error's code.
    var code: InferWireError.Code {
        switch self {
        case .success: .ok
        case .failure(let error): error.code
        }
    }
}

/// Concatenating requests along the batch dimension and splitting outputs back.
enum Batching {
    /// One tensor per input holding every request's rows, in request order.
    static func merge(_ requests: [[Tensor]]) -> [Tensor] {
        requests[0].indices.map { i in
            let first = requests[0][i]
            var data = Data()
            data.reserveCapacity(requests.reduce(0) { $0 + $1[i].data.count })
            var rows = 0
            for inputs in requests {
                data.append(inputs[i].data)
                rows += inputs[i].shape[0]
            }
            return Tensor(
                name: first.name, dataType: first.dataType, shape: [rows] + first.shape.dropFirst(), data: data)
        }
    }

    /// Each request's rows of every output.
    static func split(_ outputs: [Tensor], rows: [Int], model: LoadedModel) throws(InferWireError) -> [[Tensor]] {
        let total = rows.reduce(0, +)
        var perRequest = [[Tensor]](repeating: [], count: rows.count)
        for output in outputs {
            guard output.shape.first == total else {
                throw InferWireError(
                    code: .internal,
                    message:
                        "model '\(model.name)' output '\(output.name)' has shape \(output.shape); a batch of \(total) rows needs \(total) in dimension 0"
                )
            }
            let perRow = output.shape.dropFirst().reduce(1, *)
            if let size = output.dataType.elementSize {
                guard output.data.count == total * perRow * size else {
                    throw InferWireError(
                        code: .internal,
                        message:
                            "model '\(model.name)' output '\(output.name)' holds \(output.data.count) bytes for shape \(output.shape)"
                    )
                }
                var offset = 0
                for (r, n) in rows.enumerated() {
                    let bytes = n * perRow * size
                    perRequest[r].append(
                        Tensor(
                            name: output.name, dataType: output.dataType, shape: [n] + output.shape.dropFirst(),
                            data: output.data.subdata(
                                in: (output.data.startIndex + offset)..<(output.data.startIndex + offset + bytes))))
                    offset += bytes
                }
            } else {
                // BYTES: walk the length prefixes, perRow elements per row.
                let data = [UInt8](output.data)
                var offset = 0
                for (r, n) in rows.enumerated() {
                    let start = offset
                    for _ in 0..<(n * perRow) {
                        guard offset + 4 <= data.count else {
                            throw InferWireError(
                                code: .internal,
                                message: "model '\(model.name)' output '\(output.name)' has malformed BYTES elements")
                        }
                        let length =
                            Int(data[offset]) | Int(data[offset + 1]) << 8 | Int(data[offset + 2]) << 16 | Int(
                                data[offset + 3]) << 24
                        offset += 4 + length
                        guard offset <= data.count else {
                            throw InferWireError(
                                code: .internal,
                                message: "model '\(model.name)' output '\(output.name)' has malformed BYTES elements")
                        }
                    }
                    perRequest[r].append(
                        Tensor(
                            name: output.name, dataType: .bytes, shape: [n] + output.shape.dropFirst(),
                            data: Data(data[start..<offset])))
                }
            }
        }
        return perRequest
    }
}

/// Outcomes per second over the last minute, for comparing versions over a window.
struct SlidingWindow: Sendable {
    struct Second: Sendable {
        var epoch = -1
        var requests: UInt64 = 0
        var failures: UInt64 = 0
        var latency = [UInt64](repeating: 0, count: 32)
    }
    var seconds = [Second](repeating: Second(), count: 60)

    /// The process's reference instant for window buckets.
    static let origin = ContinuousClock.now

    /// Whole seconds since ``origin``: the window's bucket index. Monotonic, and cheap
    /// enough for every request (no wall-clock read).
    static func epoch(_ at: ContinuousClock.Instant = .now) -> Int {
        Int((at - Self.origin).components.seconds)
    }

    mutating func record(epoch: Int, latencyMicros: UInt64, failed: Bool) {
        let slot = epoch % 60
        if self.seconds[slot].epoch != epoch { self.seconds[slot] = Second(epoch: epoch) }
        self.seconds[slot].requests += 1
        if failed { self.seconds[slot].failures += 1 }
        self.seconds[slot].latency[SchedulerStatistics.bucket(latencyMicros)] += 1
    }

    /// Requests, failures and the p99 latency bucket bound (µs) over the last `span` seconds.
    func summary(epoch: Int, span: Int) -> (requests: UInt64, failures: UInt64, p99Micros: UInt64) {
        let totals = self.totals(epoch: epoch, span: span)
        return (totals.requests, totals.failures, Self.p99Bound(totals.latency))
    }

    /// Requests, failures and requests by latency bucket over the last `span` seconds.
    func totals(epoch: Int, span: Int) -> (requests: UInt64, failures: UInt64, latency: [UInt64]) {
        var requests: UInt64 = 0
        var failures: UInt64 = 0
        var histogram = [UInt64](repeating: 0, count: 32)
        for second in self.seconds where second.epoch > epoch - min(span, 60) && second.epoch <= epoch {
            requests += second.requests
            failures += second.failures
            for i in 0..<32 { histogram[i] += second.latency[i] }
        }
        return (requests, failures, histogram)
    }

    /// The upper bound (µs) of the bucket holding the 99th percentile; 0 when empty.
    static func p99Bound(_ histogram: [UInt64]) -> UInt64 {
        let total = histogram.reduce(0, +)
        var seen: UInt64 = 0
        for (i, n) in histogram.enumerated() {
            seen += n
            if total > 0, seen * 100 >= total * 99 { return UInt64(1) << UInt64(i) }
        }
        return 0
    }
}

/// Counters and histograms of one model version.
struct SchedulerStatistics: Sendable {
    var requests: UInt64 = 0
    var failures: UInt64 = 0
    var executions: UInt64 = 0
    /// Executions by rows: an array for the common small batches (no hashing per
    /// request), a dictionary beyond.
    var smallBatchSizes = [UInt64](repeating: 0, count: 65)
    var largeBatchSizes: [UInt32: UInt64] = [:]
    var queueMicros: UInt64 = 0
    var computeMicros: UInt64 = 0
    var queueHistogram = [UInt64](repeating: 0, count: 32)
    var computeHistogram = [UInt64](repeating: 0, count: 32)
    /// Answers by status code.
    var statusCounts = StatusCounts()
    /// Read-to-answer times, for requests whose arrival was timed (request metrics on).
    var requestMicros: UInt64 = 0
    var requestHistogram = [UInt64](repeating: 0, count: 32)
    var window = SlidingWindow()

    static func micros(_ d: Duration) -> UInt64 {
        UInt64(max(0, d.inMicroseconds))
    }

    /// Bucket i holds durations in [2^(i-1), 2^i) µs; bucket 0 those under 1 µs.
    static func bucket(_ micros: UInt64) -> Int {
        micros == 0 ? 0 : min(31, 64 - micros.leadingZeroBitCount)
    }

    /// A request run inline, on the I/O thread: no queue, one row count, no array.
    mutating func recordInline(
        execution: Duration, rows: Int, code: InferWireError.Code, received: ContinuousClock.Instant?,
        answered: ContinuousClock.Instant
    ) {
        self.recordExecution(rows: rows)
        self.recordRequest(
            queued: 0, compute: Self.micros(execution), code: code, received: received, answered: answered,
            epoch: SlidingWindow.epoch(answered))
    }

    /// A request routed to this version and answered without running: invalid inputs, a full
    /// queue, a deadline or a cancel. It counts as a failure and by its code, not in the
    /// queue and compute times nor in the sliding window (which judges the model's answers).
    mutating func recordRefusal(_ code: InferWireError.Code, received: ContinuousClock.Instant?) {
        self.failures += 1
        self.statusCounts.add(code)
        if let received { self.recordRequestTime(Self.micros(.now - received)) }
    }

    private mutating func recordRequestTime(_ micros: UInt64) {
        self.requestMicros += micros
        self.requestHistogram[Self.bucket(micros)] += 1
    }

    mutating func recordExecution(rows: Int) {
        self.executions += 1
        if rows < self.smallBatchSizes.count {
            self.smallBatchSizes[rows] += 1
        } else {
            self.largeBatchSizes[UInt32(rows), default: 0] += 1
        }
    }

    mutating func recordRequest(
        queued: UInt64, compute: UInt64, code: InferWireError.Code, received: ContinuousClock.Instant?,
        answered: ContinuousClock.Instant, epoch: Int
    ) {
        let failed = code != .ok
        self.requests += 1
        if failed { self.failures += 1 }
        self.statusCounts.add(code)
        if let received { self.recordRequestTime(Self.micros(answered - received)) }
        self.window.record(epoch: epoch, latencyMicros: queued + compute, failed: failed)
        self.queueMicros += queued
        self.queueHistogram[Self.bucket(queued)] += 1
        self.computeMicros += compute
        self.computeHistogram[Self.bucket(compute)] += 1
    }

    func message(name: String, version: Int64) -> Inferwire_V1_VersionStatistics {
        var m = Inferwire_V1_VersionStatistics()
        m.name = name
        m.version = version
        m.requestCount = self.requests
        m.failureCount = self.failures
        m.executionCount = self.executions
        var sizes = self.largeBatchSizes
        for (rows, count) in self.smallBatchSizes.enumerated() where count > 0 { sizes[UInt32(rows)] = count }
        m.batchSizeCounts = sizes
        m.queueTimeUs = self.queueMicros
        m.computeTimeUs = self.computeMicros
        m.queueTimeHistogram = self.queueHistogram
        m.computeTimeHistogram = self.computeHistogram
        for (code, count) in self.statusCounts.byCode {
            m.statusCounts[UInt32(truncatingIfNeeded: code.rawValue)] = count
        }
        m.requestTimeUs = self.requestMicros
        if self.requestHistogram.contains(where: { $0 > 0 }) { m.requestTimeHistogram = self.requestHistogram }
        return m
    }
}
