import Foundation
import InferWireCore
import InferWireEngine
import InferWireProto
import Logging
import Testing

let quiet = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

/// The repository root, found from this file's path.
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

@Suite("Tensors from the wire")
struct TensorTests {
    func wire(_ type: DataType, _ shape: [Int64], raw: [UInt8]) -> Inferwire_V1_Tensor {
        var tensor = Inferwire_V1_Tensor()
        tensor.name = "x"
        tensor.datatype = type.wire
        tensor.shape = shape
        tensor.rawContents = Data(raw)
        return tensor
    }

    @Test("raw contents whose size matches shape × element size are accepted")
    func rawOK() throws {
        let tensor = try Tensor(wire: self.wire(.fp32, [2, 2], raw: [UInt8](repeating: 0, count: 16)))
        #expect(tensor.shape == [2, 2])
        #expect(tensor.values(as: Float.self) == [0, 0, 0, 0])
    }

    @Test("a byte count that does not match the shape is INVALID_ARGUMENT")
    func rawMismatch() {
        let error = #expect(throws: InferWireError.self) {
            try Tensor(wire: self.wire(.fp32, [2, 2], raw: [UInt8](repeating: 0, count: 15)))
        }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.contains("15 bytes") == true)
    }

    @Test("a shape whose element count overflows is rejected before any allocation")
    func overflow() {
        let error = #expect(throws: InferWireError.self) {
            try Tensor(wire: self.wire(.fp64, [Int64.max, 4], raw: []))
        }
        #expect(error?.code == .invalidArgument)
    }

    @Test("typed contents are packed little-endian and counted against the shape")
    func typed() throws {
        var message = self.wire(.int64, [3], raw: [])
        message.contents.int64Contents = [1, -2, 3]
        #expect(try Tensor(wire: message).values(as: Int64.self) == [1, -2, 3])
        message.contents.int64Contents = [1, 2]
        #expect(throws: InferWireError.self) { try Tensor(wire: message) }
    }

    @Test("BOOL raw bytes other than 0 and 1 are INVALID_ARGUMENT")
    func boolBytes() throws {
        #expect(try Tensor(wire: self.wire(.bool, [3], raw: [0, 1, 1])).values(as: Bool.self) == [false, true, true])
        #expect(throws: InferWireError.self) { try Tensor(wire: self.wire(.bool, [3], raw: [0, 2, 1])) }
    }

    @Test("BYTES elements are length-prefixed and counted")
    func bytes() throws {
        var raw: [UInt8] = [2, 0, 0, 0, 0x61, 0x62, 0, 0, 0, 0]
        #expect(try Tensor(wire: self.wire(.bytes, [2], raw: raw)).elementCount == 2)
        raw.removeLast()
        #expect(throws: InferWireError.self) { try Tensor(wire: self.wire(.bytes, [2], raw: raw)) }
    }
}

@Suite("Model repository")
struct RepositoryTests {
    @Test("the bundled example repository's built-in models load")
    func examples() throws {
        let contents = try ModelRepository(directory: packageRoot + "/examples/models").loadAll(logger: quiet)
        #expect(Set(contents.models.map(\.name)) == ["identity", "add_sub"])
        // Without the ONNX loader, the ONNX models are reported, not served.
        #expect(Set(contents.failures.map(\.model)) == ["fraud", "forest", "mlp"])
        #expect(contents.failures.allSatisfy { $0.reason.contains("platform 'onnx' is not available") })
        let addSub = try #require(contents.models.first { $0.name == "add_sub" })
        #expect(addSub.signature.inputs.map(\.shape) == [[-1, 4], [-1, 4]])
    }

