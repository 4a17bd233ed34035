import Foundation
import InferWireClient
import InferWireCore
import InferWireEngine
import InferWireONNX
import InferWireProto
import Testing

@Suite("Serving ONNX models", .timeLimit(.minutes(1)))
struct OnnxServingTests {
    /// The fraud example's version 1 is the scaler_logistic_pipeline fixture: same file.
    func fixtureCase(_ name: String, _ index: Int) throws -> (
        x: [Float], shape: [Int], labels: [Int64], probabilities: [Float]
    ) {
        let url = URL(fileURLWithPath: packageRoot + "/Tests/InferWireONNXTests/Fixtures/\(name)/cases.json")
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        let testCase = (json["cases"] as! [[String: Any]])[index]
        let x = (testCase["inputs"] as! [String: Any])["X"] as! [String: Any]
        let outputs = testCase["outputs"] as! [String: Any]
        return (
            (x["data"] as! [Double]).map(Float.init), x["shape"] as! [Int],
            ((outputs["label"] as! [String: Any])["data"] as! [Double]).map { Int64($0) },
            ((outputs["probabilities"] as! [String: Any])["data"] as! [Double]).map(Float.init)
        )
    }

    @Test("the fraud example answers with onnxruntime's labels and probabilities")
    func fraudMatchesOnnxRuntime() async throws {
        let expected = try self.fixtureCase("scaler_logistic_pipeline", 1)
        try await withServer { port in
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            let metadata = try await client.modelMetadata("fraud")
            #expect(metadata.versions == [1, 2])
            #expect(metadata.inputs.map(\.name) == ["X"])
            #expect(metadata.inputs[0].shape == [-1, 8])
            #expect(metadata.outputs.map(\.name) == ["label", "probabilities"])
            #expect(metadata.maxBatchSize == 64)

            let result = try await client.infer(
                model: "fraud", version: 1, inputs: [Tensor(name: "X", values: expected.x, shape: expected.shape)])
            #expect(result.modelVersion == 1)
            #expect(result["label"]?.values(as: Int64.self) == expected.labels)
            let probabilities = try #require(result["probabilities"]?.values(as: Float.self))
            #expect(zip(probabilities, expected.probabilities).allSatisfy { abs($0 - $1) <= 1e-5 * (1 + abs($1)) })

            // No version named: the stable (highest) one answers.
            #expect(
                try await client.infer(
                    model: "fraud", inputs: [Tensor(name: "X", values: expected.x, shape: expected.shape)]
                ).modelVersion == 2)
            await client.close()
        }
    }

    @Test("a tree ensemble without a config file is served from its graph")
    func forestAutoConfig() async throws {
        try await withServer { port in
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            let metadata = try await client.modelMetadata("forest")
            #expect(metadata.platform == "onnx")
            #expect(metadata.inputs[0].shape == [-1, 8])
            let rows = (0..<3 * 8).map { Float($0 % 5) - 2 }
            let result = try await client.infer(
                model: "forest", inputs: [Tensor(name: "X", values: rows, shape: [3, 8])])
            #expect(result["label"]?.shape == [3])
            #expect(result["probabilities"]?.shape == [3, 2])
            await client.close()
        }
    }

    @Test("ONNX inputs of the wrong type or shape are INVALID_ARGUMENT")
    func badInputs() async throws {
        try await withServer { port in
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            await #expect {
                try await client.infer(
                    model: "fraud",
                    inputs: [Tensor(name: "X", values: [Double](repeating: 0, count: 8), shape: [1, 8])])
            } throws: {
                ($0 as? InferWireError)?.code == .invalidArgument
            }
            await #expect {
                try await client.infer(
                    model: "fraud", inputs: [Tensor(name: "X", values: [Float](repeating: 0, count: 7), shape: [1, 7])])
            } throws: {
                let error = $0 as? InferWireError
                return error?.code == .invalidArgument && error?.message.contains("[-1, 8]") == true
            }
            #expect(try await client.serverLive())
            await client.close()
        }
    }
}

@Suite("Batching over TCP", .timeLimit(.minutes(1)))
struct BatchingOverTCPTests {
    @Test("concurrent calls to the batched mlp example merge, answer each caller, and show in ModelStatistics")
    func mlpBatches() async throws {
        try await withServer { port in
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            let rows = (0..<40).map { i in (0..<32).map { Float(($0 * 7 + i) % 11) / 11 } }
            // Each row alone first: the reference answers.
            var alone: [[Float]] = []
            for row in rows {
                alone.append(
                    try await client.infer(model: "mlp", inputs: [Tensor(name: "X", values: row, shape: [1, 32])])[
                        "probabilities"]!.values(as: Float.self)!)
            }
            let together = try await withThrowingTaskGroup(of: (Int, [Float]).self) { group in
                for (i, row) in rows.enumerated() {
                    group.addTask {
                        let result = try await client.infer(
                            model: "mlp", inputs: [Tensor(name: "X", values: row, shape: [1, 32])])
                        return (i, result["probabilities"]!.values(as: Float.self)!)
                    }
                }
                var answers = [[Float]](repeating: [], count: rows.count)
                for try await (i, p) in group { answers[i] = p }
                return answers
            }
            for (a, b) in zip(alone, together) {
                #expect(zip(a, b).allSatisfy { abs($0 - $1) <= 1e-5 * (1 + abs($1)) })
            }
            let stats = try await client.modelStatistics("mlp")
            #expect(stats.count == 1)
            #expect(stats.first?.requestCount == 80)
            #expect((stats.first?.executionCount ?? .max) <= 80)
            #expect((stats.first?.computeTime ?? .zero) > .zero)
            await #expect { try await client.modelStatistics("nope") } throws: {
                ($0 as? InferWireError)?.code == .notFound
            }
            await client.close()
        }
    }
}

