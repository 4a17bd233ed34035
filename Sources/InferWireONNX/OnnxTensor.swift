import Foundation
import InferWireCore
import InferWireProto

/// The element types the runtime computes with. The narrow ones are held in a wider storage
/// (``wide``) and tagged: kernels compute in the wide type, and their results are wrapped or
/// rounded back to the narrow type (``ExecutionPlan``), as onnxruntime computes FP16 in FP32
/// and rounds. UINT64 is held as INT64's bit pattern, so values of 2^63 and above are refused
/// where tensors enter (wire inputs, initializers): below that the two agree.
enum ElementType: Sendable, Hashable, CustomStringConvertible {
    case float, double, int64, int32, bool, string
    case int8, uint8, int16, uint16, uint32, uint64, float16, bfloat16
    /// The 8- and 4-bit floats (see ``MiniFloat``).
    case float8(MiniFloat)
    /// The sub-byte integers: `bits` 4 or 2, signed or not.
    case subByte(bits: Int, signed: Bool)

    static let int4 = ElementType.subByte(bits: 4, signed: true)
    static let uint4 = ElementType.subByte(bits: 4, signed: false)
    static let int2 = ElementType.subByte(bits: 2, signed: true)
    static let uint2 = ElementType.subByte(bits: 2, signed: false)

    /// ONNX's `TensorProto.DataType` numbers, with the wire's and the name of each.
    private static let codes: [(ElementType, onnx: Int32, wire: DataType, name: String)] = [
        (.float, 1, .fp32, "float"), (.uint8, 2, .uint8, "uint8"), (.int8, 3, .int8, "int8"),
        (.uint16, 4, .uint16, "uint16"), (.int16, 5, .int16, "int16"), (.int32, 6, .int32, "int32"),
        (.int64, 7, .int64, "int64"), (.string, 8, .bytes, "string"), (.bool, 9, .bool, "bool"),
        (.float16, 10, .fp16, "float16"), (.double, 11, .fp64, "double"), (.uint32, 12, .uint32, "uint32"),
        (.uint64, 13, .uint64, "uint64"), (.bfloat16, 16, .bf16, "bfloat16"),
        (.float8(.e4m3fn), 17, .fp8e4m3fn, "float8e4m3fn"), (.float8(.e4m3fnuz), 18, .fp8e4m3fnuz, "float8e4m3fnuz"),
        (.float8(.e5m2), 19, .fp8e5m2, "float8e5m2"), (.float8(.e5m2fnuz), 20, .fp8e5m2fnuz, "float8e5m2fnuz"),
        (.uint4, 21, .uint4, "uint4"), (.int4, 22, .int4, "int4"), (.float8(.e2m1), 23, .fp4e2m1, "float4e2m1"),
        (.float8(.e8m0), 24, .fp8e8m0, "float8e8m0"), (.uint2, 25, .uint2, "uint2"), (.int2, 26, .int2, "int2"),
    ]

    /// From ONNX's `TensorProto.DataType` number.
    init?(onnx code: Int32) {
        guard let entry = Self.codes.first(where: { $0.onnx == code }) else { return nil }
        self = entry.0
    }

    /// The storage a narrow type is computed in; the type itself for the others.
    var wide: ElementType {
        switch self {
        case .int8, .uint8, .int16, .uint16, .subByte: .int32
        case .uint32, .uint64: .int64
        case .float16, .bfloat16, .float8: .float
        default: self
        }
    }

    var isNarrow: Bool { self.wide != self }

    /// The wire type InferWire uses for it (a switch: every response's outputs ask).
    var dataType: DataType {
        switch self {
        case .float: .fp32
        case .double: .fp64
        case .int64: .int64
        case .int32: .int32
        case .bool: .bool
        case .string: .bytes
        case .int8: .int8
        case .uint8: .uint8
        case .int16: .int16
        case .uint16: .uint16
        case .uint32: .uint32
        case .uint64: .uint64
        case .float16: .fp16
        case .bfloat16: .bf16
        case .float8, .subByte: Self.codes.first { $0.0 == self }!.wire
        }
    }

