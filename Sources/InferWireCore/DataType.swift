public import InferWireProto

/// The element type of a tensor (the wire enum).
public typealias DataType = Inferwire_V1_DataType

extension Inferwire_V1_DataType {
    /// Bytes per element, or nil for BYTES (variable length) and unknown types.
    public var elementSize: Int? {
        switch self {
        case .bool, .uint8, .int8: 1
        case .int16, .fp16: 2
        case .int32, .fp32: 4
        case .int64, .fp64: 8
        case .bytes, .unspecified, .UNRECOGNIZED: nil
        }
    }

    /// The name used in configs, metadata and messages, e.g. `FP32`.
    public var name: String {
        switch self {
        case .unspecified: "UNSPECIFIED"
        case .bool: "BOOL"
        case .uint8: "UINT8"
        case .int8: "INT8"
        case .int16: "INT16"
        case .int32: "INT32"
        case .int64: "INT64"
        case .fp16: "FP16"
        case .fp32: "FP32"
        case .fp64: "FP64"
        case .bytes: "BYTES"
        case .UNRECOGNIZED(let n): "TYPE_\(n)"
        }
    }

    /// Parses a name as printed by ``name`` (case-insensitive).
    public init?(name: String) {
        let all: [Inferwire_V1_DataType] = [.bool, .uint8, .int8, .int16, .int32, .int64, .fp16, .fp32, .fp64, .bytes]
        guard let match = all.first(where: { $0.name == name.uppercased() }) else { return nil }
        self = match
    }
}
