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

    /// Every type this release knows, in wire order.
    public static let known: [DataType] = [
        .bool, .uint8, .int8, .int16, .int32, .int64, .fp16, .fp32, .fp64, .bytes, .uint16, .uint32, .uint64, .bf16,
    ]

    private static let names = [
        "UNSPECIFIED", "BOOL", "UINT8", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES", "UINT16",
        "UINT32", "UINT64", "BF16",
    ]
    private static let sizes: [Int?] = [nil, 1, 1, 1, 2, 4, 8, 2, 4, 8, nil, 2, 4, 8, 2]

    /// Whether this release knows the type (and can compute with it).
    public var isKnown: Bool { (1...14).contains(self.rawValue) }

    /// Bytes per element, or nil for BYTES (variable length) and unknown types.
    public var elementSize: Int? {
        (0...14).contains(self.rawValue) ? Self.sizes[self.rawValue] : nil
    }

    /// The name used in configs, metadata and messages, e.g. `FP32`; `TYPE_<n>` for a
    /// number this release does not know.
    public var name: String {
        (0...14).contains(self.rawValue) ? Self.names[self.rawValue] : "TYPE_\(self.rawValue)"
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