    init?(dataType: DataType) {
        guard let entry = Self.codes.first(where: { $0.wire == dataType }) else { return nil }
        self = entry.0
    }

    var description: String { Self.codes.first { $0.0 == self }!.name }

    /// Bits per element of the types ONNX packs several to a byte.
    var packedBits: Int? {
        switch self {
        case .subByte(let bits, _): bits
        case .float8(.e2m1): 4
        default: nil
        }
    }

    /// The range of a sub-byte integer type.
    var subByteRange: ClosedRange<Int32>? {
        guard case .subByte(let bits, let signed) = self else { return nil }
        return signed ? -(1 << (bits - 1))...((1 << (bits - 1)) - 1) : 0...((1 << bits) - 1)
    }

    /// A wide value brought into this (narrow) type's range: integers wrap, floats round.
    func narrowed(_ storage: OnnxTensor.Storage, _ rounding: MiniFloat.Rounding = .exact) -> OnnxTensor.Storage {
        switch (self, storage) {
        case (.int8, .int32(let v)): .int32(v.map { Int32(Int8(truncatingIfNeeded: $0)) })
        case (.uint8, .int32(let v)): .int32(v.map { Int32(UInt8(truncatingIfNeeded: $0)) })
        case (.int16, .int32(let v)): .int32(v.map { Int32(Int16(truncatingIfNeeded: $0)) })
        case (.uint16, .int32(let v)): .int32(v.map { Int32(UInt16(truncatingIfNeeded: $0)) })
        case (.subByte(let bits, let signed), .int32(let v)):
            .int32(
                v.map { value in
                    let low = value & ((1 << bits) - 1)
                    return signed && low >= 1 << (bits - 1) ? low - (1 << bits) : low
                })
        case (.uint32, .int64(let v)): .int64(v.map { Int64(UInt32(truncatingIfNeeded: $0)) })
        case (.float16, .float(let v)): .float(v.map { Float(Float16($0)) })
        case (.bfloat16, .float(let v)): .float(v.map { bfloat16Value(bfloat16Bits($0)) })
        case (.float8(let format), .float(let v)): .float(v.map { format.decode(format.encode($0, rounding)) })
        default: storage
        }
    }

    static func name(ofONNX code: Int32) -> String {
        if let entry = Self.codes.first(where: { $0.onnx == code }) { return entry.name.uppercased() }
        let others = [0: "UNDEFINED", 14: "COMPLEX64", 15: "COMPLEX128", 27: "FLOAT6E2M3", 28: "FLOAT6E3M2"]
        return others[Int(code)] ?? "type \(code)"
    }
}

/// A tensor inside the runtime: a shape and typed row-major elements.
struct OnnxTensor: Sendable {
    enum Storage: Sendable {
        case float([Float])
        case double([Double])
        case int64([Int64])
        case int32([Int32])
        case bool([Bool])
        case string([String])
    }

    var shape: [Int]
    var storage: Storage
    /// The narrow type the wide storage holds (see ``ElementType/wide``); nil: the storage's own.
    var narrow: ElementType?

    init(shape: [Int], storage: Storage, narrow: ElementType? = nil) {
        self.shape = shape
        self.storage = storage
        self.narrow = narrow
    }

    /// The same elements, no longer tagged with a narrow type: what kernels compute on.
    var widened: OnnxTensor { OnnxTensor(shape: self.shape, storage: self.storage) }

    init(shape: [Int], floats: [Float]) { self.init(shape: shape, storage: .float(floats)) }
    init(shape: [Int], doubles: [Double]) { self.init(shape: shape, storage: .double(doubles)) }
    init(shape: [Int], int64s: [Int64]) { self.init(shape: shape, storage: .int64(int64s)) }

    var elementType: ElementType {
        if let narrow = self.narrow { return narrow }
        return self.storageType
    }

    /// The type of the storage itself (the wide type of a narrow tensor).
    var storageType: ElementType {
        switch self.storage {
        case .float: .float
        case .double: .double
        case .int64: .int64
        case .int32: .int32
        case .bool: .bool
        case .string: .string
        }
    }

    var count: Int { self.shape.reduce(1, *) }
    var rank: Int { self.shape.count }