/// The types DataType 15–24 added (float8, float4, the sub-byte integers) as a client meets
/// them: a byte per element over a real socket, both ways, and refused when out of range.
@Suite("Serving the 8-, 4- and 2-bit types", .timeLimit(.minutes(1)))
struct NarrowWireTypeTests {
    /// X (FP32) → QuantizeLinear to INT4 (Q) → Cast to FP8 E4M3FN (E); W (INT4) → Cast to FP32 (F).
    static func model() throws -> LoadedModel {
        func value(_ name: String, _ type: Int32) -> Onnx_ValueInfoProto {
            var value = Onnx_ValueInfoProto()
            value.name = name
            var tensor = Onnx_TypeProto.Tensor()
            tensor.elemType = type
            var batch = Onnx_TensorShapeProto.Dimension()
            batch.dimParam = "N"
            var width = Onnx_TensorShapeProto.Dimension()
            width.dimValue = 4
            tensor.shape.dim = [batch, width]
            value.type.tensorType = tensor
            return value
        }
        func node(_ op: String, _ inputs: [String], _ output: String, to: Int64? = nil) -> Onnx_NodeProto {
            var node = Onnx_NodeProto()
            node.opType = op
            node.input = inputs
            node.output = [output]
            if let to {
                var attribute = Onnx_AttributeProto()
                attribute.name = "to"
                attribute.type = .int
                attribute.i = to
                node.attribute = [attribute]
            }
            return node
        }
        var scale = Onnx_TensorProto()
        scale.name = "scale"
        scale.dataType = 1
        scale.floatData = [0.5]
        var zero = Onnx_TensorProto()
        zero.name = "zero"
        zero.dataType = 22  // INT4
        zero.int32Data = [0]
        var model = Onnx_ModelProto()
        model.irVersion = 10
        var opset = Onnx_OperatorSetIdProto()
        opset.version = 21
        model.opsetImport = [opset]
        model.graph.node = [
            node("QuantizeLinear", ["X", "scale", "zero"], "Q"), node("Cast", ["Q"], "E", to: 17),
            node("Cast", ["W"], "F", to: 1),
        ]
        model.graph.initializer = [scale, zero]
        model.graph.input = [value("X", 1), value("W", 22)]
        model.graph.output = [value("Q", 22), value("E", 17), value("F", 1)]
        var config = Inferwire_V1_ModelConfig()
        config.platform = "onnx"
        return LoadedModel(
            name: "narrow", version: 1, config: config,
            model: try OnnxModelLoader.model(from: try model.serializedData(), name: "narrow"))
    }

    @Test("INT4 and FP8 go over the wire a byte each, as PROTOCOL.md says, and bad bytes are INVALID_ARGUMENT")
    func roundTrip() async throws {
        try await withServer(extraModels: [try Self.model()]) { port in
            let client = try await InferWireClient.connect(host: "127.0.0.1", port: port)
            let metadata = try await client.modelMetadata("narrow")
            #expect(metadata.inputs.map(\.dataType) == [.fp32, .int4])
            #expect(metadata.outputs.map(\.dataType) == [.int4, .fp8e4m3fn, .fp32])

            let x = Tensor(name: "X", values: [Float(1), -3.2, 10, 0.26], shape: [1, 4])
            let w = Tensor(name: "W", dataType: .int4, shape: [1, 4], data: Data([0xF8, 0x07, 0x00, 0xFF]))
            let result = try await client.infer(model: "narrow", inputs: [x, w])
            // 1/0.5 = 2, -6.4 rounds to -6, 20 saturates at 7, 0.52 rounds to 1.
            #expect(result["Q"]?.dataType == .int4)
            #expect(result["Q"].map { [UInt8]($0.data) } == [0x02, 0xFA, 0x07, 0x01])
            // 2, -6, 7, 1 in E4M3FN: exponent bias 7, three mantissa bits.
            #expect(result["E"]?.dataType == .fp8e4m3fn)
            #expect(result["E"].map { [UInt8]($0.data) } == [0x40, 0xCC, 0x4E, 0x38])
            #expect(result["F"]?.values(as: Float.self) == [-8, 7, 0, -1])

            let outOfRange = Tensor(name: "W", dataType: .int4, shape: [1, 4], data: Data([0x08, 0, 0, 0]))
            do {
                _ = try await client.infer(model: "narrow", inputs: [x, outOfRange])
                Issue.record("an INT4 byte of 8 was accepted")
            } catch let error as InferWireError {
                #expect(error.code == .invalidArgument)
                #expect(error.message.contains("out of range"), "\(error.message)")
            }
            // The connection and the model still serve.
            #expect(
                try await client.infer(model: "narrow", inputs: [x, w])["F"]?.values(as: Float.self) == [-8, 7, 0, -1])
            await client.close()
        }
    }
}
