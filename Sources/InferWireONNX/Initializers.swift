import Foundation
import InferWireCore
import InferWireProto

extension OnnxTensor {
    /// Decodes an initializer or a tensor attribute.
    init(proto: Onnx_TensorProto) throws(OnnxError) {
        let what = proto.name.isEmpty ? "tensor" : "initializer '\(proto.name)'"
        if proto.dataLocation == .external {
            throw OnnxError("\(what) keeps its data in an external file, which is read only for initializers")
        }
        guard proto.dims.allSatisfy({ $0 >= 0 }) else { throw OnnxError("\(what) has a negative dimension") }
        let shape = proto.dims.map { Int($0) }
        let count = try checkedCount(shape, what)
        guard let type = ElementType(onnx: proto.dataType) else {
            throw OnnxError(
                "\(what) has element type \(ElementType.name(ofONNX: proto.dataType)), which InferWire does not run")
        }
        let raw = proto.rawData
        func fromRaw<T>(_: T.Type) throws(OnnxError) -> [T] {
            guard raw.count == count * MemoryLayout<T>.size else {
                throw OnnxError(
                    "\(what): raw_data has \(raw.count) bytes; dims \(shape) need \(count * MemoryLayout<T>.size)")
            }
            return [T](unsafeUninitializedCapacity: count) { buffer, n in
                raw.withUnsafeBytes { _ = $0.copyBytes(to: UnsafeMutableRawBufferPointer(buffer)) }
                n = count
            }
        }
        func check(_ n: Int, _ field: String) throws(OnnxError) {
            guard n == count else { throw OnnxError("\(what): \(field) has \(n) values; dims \(shape) need \(count)") }
        }
        let storage: Storage
        switch type {
        case .float:
            if !raw.isEmpty {
                storage = .float(try fromRaw(Float.self))
            } else {
                try check(proto.floatData.count, "float_data")
                storage = .float(proto.floatData)
            }
        case .double:
            if !raw.isEmpty {
                storage = .double(try fromRaw(Double.self))
            } else {
                try check(proto.doubleData.count, "double_data")
                storage = .double(proto.doubleData)
            }
        case .int64:
            if !raw.isEmpty {
                storage = .int64(try fromRaw(Int64.self))
            } else {
                try check(proto.int64Data.count, "int64_data")
                storage = .int64(proto.int64Data)
            }
        case .int32:
            if !raw.isEmpty {
                storage = .int32(try fromRaw(Int32.self))
            } else {
                try check(proto.int32Data.count, "int32_data")
                storage = .int32(proto.int32Data)
            }
        case .bool:
            if !raw.isEmpty {
                storage = .bool(try fromRaw(UInt8.self).map { $0 != 0 })
            } else {
                try check(proto.int32Data.count, "int32_data")
                storage = .bool(proto.int32Data.map { $0 != 0 })
            }
        case .string:
            try check(proto.stringData.count, "string_data")
            storage = .string(proto.stringData.map { String(decoding: $0, as: UTF8.self) })
        case .int8, .uint8, .int16, .uint16, .float16, .bfloat16:
            // Raw little-endian elements, or int32_data holding each value (or bit pattern).
            let values: [Int32]
            if !raw.isEmpty {
                switch type {
                case .int8: values = try fromRaw(Int8.self).map(Int32.init)
                case .uint8: values = try fromRaw(UInt8.self).map(Int32.init)
                case .int16: values = try fromRaw(Int16.self).map(Int32.init)
                default: values = try fromRaw(UInt16.self).map(Int32.init)
                }
            } else {
                try check(proto.int32Data.count, "int32_data")
                values = proto.int32Data
            }
            switch type {
            case .float16: storage = .float(values.map { Float(Float16(bitPattern: UInt16(truncatingIfNeeded: $0))) })
            case .bfloat16: storage = .float(values.map { bfloat16Value(UInt16(truncatingIfNeeded: $0)) })
            default: storage = type.narrowed(.int32(values))
            }
        case .uint64:
            let values: [UInt64]
            if !raw.isEmpty {
                values = try fromRaw(UInt64.self)
            } else {
                try check(proto.uint64Data.count, "uint64_data")
                values = proto.uint64Data
            }
            guard values.allSatisfy({ $0 <= UInt64(Int64.max) }) else {
                throw OnnxError("\(what): UINT64 values of 2^63 and above are not supported")
            }
            storage = .int64(values.map { Int64($0) })
        case .float8(let format) where format.bits == 8:
            // One byte per element, raw or each in an int32_data entry.
            let codes: [UInt8]
            if !raw.isEmpty {
                codes = try fromRaw(UInt8.self)
            } else {
                try check(proto.int32Data.count, "int32_data")
                codes = proto.int32Data.map { UInt8(truncatingIfNeeded: $0) }
            }
            storage = .float(codes.map(format.decode))
        case .float8, .subByte:
            // Packed: 4-bit elements two to a byte, 2-bit ones four, the first in the low bits;
            // raw, or a byte in each int32_data entry.
            let bits = type.packedBits ?? 8
            let perByte = 8 / bits
            let packed = raw.isEmpty ? proto.int32Data.map { UInt8(truncatingIfNeeded: $0) } : [UInt8](raw)
            let needed = (count + perByte - 1) / perByte
            guard packed.count == needed else {
                throw OnnxError(
                    "\(what): \(raw.isEmpty ? "int32_data" : "raw_data") has \(packed.count) bytes; dims \(shape) need \(needed) (\(perByte) elements a byte)"
                )
            }
            let mask = UInt8((1 << bits) - 1)
            let codes = (0..<count).map { i in packed[i / perByte] >> UInt8((i % perByte) * bits) & mask }
            if case .float8(let format) = type {
                storage = .float(codes.map(format.decode))
            } else {
                storage = type.narrowed(.int32(codes.map { Int32($0) }))
            }
        case .uint32:
            if !raw.isEmpty {
                storage = .int64(try fromRaw(UInt32.self).map(Int64.init))
            } else {
                try check(proto.uint64Data.count, "uint64_data")
                storage = .int64(proto.uint64Data.map { Int64(UInt32(truncatingIfNeeded: $0)) })
            }
        }
        self.init(shape: shape, storage: storage, narrow: type.isNarrow ? type : nil)
    }
}