    @Test("a broken model is reported and the others still load")
    func brokenModel() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("iw-repo-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        func model(_ name: String, _ config: String, versions: [String] = ["1"]) throws {
            try FileManager.default.createDirectory(atPath: "\(root)/\(name)", withIntermediateDirectories: true)
            for version in versions {
                try FileManager.default.createDirectory(
                    atPath: "\(root)/\(name)/\(version)", withIntermediateDirectories: true)
            }
            try config.write(toFile: "\(root)/\(name)/config.pbtxt", atomically: true, encoding: .utf8)
        }
        try model(
            "good",
            #"platform: "identity" input { name: "a" datatype: INT32 shape: [2] } output { name: "b" datatype: INT32 shape: [2] }"#
        )
        try model("syntax", "platform: identity {{{")
        try model(
            "unknown_platform",
            #"platform: "tensorflow" input { name: "a" datatype: INT32 } output { name: "b" datatype: INT32 }"#)
        try model(
            "mismatch",
            #"platform: "identity" input { name: "a" datatype: INT32 shape: [2] } output { name: "b" datatype: FP32 shape: [2] }"#
        )
        try model("no_versions", #"platform: "identity""#, versions: [])
        try model("misnamed", #"name: "other" platform: "identity""#)

        let contents = try ModelRepository(directory: root).loadAll(logger: quiet)
        #expect(contents.models.map(\.name) == ["good"])
        let reasons = Dictionary(contents.failures.map { ($0.model, $0.reason) }, uniquingKeysWith: { a, _ in a })
        #expect(Set(reasons.keys) == ["syntax", "unknown_platform", "mismatch", "no_versions", "misnamed"])
        #expect(reasons["unknown_platform"]?.contains("platform 'tensorflow' is not available") == true)
        #expect(reasons["misnamed"]?.contains("must match its directory") == true)

        let registry = ModelRegistry(contents: contents)
        #expect(throws: InferWireError.self) { try registry.snapshot().resolve("mismatch", nil) }
        #expect(try registry.snapshot().resolve("good", nil).version == 1)
    }
}

@Suite("Routing")
struct RoutingTests {
    let registry: ModelRegistry

    init() throws {
        let repository = ModelRepository(directory: packageRoot + "/examples/models")
        let config = try repository.readConfig(model: "identity")
        let v1 = try repository.load(model: "identity", version: 1, config: config)
        // Version 3 has no directory on disk: the routing table is built by hand around it.
        let v3 = LoadedModel(name: "identity", version: 3, config: config, model: v1.model)
        self.registry = ModelRegistry(
            contents: .init(models: [v1, v3], failures: [.init(model: "identity", version: 2, reason: "corrupt file")]))
    }

    func selector(version: Int64? = nil, label: String? = nil) -> Inferwire_V1_VersionSelector {
        var selector = Inferwire_V1_VersionSelector()
        if let version { selector.version = version }
        if let label { selector.label = label }
        return selector
    }

    @Test("no selector and the stable label go to the highest loaded version")
    func stable() throws {
        #expect(try self.registry.snapshot().resolve("identity", nil).version == 3)
        #expect(try self.registry.snapshot().resolve("identity", self.selector(label: "stable")).version == 3)
        #expect(try self.registry.snapshot().resolve("identity", self.selector(version: 1)).version == 1)
    }

    @Test("missing, failed and unknown selections each get their own code")
    func errors() {
        let snapshot = self.registry.snapshot()
        func code(_ body: () throws(InferWireError) -> LoadedModel) -> InferWireError.Code? {
            do {
                _ = try body()
                return nil
            } catch { return error.code }
        }
        #expect(code { () throws(InferWireError) in try snapshot.resolve("nope", nil) } == .notFound)
        #expect(
            code { () throws(InferWireError) in try snapshot.resolve("identity", self.selector(version: 9)) }
                == .notFound)
        #expect(
            code { () throws(InferWireError) in try snapshot.resolve("identity", self.selector(version: 2)) }
                == .unavailable)
        #expect(
            code { () throws(InferWireError) in try snapshot.resolve("identity", self.selector(label: "canary")) }
                == .notFound)
        #expect(
            code { () throws(InferWireError) in try snapshot.resolve("identity", self.selector(label: "blue")) }
                == .invalidArgument)
    }

    @Test("a model whose only version failed to load answers UNAVAILABLE with the loader's reason")
    func onlyVersionFailed() {
        let registry = ModelRegistry(
            contents: .init(models: [], failures: [.init(model: "broken", version: 1, reason: "truncated file")]))
        do {
            _ = try registry.snapshot().resolve("broken", nil)
            Issue.record("a model with no ready version resolved")
        } catch {
            #expect(error.code == .unavailable)
            #expect(error.message == "model 'broken' has no ready version; version 1 failed to load: truncated file")
        }
    }
}

@Suite("Built-in models")
struct BuiltinModelTests {
    @Test("add_sub returns the elementwise sum and difference")
    func addSub() throws {
        let repository = ModelRepository(directory: packageRoot + "/examples/models")
        let model = try repository.load(
            model: "add_sub", version: 1, config: try repository.readConfig(model: "add_sub"))
        let outputs = try model.model.execute([
            Tensor(name: "INPUT0", values: [1, 2, 3, 4] as [Float], shape: [1, 4]),
            Tensor(name: "INPUT1", values: [0.5, 0.5, 10, -1] as [Float], shape: [1, 4]),
        ])
        #expect(outputs.map(\.name) == ["OUTPUT0", "OUTPUT1"])
        #expect(outputs[0].values(as: Float.self) == [1.5, 2.5, 13, 3])
        #expect(outputs[1].values(as: Float.self) == [0.5, 1.5, -7, 5])
    }
}
