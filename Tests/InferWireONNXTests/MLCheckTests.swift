import Foundation
import InferWireCore
import Testing

/// A model (base64 ONNX) with inputs and the outputs onnxruntime computed for them
/// (MLCheckData.swift, written by scripts/make-ml-checks.py).
struct MLCheck: Sendable, CustomStringConvertible {
    enum Value: Sendable {
        case floats([Float], shape: [Int])
        case int64s([Int64], shape: [Int])
        case strings([String], shape: [Int])

        func tensor(_ name: String) -> Tensor {
            switch self {
            case .floats(let v, let shape): Tensor(name: name, values: v, shape: shape)
            case .int64s(let v, let shape): Tensor(name: name, values: v, shape: shape)
            case .strings(let v, let shape):
                InferWireONNXTests.tensor(
                    name, Fixture.Value(dtype: "BYTES", shape: shape, data: v.map { .string($0) }))
            }
        }
    }

    struct Case: Sendable {
        var inputs: [String: Value]
        var outputs: [String: Value]
    }

    var name: String
    var model: String
    var cases: [Case]
    var description: String { self.name }
}

@Suite("ai.onnx.ml models from scikit-learn and hand-built SVM nodes against onnxruntime")
struct MLCheckTests {
    /// Floats within 1e-4 of onnxruntime's, relative to the larger of their size and 1e-2
    /// (probabilities near zero are compared absolutely); labels and strings exactly.
    @Test("outputs equal onnxruntime's", arguments: mlChecks)
    func matchesOnnxRuntime(_ check: MLCheck) throws {
        let data = try #require(Data(base64Encoded: check.model, options: .ignoreUnknownCharacters))
        let model = try load(data)
        for (index, testCase) in check.cases.enumerated() {
            let inputs = model.signature.inputs.map { testCase.inputs[$0.name]!.tensor($0.name) }
            let outputs = try model.execute(inputs)
            for (spec, output) in zip(model.signature.outputs, outputs) {
                let expected = try #require(testCase.outputs[spec.name], "case \(index): no expected '\(spec.name)'")
                switch expected {
                case .floats(let want, let shape):
                    #expect(output.shape == shape, "case \(index) '\(spec.name)'")
                    let got = try #require(output.values(as: Float.self), "case \(index) '\(spec.name)' is not FP32")
                    #expect(got.count == want.count)
                    for (i, (a, b)) in zip(got, want).enumerated() {
                        #expect(
                            abs(a - b) <= 1e-4 * max(abs(b), 1e-2),
                            "case \(index) '\(spec.name)' element \(i): \(a), onnxruntime \(b)")
                    }
                case .int64s(let want, let shape):
                    #expect(output.shape == shape, "case \(index) '\(spec.name)'")
                    #expect(output.values(as: Int64.self) == want, "case \(index) '\(spec.name)'")
                case .strings(let want, let shape):
                    #expect(output.shape == shape, "case \(index) '\(spec.name)'")
                    #expect(output.dataType == .bytes && strings(output) == want, "case \(index) '\(spec.name)'")
                }
            }
        }
    }
}