/// A node's attributes by name, with typed, validated access.
struct Attributes {
    let node: String
    let op: String
    private var byName: [String: Onnx_AttributeProto]
    private var used: Set<String> = []

    init(_ node: Onnx_NodeProto, label: String) {
        self.node = label
        self.op = node.opType
        self.byName = Dictionary(node.attribute.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
    }

    func has(_ name: String) -> Bool { self.byName[name] != nil }

    private func error(_ text: String) -> OnnxError { OnnxError("\(self.node): \(text)") }

    mutating func int(_ name: String) throws(OnnxError) -> Int? {
        guard let a = self.take(name) else { return nil }
        guard a.type == .int || (a.type == .undefined && a.i != 0) else {
            throw self.error("attribute '\(name)' must be an int")
        }
        return Int(a.i)
    }
    mutating func int(_ name: String, default value: Int) throws(OnnxError) -> Int { try self.int(name) ?? value }

    mutating func float(_ name: String) throws(OnnxError) -> Float? {
        guard let a = self.take(name) else { return nil }
        guard a.type == .float || a.type == .undefined else { throw self.error("attribute '\(name)' must be a float") }
        return a.f
    }
    mutating func float(_ name: String, default value: Float) throws(OnnxError) -> Float {
        try self.float(name) ?? value
    }

    mutating func string(_ name: String) throws(OnnxError) -> String? {
        guard let a = self.take(name) else { return nil }
        guard a.type == .string || a.type == .undefined else {
            throw self.error("attribute '\(name)' must be a string")
        }
        return String(decoding: a.s, as: UTF8.self)
    }
    mutating func string(_ name: String, default value: String) throws(OnnxError) -> String {
        try self.string(name) ?? value
    }

    mutating func ints(_ name: String) throws(OnnxError) -> [Int]? {
        guard let a = self.take(name) else { return nil }
        guard a.type == .ints || a.type == .undefined else {
            throw self.error("attribute '\(name)' must be a list of ints")
        }
        return a.ints.map { Int($0) }
    }
    mutating func int64s(_ name: String) throws(OnnxError) -> [Int64]? {
        guard let a = self.take(name) else { return nil }
        guard a.type == .ints || a.type == .undefined else {
            throw self.error("attribute '\(name)' must be a list of ints")
        }
        return a.ints
    }
    mutating func floats(_ name: String) throws(OnnxError) -> [Float]? {
        guard let a = self.take(name) else { return nil }
        guard a.type == .floats || a.type == .undefined else {
            throw self.error("attribute '\(name)' must be a list of floats")
        }
        return a.floats
    }
    mutating func strings(_ name: String) throws(OnnxError) -> [String]? {
        guard let a = self.take(name) else { return nil }
        guard a.type == .strings || a.type == .undefined else {
            throw self.error("attribute '\(name)' must be a list of strings")
        }
        return a.strings.map { String(decoding: $0, as: UTF8.self) }
    }
    mutating func tensor(_ name: String) throws(OnnxError) -> OnnxTensor? {
        guard let a = self.take(name) else { return nil }
        guard a.type == .tensor || (a.type == .undefined && a.hasT) else {
            throw self.error("attribute '\(name)' must be a tensor")
        }
        return try OnnxTensor(proto: a.t)
    }

    mutating func graph(_ name: String) throws(OnnxError) -> Onnx_GraphProto? {
        guard let a = self.take(name) else { return nil }
        guard a.type == .graph || (a.type == .undefined && a.hasG) else {
            throw self.error("attribute '\(name)' must be a graph")
        }
        return a.g
    }

    /// Fails for any attribute the kernel did not read: an attribute InferWire does not
    /// understand must fail the load, never be silently ignored.
    func checkAllUsed(ignoring ignorable: Set<String> = []) throws(OnnxError) {
        let unknown = Set(self.byName.keys).subtracting(self.used).subtracting(ignorable)
        if let first = unknown.sorted().first {
            throw self.error("attribute '\(first)' of \(self.op) is not supported")
        }
    }

    private mutating func take(_ name: String) -> Onnx_AttributeProto? {
        guard let a = self.byName[name] else { return nil }
        if !a.refAttrName.isEmpty { return nil }
        self.used.insert(name)
        return a
    }
}

/// ONNX tensors as InferWire tensors, for tools that feed ONNX's test data to the runtime.
package enum OnnxTensorConversion {
    /// A `TensorProto` (ONNX's test data format) as a wire tensor; throws for element types the
    /// runtime does not hold.
    package static func tensor(_ proto: Onnx_TensorProto, name: String) throws -> Tensor {
        do {
            return try OnnxTensor(proto: proto).wire(name: name)
        } catch {
            throw InferWireError(code: .invalidArgument, message: error.message)
        }
    }
}

/// Tensors whose bytes live in files beside the model (`location`, `offset`, `length`, as
/// ONNX's external data format says), confined to the version directory.
struct ExternalData {
    let directory: String

