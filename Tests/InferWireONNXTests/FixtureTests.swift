import Foundation
import InferWireCore
import InferWireEngine
import InferWireONNX
import InferWireProto
import Testing

let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures").path

/// A model and the inputs and outputs onnxruntime produced for it (scripts/make-fixtures).
struct Fixture: Sendable, CustomStringConvertible {
    struct Value: Decodable, Sendable {
        var dtype: String
        var shape: [Int]
        var data: [JSONScalar]
    }
    enum JSONScalar: Decodable, Sendable {
        case number(Double)
        case string(String)
        case bool(Bool)
        case null
        init(from decoder: any Swift.Decoder) throws {
            let c = try decoder.singleValueContainer()
            if c.decodeNil() {
                self = .null
            } else if let b = try? c.decode(Bool.self) {
                self = .bool(b)
            } else if let d = try? c.decode(Double.self) {
                self = .number(d)
            } else {
                self = .string(try c.decode(String.self))
            }
        }
        var double: Double {
            switch self {
            case .number(let d): d
            case .bool(let b): b ? 1 : 0
            case .null: .nan
            case .string(let s): Double(s) ?? .nan
            }
        }
    }
    struct Case: Decodable, Sendable {
        var inputs: [String: Value]
        var outputs: [String: Value]
    }
    struct File: Decodable, Sendable {
        var tolerance: Double
        var cases: [Case]
    }

    var name: String
    var description: String { self.name }

    func load() throws -> File {
        try JSONDecoder().decode(
            File.self, from: Data(contentsOf: URL(fileURLWithPath: "\(fixtures)/\(self.name)/cases.json")))
    }

    func model() throws -> any InferenceModel {
        var config = Inferwire_V1_ModelConfig()
        config.name = self.name
        config.platform = "onnx"
        return try OnnxModelLoader().load(config: config, versionDirectory: "\(fixtures)/\(self.name)")
    }

    static var all: [Fixture] {
        ((try? FileManager.default.contentsOfDirectory(atPath: fixtures)) ?? []).sorted().map { Fixture(name: $0) }
    }
}

func tensor(_ name: String, _ value: Fixture.Value) -> Tensor {
    switch value.dtype {
    case "FP32": return Tensor(name: name, values: value.data.map { Float($0.double) }, shape: value.shape)
    case "FP64": return Tensor(name: name, values: value.data.map(\.double), shape: value.shape)
    case "INT64": return Tensor(name: name, values: value.data.map { Int64($0.double) }, shape: value.shape)
    case "INT32": return Tensor(name: name, values: value.data.map { Int32($0.double) }, shape: value.shape)
    case "BOOL": return Tensor(name: name, values: value.data.map { $0.double != 0 }, shape: value.shape)
    case "INT8": return Tensor(name: name, values: value.data.map { Int8($0.double) }, shape: value.shape)
    case "UINT8": return Tensor(name: name, values: value.data.map { UInt8($0.double) }, shape: value.shape)
    default:
        var data = Data()
        for case .string(let s) in value.data {
            withUnsafeBytes(of: UInt32(s.utf8.count).littleEndian) { data.append(contentsOf: $0) }
            data.append(contentsOf: Array(s.utf8))
        }
        return Tensor(name: name, dataType: .bytes, shape: value.shape, data: data)
    }
}

func strings(_ tensor: Tensor) -> [String] {
    var result: [String] = []
    let bytes = [UInt8](tensor.data)
    var offset = 0
    while offset + 4 <= bytes.count {
        let n =
            Int(bytes[offset]) | Int(bytes[offset + 1]) << 8 | Int(bytes[offset + 2]) << 16 | Int(bytes[offset + 3])
            << 24
        result.append(String(decoding: bytes[(offset + 4)..<(offset + 4 + n)], as: UTF8.self))
        offset += 4 + n
    }
    return result
}

@Suite("ONNX models against onnxruntime")
struct FixtureTests {
    @Test("every fixture model loads", arguments: Fixture.all)
    func loads(_ fixture: Fixture) throws {
        _ = try fixture.model()
    }

    /// Floats must satisfy |ours − onnxruntime| ≤ tolerance × (1 + |onnxruntime|), the
    /// tolerance stored with each fixture (1e-5 for most; 1e-4 where BLAS or a long
    /// float accumulation may sum in another order); integer and string outputs match exactly.
    @Test("outputs equal onnxruntime's for batch 1 and larger batches", arguments: Fixture.all)
    func matchesOnnxRuntime(_ fixture: Fixture) throws {
        let model = try fixture.model()
        let file = try fixture.load()
        for (index, testCase) in file.cases.enumerated() {
            let inputs = model.signature.inputs.map { tensor($0.name, testCase.inputs[$0.name]!) }
            let outputs = try model.execute(inputs)
            for (spec, output) in zip(model.signature.outputs, outputs) {
                let expected = try #require(testCase.outputs[spec.name], "case \(index): no expected '\(spec.name)'")
                // The metadata's shape describes the answer: same rank, fixed dimensions equal
                // (an empty shape is also what a model that declares none reports).
                #expect(
                    spec.shape.isEmpty
                        || spec.shape.count == output.shape.count
                            && zip(spec.shape, output.shape).allSatisfy { $0 == -1 || $0 == $1 },
                    "case \(index) '\(spec.name)': metadata shape \(spec.shape), answered \(output.shape)")
                #expect(
                    output.shape == expected.shape,
                    "case \(index) '\(spec.name)': shape \(output.shape) vs \(expected.shape)")
                switch output.dataType {
                case .fp32, .fp64:
                    let ours =
                        output.dataType == .fp32
                        ? output.values(as: Float.self)!.map(Double.init) : output.values(as: Double.self)!
                    let theirs = expected.data.map(\.double)
                    #expect(ours.count == theirs.count)
                    let worst = zip(ours, theirs).map { abs($0 - $1) / (1 + abs($1)) }.max() ?? 0
                    #expect(
                        worst <= file.tolerance,
                        "case \(index) '\(spec.name)': worst relative difference \(worst); ours \(ours.prefix(12)), onnxruntime's \(theirs.prefix(12))"
                    )
                case .int64:
                    #expect(
                        output.values(as: Int64.self)! == expected.data.map { Int64($0.double) },
                        "case \(index) '\(spec.name)'")
                case .int32:
                    #expect(
                        output.values(as: Int32.self)! == expected.data.map { Int32($0.double) },
                        "case \(index) '\(spec.name)'")
                case .int8, .uint8:
                    let ours =
                        output.dataType == .int8
                        ? output.values(as: Int8.self)!.map(Double.init)
                        : output.values(as: UInt8.self)!.map(Double.init)
                    #expect(ours == expected.data.map(\.double), "case \(index) '\(spec.name)'")
                case .bytes:
                    #expect(
                        strings(output) == expected.data.map { if case .string(let s) = $0 { s } else { "" } },
                        "case \(index) '\(spec.name)'")
                default:
                    Issue.record("unchecked output type \(output.dataType)")
                }
            }
        }
    }
}