    var floats: [Float]? { if case .float(let v) = self.storage { v } else { nil } }
    var int64s: [Int64]? { if case .int64(let v) = self.storage { v } else { nil } }

    /// Integer contents (INT64 or INT32) as Int, for shape-like inputs.
    func integers(_ what: @autoclosure () -> String) throws(OnnxError) -> [Int] {
        switch self.storage {
        case .int64(let v): return v.map { Int($0) }
        case .int32(let v): return v.map { Int($0) }
        default: throw OnnxError("\(what()) must be an integer tensor, got \(self.elementType)")
        }
    }

    /// Ones of the given type and shape, for trial runs: no division by zero, and a
    /// valid index into any dimension of size two or more.
    static func ones(_ type: ElementType, shape: [Int]) -> OnnxTensor {
        let n = shape.reduce(1, *)
        let narrow = type.isNarrow ? type : nil
        switch type.wide {
        case .float: return OnnxTensor(shape: shape, storage: .float(Array(repeating: 1, count: n)), narrow: narrow)
        case .double: return OnnxTensor(shape: shape, storage: .double(Array(repeating: 1, count: n)))
        case .int64: return OnnxTensor(shape: shape, storage: .int64(Array(repeating: 1, count: n)), narrow: narrow)
        case .bool: return OnnxTensor(shape: shape, storage: .bool(Array(repeating: true, count: n)))
        case .string: return OnnxTensor(shape: shape, storage: .string(Array(repeating: "1", count: n)))
        default: return OnnxTensor(shape: shape, storage: .int32(Array(repeating: 1, count: n)), narrow: narrow)
        }
    }
}

/// Why a model cannot be loaded or run; becomes an ``InferWireError``.
struct OnnxError: Error, CustomStringConvertible {
    var message: String
    init(_ message: String) { self.message = message }
    var description: String { self.message }
}

// MARK: - Conversion to and from wire tensors

extension OnnxTensor {
    /// Decodes a validated wire tensor (little-endian raw bytes).
    init(_ tensor: Tensor) throws(OnnxError) {
        let n = tensor.elementCount
        func load<T>(_: T.Type) -> [T] {
            [T](unsafeUninitializedCapacity: n) { buffer, count in
                tensor.data.withUnsafeBytes { raw in _ = raw.copyBytes(to: UnsafeMutableRawBufferPointer(buffer)) }
                count = n
            }
        }
        switch tensor.dataType {
        case .fp32: self.init(shape: tensor.shape, storage: .float(load(Float.self)))
        case .fp64: self.init(shape: tensor.shape, storage: .double(load(Double.self)))
        case .int64: self.init(shape: tensor.shape, storage: .int64(load(Int64.self)))
        case .int32: self.init(shape: tensor.shape, storage: .int32(load(Int32.self)))
        case .bool: self.init(shape: tensor.shape, storage: .bool(tensor.data.map { $0 != 0 }))
        case .bytes:
            var strings: [String] = []
            strings.reserveCapacity(n)
            let bytes = [UInt8](tensor.data)
            var offset = 0
            while offset + 4 <= bytes.count {
                let length =
                    Int(bytes[offset]) | Int(bytes[offset + 1]) << 8 | Int(bytes[offset + 2]) << 16 | Int(
                        bytes[offset + 3]) << 24
                offset += 4
                strings.append(String(decoding: bytes[offset..<(offset + length)], as: UTF8.self))
                offset += length
            }
            self.init(shape: tensor.shape, storage: .string(strings))
        case .int8: self.init(shape: tensor.shape, storage: .int32(load(Int8.self).map(Int32.init)), narrow: .int8)
        case .uint8: self.init(shape: tensor.shape, storage: .int32(load(UInt8.self).map(Int32.init)), narrow: .uint8)
        case .int16: self.init(shape: tensor.shape, storage: .int32(load(Int16.self).map(Int32.init)), narrow: .int16)
        case .uint16:
            self.init(shape: tensor.shape, storage: .int32(load(UInt16.self).map(Int32.init)), narrow: .uint16)
        case .uint32:
            self.init(shape: tensor.shape, storage: .int64(load(UInt32.self).map(Int64.init)), narrow: .uint32)
        case .fp16:
            self.init(
                shape: tensor.shape, storage: .float(load(UInt16.self).map { Float(Float16(bitPattern: $0)) }),
                narrow: .float16)
        case .bf16:
            self.init(shape: tensor.shape, storage: .float(load(UInt16.self).map(bfloat16Value)), narrow: .bfloat16)
        case .uint64:
            let values = load(UInt64.self)
            guard values.allSatisfy({ $0 <= UInt64(Int64.max) }) else {
                throw OnnxError("input '\(tensor.name)': UINT64 values of 2^63 and above are not supported")
            }
            self.init(shape: tensor.shape, storage: .int64(values.map { Int64($0) }), narrow: .uint64)
        default:
            guard let type = ElementType(dataType: tensor.dataType) else {
                throw OnnxError("input '\(tensor.name)': \(tensor.dataType.name) is not supported by the ONNX runtime")
            }
            let bytes = [UInt8](tensor.data)
            switch type {
            case .float8(let format):
                guard format.bits == 8 || bytes.allSatisfy({ $0 < 16 }) else {
                    throw OnnxError("input '\(tensor.name)': an FP4_E2M1 element uses more than the low 4 bits")
                }
                self.init(shape: tensor.shape, storage: .float(bytes.map(format.decode)), narrow: type)
            case .subByte(_, let signed):
                let values = bytes.map { signed ? Int32(Int8(bitPattern: $0)) : Int32($0) }
                guard let range = type.subByteRange, values.allSatisfy(range.contains) else {
                    throw OnnxError("input '\(tensor.name)': a \(tensor.dataType.name) element is out of range")
                }
                self.init(shape: tensor.shape, storage: .int32(values), narrow: type)
            default:
                throw OnnxError("input '\(tensor.name)': \(tensor.dataType.name) is not supported by the ONNX runtime")
            }
        }
    }

