import Foundation
import InferWireClient
import InferWireCore
import InferWireEngine
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
