public import Foundation
package import InferWireProto

/// A named n-dimensional array held as raw little-endian, row-major bytes: the
/// layout of `Tensor.raw_contents` on the wire, so requests and responses move
/// without element-by-element conversion.
public struct Tensor: Sendable, Equatable {
    public var name: String
    public var dataType: DataType
    /// Dimensions, outermost first; empty for a scalar.
    public var shape: [Int]
    /// Elements in row-major order, little-endian. BYTES: 4-byte LE length + bytes per element.
    public var data: Data

    public init(name: String, dataType: DataType, shape: [Int], data: Data) {
        self.name = name
        self.dataType = dataType
        self.shape = shape
        self.data = data
    }

    /// Number of elements the shape describes, or nil if it overflows `Int` or has a negative dim.
    /// A zero dimension makes the count 0, but the other dimensions must still multiply
    /// without overflow: kernels compute strides from them.
    public static func elementCount(of shape: [Int]) -> Int? {
        var count = 1
        var hasZero = false
        for dim in shape {
            guard dim >= 0 else { return nil }
            if dim == 0 {
                hasZero = true
                continue
            }
            let (product, overflow) = count.multipliedReportingOverflow(by: dim)
            if overflow { return nil }
            count = product
        }
        return hasZero ? 0 : count
    }

    /// Number of elements (the product of the shape).
    public var elementCount: Int { Self.elementCount(of: self.shape) ?? 0 }
}

// MARK: - Typed element access

/// A Swift type whose values are a tensor element type, stored little-endian.
public protocol TensorElement: Sendable {
    static var dataType: DataType { get }
}
extension Float: TensorElement { public static var dataType: DataType { .fp32 } }
extension Double: TensorElement { public static var dataType: DataType { .fp64 } }
extension Int32: TensorElement { public static var dataType: DataType { .int32 } }
extension Int64: TensorElement { public static var dataType: DataType { .int64 } }
extension Int16: TensorElement { public static var dataType: DataType { .int16 } }
extension Int8: TensorElement { public static var dataType: DataType { .int8 } }
extension UInt8: TensorElement { public static var dataType: DataType { .uint8 } }
extension UInt16: TensorElement { public static var dataType: DataType { .uint16 } }
extension UInt32: TensorElement { public static var dataType: DataType { .uint32 } }
extension UInt64: TensorElement { public static var dataType: DataType { .uint64 } }
extension Bool: TensorElement { public static var dataType: DataType { .bool } }

extension Tensor {
    /// A tensor of `values` with the given shape (row-major).
    public init<T: TensorElement>(name: String, values: [T], shape: [Int]) {
        precondition(
            Self.elementCount(of: shape) == values.count, "shape \(shape) does not hold \(values.count) values")
        let data = values.withUnsafeBytes { Data($0) }
        self.init(name: name, dataType: T.dataType, shape: shape, data: data)
    }

    /// The elements as `T`, or nil when `T` is not the tensor's element type.
    public func values<T: TensorElement>(as type: T.Type = T.self) -> [T]? {
        guard T.dataType == self.dataType, self.data.count == self.elementCount * MemoryLayout<T>.stride else {
            return nil
        }
        return [T](unsafeUninitializedCapacity: self.elementCount) { buffer, count in
            self.data.withUnsafeBytes { raw in
                _ = raw.copyBytes(to: UnsafeMutableRawBufferPointer(buffer))
            }
            count = self.elementCount
        }
    }
}

// MARK: - Wire conversion

extension Tensor {
    /// Builds a tensor from a request's `Tensor` message, checking that its content
    /// matches its shape and type before any buffer is allocated for typed contents.
    package init(wire: Inferwire_V1_Tensor) throws(InferWireError) {
        let name = wire.name
        func invalid(_ text: String) -> InferWireError {
            InferWireError(code: .invalidArgument, message: "input '\(name)': \(text)")
        }
        guard wire.shape.allSatisfy({ $0 >= 0 }) else {
            throw invalid("shape \(wire.shape) has a negative dimension")
        }
        let shape = wire.shape.map { Int($0) }
        guard let count = Self.elementCount(of: shape) else { throw invalid("shape \(wire.shape) overflows") }
        let dataType = DataType(wire.datatype)
        if dataType != .unspecified, !dataType.isKnown { throw invalid("unknown datatype \(dataType.rawValue)") }
        if dataType == .unspecified { throw invalid("datatype is not set") }

        if wire.hasContents {
            guard wire.rawContents.isEmpty else { throw invalid("both raw_contents and contents are set") }
            let data = try Self.pack(wire.contents, as: dataType, count: count, invalid: invalid)
            self.init(name: name, dataType: dataType, shape: shape, data: data)
            return
        }
        if let size = dataType.elementSize {
            let (expected, overflow) = count.multipliedReportingOverflow(by: size)
            guard !overflow, wire.rawContents.count == expected else {
                throw invalid(
                    "raw_contents has \(wire.rawContents.count) bytes; shape \(wire.shape) of \(dataType.name) needs \(overflow ? "too many" : String(expected))"
                )
            }
            if dataType == .bool, wire.rawContents.contains(where: { $0 > 1 }) {
                throw invalid("BOOL elements must be the bytes 0 or 1")
            }
        } else {
            try Self.checkBytesElements(wire.rawContents, count: count, invalid: invalid)
        }
        self.init(name: name, dataType: dataType, shape: shape, data: wire.rawContents)
    }

