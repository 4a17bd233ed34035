package import InferWireProto

/// The element type of a tensor.
///
/// A struct rather than an enum so that a type added by a newer peer is carried and
/// reported (`TYPE_42`) instead of breaking every exhaustive `switch` written against this
/// release. Compare with the static members (`.fp32`, `.int64`, …).
public struct DataType: Hashable, Sendable, CustomStringConvertible {
    /// The wire number (the `DataType` enum of `tensor.proto`).
    public let rawValue: Int

    /// A data type by its wire number; numbers this release does not know are kept as they are.
    public init(rawValue: Int) { self.rawValue = rawValue }

    /// Not set: never valid in a tensor.
    public static let unspecified = DataType(rawValue: 0)
    public static let bool = DataType(rawValue: 1)
    public static let uint8 = DataType(rawValue: 2)
    public static let int8 = DataType(rawValue: 3)
    public static let int16 = DataType(rawValue: 4)
    public static let int32 = DataType(rawValue: 5)
    public static let int64 = DataType(rawValue: 6)
    public static let fp16 = DataType(rawValue: 7)
    public static let fp32 = DataType(rawValue: 8)
    public static let fp64 = DataType(rawValue: 9)
    /// Variable-length byte strings: each element a 4-byte little-endian length and its bytes.
    public static let bytes = DataType(rawValue: 10)
    public static let uint16 = DataType(rawValue: 11)
    public static let uint32 = DataType(rawValue: 12)
    public static let uint64 = DataType(rawValue: 13)
    /// bfloat16: the upper 16 bits of an IEEE 754 binary32.
    public static let bf16 = DataType(rawValue: 14)
    // The 8- and 4-bit floats and the sub-byte integers travel one byte per element: a
    // float's code in the low bits, an integer's value (INT4 and INT2 as a signed byte).
    /// float8 E4M3FN (no infinities; one NaN per sign).
    public static let fp8e4m3fn = DataType(rawValue: 15)
    /// float8 E4M3FNUZ (no infinities, no negative zero).
    public static let fp8e4m3fnuz = DataType(rawValue: 16)
    /// float8 E5M2 (with infinities).
    public static let fp8e5m2 = DataType(rawValue: 17)
    /// float8 E5M2FNUZ (no infinities, no negative zero).
    public static let fp8e5m2fnuz = DataType(rawValue: 18)
    /// float8 E8M0: an unsigned power of two (a scale).
    public static let fp8e8m0 = DataType(rawValue: 19)
    /// float4 E2M1, its code in the low 4 bits of each byte.
    public static let fp4e2m1 = DataType(rawValue: 20)
    /// −8…7, one signed byte per element.
    public static let int4 = DataType(rawValue: 21)
    /// 0…15, one byte per element.
    public static let uint4 = DataType(rawValue: 22)
    /// −2…1, one signed byte per element.
    public static let int2 = DataType(rawValue: 23)
    /// 0…3, one byte per element.
    public static let uint2 = DataType(rawValue: 24)

    /// Every type this release knows, in wire order.
    public static let known: [DataType] = (1...24).map { DataType(rawValue: $0) }

    private static let names = [
        "UNSPECIFIED", "BOOL", "UINT8", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES", "UINT16",
        "UINT32", "UINT64", "BF16", "FP8_E4M3FN", "FP8_E4M3FNUZ", "FP8_E5M2", "FP8_E5M2FNUZ", "FP8_E8M0", "FP4_E2M1",
        "INT4", "UINT4", "INT2", "UINT2",
    ]
    private static let sizes: [Int?] = [nil, 1, 1, 1, 2, 4, 8, 2, 4, 8, nil, 2, 4, 8, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]

    /// Whether this release knows the type (and can compute with it).
    public var isKnown: Bool { (1...24).contains(self.rawValue) }

    /// Bytes per element, or nil for BYTES (variable length) and unknown types.
    public var elementSize: Int? {
        (0...24).contains(self.rawValue) ? Self.sizes[self.rawValue] : nil
    }

    /// The name used in configs, metadata and messages, e.g. `FP32`; `TYPE_<n>` for a
    /// number this release does not know.
    public var name: String {
        (0...24).contains(self.rawValue) ? Self.names[self.rawValue] : "TYPE_\(self.rawValue)"
    }

    public var description: String { self.name }

    /// Parses a name as printed by ``name`` (case-insensitive); nil for unknown names.
    public init?(name: String) {
        let upper = name.uppercased()
        guard let match = Self.known.first(where: { $0.name == upper }) else { return nil }
        self = match
    }
}

extension DataType {
    /// The wire enum's value for this type.
    package var wire: Inferwire_V1_DataType {
        Inferwire_V1_DataType(rawValue: self.rawValue) ?? .UNRECOGNIZED(self.rawValue)
    }

    /// The type a wire enum carries, unknown numbers included.
    package init(_ wire: Inferwire_V1_DataType) { self.init(rawValue: wire.rawValue) }
}
