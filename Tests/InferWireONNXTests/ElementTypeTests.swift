import Foundation
import InferWireCore
import InferWireProto
import Testing

@testable import InferWireONNX

/// The float8/float4 conversions against ONNX's reference (ml_dtypes, through
/// scripts/make-fixtures: Vectors/minifloat.json), and the wire and ONNX encodings of the
/// narrow types.
@Suite("Element types")
struct ElementTypeTests {
    struct Vectors: Decodable {
        var inputs: [Value]
        var codes: [UInt8]
        var saturated: [UInt8]
    }
    enum Value: Decodable {
        case number(Float)
        init(from decoder: any Swift.Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let d = try? c.decode(Double.self) {
                self = .number(Float(d))
            } else {
                let text = try c.decode(String.self)
                self = .number(text == "nan" ? .nan : text == "inf" ? .infinity : -.infinity)
            }
        }
        var float: Float { if case .number(let f) = self { f } else { .nan } }
    }

    static let formats: [(String, MiniFloat)] = [
        ("e4m3fn", .e4m3fn), ("e4m3fnuz", .e4m3fnuz), ("e5m2", .e5m2), ("e5m2fnuz", .e5m2fnuz), ("e2m1", .e2m1),
    ]

    @Test("float8 and float4 codes equal the reference's, saturating and not", arguments: Self.formats.map(\.0))
    func minifloatCodes(_ name: String) throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "Vectors/minifloat.json")
        let all = try JSONDecoder().decode([String: Vectors].self, from: Data(contentsOf: path))
        let vectors = try #require(all[name])
        let format = Self.formats.first { $0.0 == name }!.1
        #expect(vectors.inputs.count > 60)
        var mismatches: [String] = []
        for (index, input) in vectors.inputs.enumerated() {
            let x = input.float
            let plain = format.encode(x, .exact)
            let saturated = format.encode(x, .standard)
            // NaN has several codes; any of them is the same value.
            func same(_ a: UInt8, _ b: UInt8) -> Bool {
                a == b || (format.decode(a).isNaN && format.decode(b).isNaN)
            }
            if !same(plain, vectors.codes[index]) {
                mismatches.append("\(x): \(plain), reference \(vectors.codes[index])")
            }
            if !same(saturated, vectors.saturated[index]) {
                mismatches.append("\(x) saturated: \(saturated), reference \(vectors.saturated[index])")
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches.prefix(10))")
    }

    @Test("every ONNX element type maps to a wire type and back to itself")
    func wireTypes() {
        let types = (Int32(1)...26).compactMap { ElementType(onnx: $0) }
        #expect(types.count == 24)
        for type in types { #expect(ElementType(dataType: type.dataType) == type, "\(type)") }
        #expect(Set(types.map(\.dataType)).count == types.count)
    }

    @Test("every float8 code decodes and encodes back to itself")
    func roundTrip() {
        for (_, format) in Self.formats {
            for code in 0..<(1 << format.bits) {
                let value = format.decode(UInt8(code))
                guard !value.isNaN else { continue }
                #expect(format.decode(format.encode(value, .exact)) == value, "\(format) code \(code)")
            }
        }
    }

    @Test("E8M0 rounds up, down or to nearest, and saturates below NaN")
    func e8m0() {
        let format = MiniFloat.e8m0
        #expect(format.decode(127) == 1)
        #expect(format.decode(0xFF).isNaN)
        #expect(format.encode(3, .init(saturate: true, e8m0Mode: "up")) == 129)  // 4
        #expect(format.encode(3, .init(saturate: true, e8m0Mode: "down")) == 128)  // 2
        #expect(format.encode(3, .init(saturate: true, e8m0Mode: "nearest")) == 129)
        #expect(format.encode(2.5, .init(saturate: true, e8m0Mode: "nearest")) == 128)
        #expect(format.encode(Float.greatestFiniteMagnitude, .init(saturate: true, e8m0Mode: "up")) == 0xFE)
        #expect(format.encode(Float.greatestFiniteMagnitude, .init(saturate: false, e8m0Mode: "up")) == 0xFF)
    }

    @Test("sub-byte integers and float4 unpack from ONNX's packed raw data, low bits first")
    func packed() throws {
        var proto = Onnx_TensorProto()
        proto.dataType = 22  // INT4
        proto.dims = [3]
        proto.rawData = Data([0x8F, 0x07])  // -1, -8, 7
        let int4 = try OnnxTensor(proto: proto)
        #expect(int4.elementType == .int4)
        guard case .int32(let values) = int4.storage else {
            Issue.record("not int32 storage")
            return
        }
        #expect(values == [-1, -8, 7])

        proto.dataType = 25  // UINT2
        proto.dims = [5]
        proto.rawData = Data([0b1110_0100, 0b11])  // 0, 1, 2, 3, 3
        guard case .int32(let twos) = try OnnxTensor(proto: proto).storage else { return }
        #expect(twos == [0, 1, 2, 3, 3])

        proto.rawData = Data([0b1110_0100])  // one byte short of five elements
        #expect(throws: OnnxError.self) { try OnnxTensor(proto: proto) }
    }

    @Test("the wire carries one byte per element and refuses values out of range")
    func wire() throws {
        let int4 = Tensor(name: "x", dataType: .int4, shape: [3], data: Data([0xFF, 0xF8, 0x07]))
        let tensor = try OnnxTensor(int4)
        guard case .int32(let values) = tensor.storage else {
            Issue.record("not int32 storage")
            return
        }
        #expect(values == [-1, -8, 7])
        #expect(tensor.wire(name: "x").data == int4.data)

        #expect(throws: OnnxError.self) {
            try OnnxTensor(Tensor(name: "x", dataType: .int4, shape: [1], data: Data([0x08])))
        }
        #expect(throws: OnnxError.self) {
            try OnnxTensor(Tensor(name: "x", dataType: .fp4e2m1, shape: [1], data: Data([0x10])))
        }
        let big = withUnsafeBytes(of: UInt64(1) << 63) { Data($0) }
        #expect(throws: OnnxError.self) { try OnnxTensor(Tensor(name: "x", dataType: .uint64, shape: [1], data: big)) }

        let e5m2 = Tensor(name: "x", dataType: .fp8e5m2, shape: [3], data: Data([0x3C, 0x7C, 0xBC]))
        guard case .float(let floats) = try OnnxTensor(e5m2).storage else { return }
        #expect(floats == [1, .infinity, -1])
    }
}
