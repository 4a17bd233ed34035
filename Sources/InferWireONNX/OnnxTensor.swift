import Foundation
import InferWireCore
import InferWireProto

/// The element types the runtime computes with.
enum ElementType: Sendable, Hashable, CustomStringConvertible {
    case float, double, int64, int32, bool, string

    /// From ONNX's `TensorProto.DataType` number.
    init?(onnx code: Int32) {
        switch code {
        case 1: self = .float
        case 11: self = .double
        case 7: self = .int64
        case 6: self = .int32
        case 9: self = .bool
        case 8: self = .string
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
        }
    }

    /// The wire type InferWire uses for it.
    var dataType: DataType {
        switch self {
        case .float: .fp32
        case .double: .fp64
        case .int64: .int64
        case .int32: .int32
        case .bool: .bool
        case .string: .bytes
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

    init(shape: [Int], storage: Storage) {
        self.shape = shape
        self.storage = storage
    }

    init(shape: [Int], floats: [Float]) { self.init(shape: shape, storage: .float(floats)) }
    init(shape: [Int], doubles: [Double]) { self.init(shape: shape, storage: .double(doubles)) }
    init(shape: [Int], int64s: [Int64]) { self.init(shape: shape, storage: .int64(int64s)) }

    var elementType: ElementType {
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
        switch type {
        case .float: return OnnxTensor(shape: shape, storage: .float(Array(repeating: 1, count: n)))
        case .double: return OnnxTensor(shape: shape, storage: .double(Array(repeating: 1, count: n)))
        case .int64: return OnnxTensor(shape: shape, storage: .int64(Array(repeating: 1, count: n)))
        case .int32: return OnnxTensor(shape: shape, storage: .int32(Array(repeating: 1, count: n)))
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
        default:
            throw OnnxError("input '\(tensor.name)': \(tensor.dataType.name) is not supported by the ONNX runtime")
        }
    }

    /// Encodes as a wire tensor.
    func wire(name: String) -> Tensor {
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
        return Tensor(name: name, dataType: self.elementType.dataType, shape: self.shape, data: data)
    }
}