    /// The `Tensor` message for a response (always `raw_contents`).
    package var wire: Inferwire_V1_Tensor {
        var message = Inferwire_V1_Tensor()
        message.name = self.name
        message.datatype = self.dataType.wire
        message.shape = self.shape.map { Int64($0) }
        message.rawContents = self.data
        return message
    }

    private static func checkBytesElements(
        _ data: Data, count: Int, invalid: (String) -> InferWireError
    ) throws(InferWireError) {
        var offset = 0
        var seen = 0
        let total = data.count
        let ok: Bool = data.withUnsafeBytes { raw in
            while offset < total {
                guard total - offset >= 4 else { return false }
                let length = Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
                offset += 4
                guard total - offset >= length else { return false }
                offset += length
                seen += 1
            }
            return true
        }
        guard ok, seen == count else {
            throw invalid(
                "BYTES raw_contents holds \(ok ? String(seen) : "malformed") elements; the shape needs \(count)")
        }
    }

    private static func pack(
        _ contents: Inferwire_V1_TensorContents, as dataType: DataType, count: Int,
        invalid: (String) -> InferWireError
    ) throws(InferWireError) -> Data {
        func check(_ n: Int, _ field: String) throws(InferWireError) {
            guard n == count else { throw invalid("contents.\(field) has \(n) values; the shape needs \(count)") }
        }
        switch dataType {
        case .bool:
            try check(contents.boolContents.count, "bool_contents")
            return Data(contents.boolContents.map { $0 ? 1 : 0 })
        case .uint8:
            try check(contents.uintContents.count, "uint_contents")
            guard contents.uintContents.allSatisfy({ $0 <= UInt8.max }) else {
                throw invalid("a UINT8 value is out of range")
            }
            return Data(contents.uintContents.map { UInt8($0) })
        case .int8:
            try check(contents.intContents.count, "int_contents")
            guard contents.intContents.allSatisfy({ Int8(exactly: $0) != nil }) else {
                throw invalid("an INT8 value is out of range")
            }
            return contents.intContents.map { Int8($0) }.withUnsafeBytes { Data($0) }
        case .int16:
            try check(contents.intContents.count, "int_contents")
            guard contents.intContents.allSatisfy({ Int16(exactly: $0) != nil }) else {
                throw invalid("an INT16 value is out of range")
            }
            return contents.intContents.map { Int16($0).littleEndian }.withUnsafeBytes { Data($0) }
        case .int32:
            try check(contents.intContents.count, "int_contents")
            return contents.intContents.map { $0.littleEndian }.withUnsafeBytes { Data($0) }
        case .int64:
            try check(contents.int64Contents.count, "int64_contents")
            return contents.int64Contents.map { $0.littleEndian }.withUnsafeBytes { Data($0) }
        case .fp16:
            try check(contents.fp32Contents.count, "fp32_contents")
            #if arch(x86_64) || arch(arm64)
                return contents.fp32Contents.map { Float16($0).bitPattern.littleEndian }.withUnsafeBytes { Data($0) }
            #else
                throw invalid("FP16 typed contents are not supported on this platform")
            #endif
        case .fp32:
            try check(contents.fp32Contents.count, "fp32_contents")
            return contents.fp32Contents.map { $0.bitPattern.littleEndian }.withUnsafeBytes { Data($0) }
        case .fp64:
            try check(contents.fp64Contents.count, "fp64_contents")
            return contents.fp64Contents.map { $0.bitPattern.littleEndian }.withUnsafeBytes { Data($0) }
        case .uint16:
            try check(contents.uintContents.count, "uint_contents")
            guard contents.uintContents.allSatisfy({ $0 <= UInt16.max }) else {
                throw invalid("a UINT16 value is out of range")
            }
            return contents.uintContents.map { UInt16($0).littleEndian }.withUnsafeBytes { Data($0) }
        case .uint32:
            try check(contents.uintContents.count, "uint_contents")
            return contents.uintContents.map { $0.littleEndian }.withUnsafeBytes { Data($0) }
        case .uint64, .fp8e4m3fn, .fp8e4m3fnuz, .fp8e5m2, .fp8e5m2fnuz, .fp8e8m0, .fp4e2m1, .int4, .uint4, .int2,
            .uint2:
            throw invalid("\(dataType.name) tensors are sent in raw_contents")
        case .bf16:
            try check(contents.fp32Contents.count, "fp32_contents")
            return contents.fp32Contents.map { bfloat16Bits($0).littleEndian }.withUnsafeBytes { Data($0) }
        case .bytes:
            try check(contents.bytesContents.count, "bytes_contents")
            var data = Data()
            for element in contents.bytesContents {
                guard element.count <= UInt32.max else { throw invalid("a BYTES element is too long") }
                withUnsafeBytes(of: UInt32(element.count).littleEndian) { data.append(contentsOf: $0) }
                data.append(element)
            }
            return data
        default:
            throw invalid("datatype is not set")
        }
    }
}

/// A float rounded to bfloat16 (to nearest, ties to even), as its 16 bits.
package func bfloat16Bits(_ value: Float) -> UInt16 {
    if value.isNaN { return 0x7FC0 }
    let bits = value.bitPattern
    let rounding: UInt32 = 0x7FFF + ((bits >> 16) & 1)
    return UInt16(truncatingIfNeeded: (bits &+ rounding) >> 16)
}

/// The float a bfloat16's 16 bits hold.
package func bfloat16Value(_ bits: UInt16) -> Float {
    Float(bitPattern: UInt32(bits) << 16)
}