    /// Encodes as a wire tensor.
    func wire(name: String) -> Tensor {
        func bytes<T>(_ values: [T]) -> Data { values.withUnsafeBytes { Data($0) } }
        let data: Data
        switch (self.narrow, self.storage) {
        case (.int8?, .int32(let v)): data = bytes(v.map { Int8(truncatingIfNeeded: $0) })
        case (.uint8?, .int32(let v)): data = bytes(v.map { UInt8(truncatingIfNeeded: $0) })
        case (.int16?, .int32(let v)): data = bytes(v.map { Int16(truncatingIfNeeded: $0) })
        case (.uint16?, .int32(let v)): data = bytes(v.map { UInt16(truncatingIfNeeded: $0) })
        case (.uint32?, .int64(let v)): data = bytes(v.map { UInt32(truncatingIfNeeded: $0) })
        case (.float16?, .float(let v)): data = bytes(v.map { Float16($0).bitPattern })
        case (.bfloat16?, .float(let v)): data = bytes(v.map(bfloat16Bits))
        case (.float8(let format)?, .float(let v)): data = Data(v.map { format.encode($0, .exact) })
        case (.subByte?, .int32(let v)): data = Data(v.map { UInt8(truncatingIfNeeded: $0) })
        default:
            data = self.wideBytes
        }
        return Tensor(name: name, dataType: self.elementType.dataType, shape: self.shape, data: data)
    }

    /// The storage's own little-endian bytes.
    private var wideBytes: Data {
        func bytes<T>(_ values: [T]) -> Data { values.withUnsafeBytes { Data($0) } }
        let data: Data
        switch self.storage {
        case .float(let v): data = bytes(v)
        case .double(let v): data = bytes(v)
        case .int64(let v): data = bytes(v)
        case .int32(let v): data = bytes(v)
        case .bool(let v): data = Data(v.map { $0 ? 1 : 0 })
        case .string(let v):
            var out = Data()
            for s in v {
                let utf8 = Array(s.utf8)
                withUnsafeBytes(of: UInt32(utf8.count).littleEndian) { out.append(contentsOf: $0) }
                out.append(contentsOf: utf8)
            }
            data = out
        }
        return data
    }
}