    /// The tensor with its external bytes read into `raw_data`, after checking the path stays
    /// in the directory and the byte range fits the file and the tensor's shape.
    func inlined(_ proto: Onnx_TensorProto) throws(OnnxError) -> Onnx_TensorProto {
        let what = "initializer '\(proto.name)'"
        var entries: [String: String] = [:]
        for entry in proto.externalData { entries[entry.key] = entry.value }
        guard let location = entries["location"], !location.isEmpty else {
            throw OnnxError("\(what): external data without a location")
        }
        let components = location.split(separator: "/", omittingEmptySubsequences: false)
        guard !location.hasPrefix("/"), !location.contains("\0"), !components.contains(where: { $0 == ".." }) else {
            throw OnnxError("\(what): external data location '\(location)' leaves the version directory")
        }
        guard let offset = Int(entries["offset"] ?? "0"), offset >= 0 else {
            throw OnnxError("\(what): external data offset '\(entries["offset"] ?? "")' is not a byte offset")
        }
        guard let type = ElementType(onnx: proto.dataType), let size = type.dataType.elementSize else {
            throw OnnxError(
                "\(what): external data of type \(ElementType.name(ofONNX: proto.dataType)) is not supported")
        }
        guard proto.dims.allSatisfy({ $0 >= 0 }) else { throw OnnxError("\(what) has a negative dimension") }
        let count = try checkedCount(proto.dims.map { Int($0) }, what)
        var (expected, overflow) = count.multipliedReportingOverflow(by: size)
        guard !overflow else { throw OnnxError("\(what) is too large") }
        // Sub-byte elements are packed in files (the wire gives each a byte).
        if let bits = type.packedBits { expected = (count * bits + 7) / 8 }
        if let text = entries["length"] {
            guard let length = Int(text), length == expected else {
                throw OnnxError(
                    "\(what): external data length \(text) does not hold dims \(proto.dims) (\(expected) bytes)")
            }
        }
        // Symbolic links may not lead out of the directory either.
        let root = URL(fileURLWithPath: self.directory).resolvingSymlinksInPath().path
        let file = URL(fileURLWithPath: self.directory + "/" + location).resolvingSymlinksInPath().path
        guard file.hasPrefix(root + "/") else {
            throw OnnxError("\(what): external data location '\(location)' leaves the version directory")
        }
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: file),
            let fileSize = (attributes[.size] as? NSNumber)?.intValue,
            attributes[.type] as? FileAttributeType == .typeRegular
        else {
            throw OnnxError("\(what): external data file '\(location)' cannot be read")
        }
        guard offset <= fileSize, expected <= fileSize - offset else {
            throw OnnxError(
                "\(what): external data needs \(expected) bytes at offset \(offset) of '\(location)', which has \(fileSize)"
            )
        }
        guard let handle = FileHandle(forReadingAtPath: file) else {
            throw OnnxError("\(what): external data file '\(location)' cannot be read")
        }
        defer { try? handle.close() }
        let bytes: Data
        do {
            try handle.seek(toOffset: UInt64(offset))
            bytes = try handle.read(upToCount: expected) ?? Data()
        } catch {
            throw OnnxError("\(what): reading '\(location)' failed")
        }
        guard bytes.count == expected else { throw OnnxError("\(what): '\(location)' ended early") }
        var inlined = proto
        inlined.rawData = bytes
        inlined.dataLocation = .default
        inlined.externalData = []
        return inlined
    }
}
