import Foundation
import InferWireCore
import InferWireProto

/// The element types the runtime computes with. The narrow ones (INT8, UINT8, INT16, UINT16,
/// UINT32, FLOAT16, BFLOAT16) are held in a wider storage (``wide``) and tagged: kernels
/// compute in the wide type, and their results are wrapped or rounded back to the narrow type
/// (``ExecutionPlan``), as onnxruntime computes FP16 in FP32 and rounds.
enum ElementType: Sendable, Hashable, CustomStringConvertible {
    case float, double, int64, int32, bool, string
    case int8, uint8, int16, uint16, uint32, float16, bfloat16

    /// From ONNX's `TensorProto.DataType` number.
    init?(onnx code: Int32) {
        switch code {
        case 1: self = .float
        case 11: self = .double
        case 7: self = .int64
        case 6: self = .int32
        case 9: self = .bool
        case 8: self = .string
        case 3: self = .int8
        case 2: self = .uint8
        case 5: self = .int16
        case 4: self = .uint16
        case 12: self = .uint32
        case 10: self = .float16
        case 16: self = .bfloat16
        default: return nil
        }
    }

    var onnxCode: Int32 {
        switch self {
        case .float: 1
        case .double: 11
        case .int64: 7
        case .int32: 6
        case .bool: 9
        case .string: 8
        case .int8: 3
        case .uint8: 2
        case .int16: 5
        case .uint16: 4
        case .uint32: 12
        case .float16: 10
        case .bfloat16: 16
        }
    }

    /// The storage a narrow type is computed in; the type itself for the others.
    var wide: ElementType {
        switch self {
        case .int8, .uint8, .int16, .uint16: .int32
        case .uint32: .int64
        case .float16, .bfloat16: .float
        default: self
        }
    }

    var isNarrow: Bool { self.wide != self }

    /// The wire type InferWire uses for it.
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
        case .float16: .fp16
        case .bfloat16: .bf16
        }
    }

    init?(dataType: DataType) {
        switch dataType {
        case .fp32: self = .float
        case .fp64: self = .double
        case .int64: self = .int64
        case .int32: self = .int32
        case .bool: self = .bool
        case .bytes: self = .string
        case .int8: self = .int8
        case .uint8: self = .uint8
        case .int16: self = .int16
        case .uint16: self = .uint16
        case .uint32: self = .uint32
        case .fp16: self = .float16
        case .bf16: self = .bfloat16
        default: return nil
        }
    }

    var description: String {
        switch self {
        case .float: "float"
        case .double: "double"
        case .int64: "int64"
        case .int32: "int32"
        case .bool: "bool"
        case .string: "string"
        case .int8: "int8"
        case .uint8: "uint8"
        case .int16: "int16"
        case .uint16: "uint16"
        case .uint32: "uint32"
        case .float16: "float16"
        case .bfloat16: "bfloat16"
        }
    }

    /// A wide value brought into this (narrow) type's range: integers wrap, floats round.
    func narrowed(_ storage: OnnxTensor.Storage) -> OnnxTensor.Storage {
        switch (self, storage) {
        case (.int8, .int32(let v)): .int32(v.map { Int32(Int8(truncatingIfNeeded: $0)) })
        case (.uint8, .int32(let v)): .int32(v.map { Int32(UInt8(truncatingIfNeeded: $0)) })
        case (.int16, .int32(let v)): .int32(v.map { Int32(Int16(truncatingIfNeeded: $0)) })
        case (.uint16, .int32(let v)): .int32(v.map { Int32(UInt16(truncatingIfNeeded: $0)) })
        case (.uint32, .int64(let v)): .int64(v.map { Int64(UInt32(truncatingIfNeeded: $0)) })
        case (.float16, .float(let v)): .float(v.map { Float(Float16($0)) })
        case (.bfloat16, .float(let v)): .float(v.map { bfloat16Value(bfloat16Bits($0)) })
        default: storage
        }
    }

    static func name(ofONNX code: Int32) -> String {
        let names = [
            0: "UNDEFINED", 1: "FLOAT", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64",
            8: "STRING", 9: "BOOL", 10: "FLOAT16", 11: "DOUBLE", 12: "UINT32", 13: "UINT64", 14: "COMPLEX64",
            15: "COMPLEX128", 16: "BFLOAT16",
        ]
        return names[Int(code)] ?? "type \(code)"
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
        switch type {
        case .float, .float16, .bfloat16:
            return OnnxTensor(shape: shape, storage: .float(Array(repeating: 1, count: n)), narrow: narrow)
        case .double: return OnnxTensor(shape: shape, storage: .double(Array(repeating: 1, count: n)))
        case .int64, .uint32:
            return OnnxTensor(shape: shape, storage: .int64(Array(repeating: 1, count: n)), narrow: narrow)
        case .int32, .int8, .uint8, .int16, .uint16:
            return OnnxTensor(shape: shape, storage: .int32(Array(repeating: 1, count: n)), narrow: narrow)
        case .bool: return OnnxTensor(shape: shape, storage: .bool(Array(repeating: true, count: n)))
        case .string: return OnnxTensor(shape: shape, storage: .string(Array(repeating: "1", count: n)))
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
        default:
            throw OnnxError("input '\(tensor.name)': \(tensor.dataType.name) is not supported by the ONNX runtime")
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
