import Foundation
import InferWireCore
import InferWireEngine
import InferWireProto
import Testing

@testable import InferWireONNX

/// A model with one node, built in code.
func singleNodeModel(
    op: String, domain: String = "", attributes: [Onnx_AttributeProto] = [], inputs: [String] = ["X"],
    opset: Int64 = 17, name: String = "the_node"
) -> Onnx_ModelProto {
    var model = Onnx_ModelProto()
    model.irVersion = 8
    var opsetImport = Onnx_OperatorSetIdProto()
    opsetImport.version = opset
    model.opsetImport = [opsetImport]
    var node = Onnx_NodeProto()
    node.opType = op
    node.domain = domain
    node.name = name
    node.input = inputs
    node.output = ["Y"]
    node.attribute = attributes
    var x = Onnx_ValueInfoProto()
    x.name = "X"
    var type = Onnx_TypeProto.Tensor()
    type.elemType = 1
    var dim = Onnx_TensorShapeProto.Dimension()
    dim.dimValue = 4
    type.shape.dim = [dim]
    x.type.tensorType = type
    var y = x
    y.name = "Y"
    model.graph.input = [x]
    model.graph.output = [y]
    model.graph.node = [node]
    return model
}

/// Writes `data` as `<dir>/1/model.onnx` and loads it the way the server does.
func load(_ data: Data) throws -> any InferenceModel {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("iw-onnx-\(UUID())")
    defer { try? FileManager.default.removeItem(at: directory) }
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    try data.write(to: directory.appendingPathComponent("model.onnx"))
    var config = Inferwire_V1_ModelConfig()
    config.name = "m"
    config.platform = "onnx"
    return try OnnxModelLoader().load(config: config, versionDirectory: directory.path)
}

func loadError(_ data: Data) -> String? {
    do {
        _ = try load(data)
        return nil
    } catch let error as InferWireError {
        return error.message
    } catch {
        return "\(error)"
    }
}

@Suite("ONNX load errors")
struct LoadErrorTests {
    @Test("garbage bytes are not a valid ONNX file")
    func garbage() {
        let message = loadError(Data("this is not a model".utf8))
        #expect(message?.contains("not a valid ONNX file") == true)
    }

    @Test("a truncated file fails to load with a clear error")
    func truncated() throws {
        let full = try Data(contentsOf: URL(fileURLWithPath: "\(fixtures)/mlp_classifier/model.onnx"))
        let message = loadError(full.prefix(full.count / 2))
        #expect(message != nil)
        #expect(message?.contains("not a valid ONNX file") == true || message?.contains("produced by no node") == true)
    }

    @Test("an unsupported operator names the node, the op and the opset")
    func unsupportedOp() throws {
        let message = loadError(try singleNodeModel(op: "Det").serializedData())
        #expect(message?.contains("node 'the_node' (Det, opset 17)") == true)
        #expect(message?.contains("operator Det is not supported") == true)
        let ml = loadError(try singleNodeModel(op: "SVMClassifier", domain: "ai.onnx.ml").serializedData())
        #expect(ml?.contains("the model imports no opset for domain 'ai.onnx.ml'") == true)
    }

    @Test("an attribute the kernel does not understand fails the load")
    func unsupportedAttribute() throws {
        var bogus = Onnx_AttributeProto()
        bogus.name = "bogus"
        bogus.type = .int
        bogus.i = 1
        let message = loadError(try singleNodeModel(op: "Relu", attributes: [bogus]).serializedData())
        #expect(message?.contains("attribute 'bogus' of Relu is not supported") == true)
        var autoPad = Onnx_AttributeProto()
        autoPad.name = "auto_pad"
        autoPad.type = .string
        autoPad.s = Data("SOMETIMES".utf8)
        var kernel = Onnx_AttributeProto()
        kernel.name = "kernel_shape"
        kernel.type = .ints
        kernel.ints = [2, 2]
        let pool = loadError(try singleNodeModel(op: "MaxPool", attributes: [kernel, autoPad]).serializedData())
        #expect(pool?.contains("auto_pad 'SOMETIMES' is not supported") == true)
    }

    @Test("an input that nothing produces fails the load")
    func unknownProducer() throws {
        let message = loadError(try singleNodeModel(op: "Add", inputs: ["X", "ghost"]).serializedData())
        #expect(message?.contains("input 'ghost' is produced by no node, initializer or graph input") == true)
    }

    @Test("an opset newer than the runtime knows is refused")
    func newOpset() throws {
        let message = loadError(try singleNodeModel(op: "Relu", opset: 99).serializedData())
        #expect(message?.contains("opset 99 is newer than InferWire supports") == true)
    }

    @Test("every opset through the newest onnx defines loads operators whose later versions changed only types")
    func currentOpsets() throws {
        for opset in Int64(13)...Int64(28) {
            let model = try load(try singleNodeModel(op: "Relu", opset: opset).serializedData())
            let out = try model.execute([Tensor(name: "X", values: [Float(-1), 2, -3, 4], shape: [4])])
            #expect(out[0].values(as: Float.self) == [0, 2, 0, 4], "opset \(opset)")
        }
        // Conv-22 only added element types: a 22 model runs it as Conv-11.
        #expect(OperatorVersions.table["Conv"]?.typeOnly.contains(22) == true)
        #expect(OperatorVersions.newestDefault >= 28)
    }

    @Test("an operator whose version at the model's opset changed its inputs or attributes is refused by name")
    func changedVersion() throws {
        // SpaceToDepth-28 changed its signature; a kernel written through opset 21 must not run it.
        let refusal = OpsetSupport.refusal(op: "SpaceToDepth", domain: "", opset: 28)
        #expect(
            refusal
                == "SpaceToDepth-28 (in opset 28) changed SpaceToDepth's inputs or attributes; InferWire runs SpaceToDepth through version 13"
        )
        #expect(OpsetSupport.refusal(op: "SpaceToDepth", domain: "", opset: 27) == nil)
        // Range's kernel knows Range-27's stash_type.
        #expect(OpsetSupport.refusal(op: "Range", domain: "", opset: 28) == nil)
        // Type-only later versions run: Relu-14 widened types over Relu-13.
        #expect(OpsetSupport.refusal(op: "Relu", domain: "", opset: 28) == nil)
        // An operator that does not exist yet at the imported opset.
        #expect(OpsetSupport.refusal(op: "Gelu", domain: "", opset: 17)?.contains("does not exist at opset 17") == true)
        let early = loadError(try singleNodeModel(op: "Gelu", opset: 17).serializedData())
        #expect(
            early?.contains("Gelu does not exist at opset 17 (its first version is opset 20)") == true, "\(early ?? "")"
        )
        // Cast's kernel knows Cast-24's round_mode (it only changes float8 targets).
        var to = Onnx_AttributeProto()
        to.name = "to"
        to.type = .int
        to.i = 1
        #expect(loadError(try singleNodeModel(op: "Cast", attributes: [to], opset: 28).serializedData()) == nil)
    }

    @Test("one load error names every node that cannot run")
    func everyUnsupportedNode() throws {
        var model = singleNodeModel(op: "Unique")
        var second = model.graph.node[0]
        second.name = "second"
        second.opType = "Det"
        second.input = ["Y"]
        second.output = ["Z"]
        var third = second
        third.name = "third"
        third.opType = "Relu"
        third.input = ["Z"]
        third.output = ["W"]
        model.graph.node += [second, third]
        model.graph.output[0].name = "W"
        let message = loadError(try model.serializedData())
        #expect(message?.contains("2 nodes cannot run") == true, "\(message ?? "")")
        #expect(message?.contains("operator Unique is not supported") == true)
        #expect(message?.contains("node 'second' (Det, opset 17): operator Det is not supported") == true)
        #expect(message?.contains("third") == false)
    }

    @Test("external data beside model.onnx is read; paths out of the version directory and short files are refused")
    func externalData() throws {
        func model(location: String, offset: Int? = nil, length: Int? = nil) throws -> Data {
            var model = singleNodeModel(op: "Add", inputs: ["X", "W"])
            var weight = Onnx_TensorProto()
            weight.name = "W"
            weight.dataType = 1
            weight.dims = [4]
            weight.dataLocation = .external
            var entries = [("location", location)]
            if let offset { entries.append(("offset", "\(offset)")) }
            if let length { entries.append(("length", "\(length)")) }
            weight.externalData = entries.map { key, value in
                var entry = Onnx_StringStringEntryProto()
                entry.key = key
                entry.value = value
                return entry
            }
            model.graph.initializer = [weight]
            return try model.serializedData()
        }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("iw-external-\(UUID())")
        defer { try? FileManager.default.removeItem(at: directory) }
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        // 8 bytes of padding, then the four weights, as torch's exporter lays files out.
        let weights: [Float] = [10, 20, 30, 40]
        try (Data(count: 8) + weights.withUnsafeBytes { Data($0) }).write(
            to: directory.appendingPathComponent("model.onnx.data"))
        func loadHere(_ data: Data) throws -> any InferenceModel {
            try data.write(to: directory.appendingPathComponent("model.onnx"))
            var config = Inferwire_V1_ModelConfig()
            config.name = "m"
            config.platform = "onnx"
            return try OnnxModelLoader().load(config: config, versionDirectory: directory.path)
        }
        func refusal(_ data: Data) -> String {
            do {
                _ = try loadHere(data)
                return "loaded"
            } catch {
                return (error as? InferWireError)?.message ?? "\(error)"
            }
        }
        let loaded = try loadHere(try model(location: "model.onnx.data", offset: 8, length: 16))
        let sum = try loaded.execute([Tensor(name: "X", values: [Float](repeating: 1, count: 4), shape: [4])])
        #expect(sum[0].values(as: Float.self) == [11, 21, 31, 41])

        #expect(refusal(try model(location: "../escape.data")).contains("leaves the version directory"))
        #expect(refusal(try model(location: "/etc/passwd")).contains("leaves the version directory"))
        #expect(refusal(try model(location: "model.onnx.data", offset: 16)).contains("needs 16 bytes at offset 16"))
        #expect(refusal(try model(location: "model.onnx.data", length: 12)).contains("does not hold dims"))
        #expect(refusal(try model(location: "missing.data")).contains("cannot be read"))
        // A symbolic link out of the directory is followed and refused.
        try FileManager.default.createSymbolicLink(
            atPath: directory.appendingPathComponent("link.data").path, withDestinationPath: "/etc/hostname")
        #expect(refusal(try model(location: "link.data")).contains("leaves the version directory"))
        // Messages name the file as the model does, never the server's directory.
        #expect(!refusal(try model(location: "missing.data")).contains(directory.path))
    }

    @Test("external data claiming a huge tensor is refused before anything is allocated or read")
    func oversizedExternalData() throws {
        var model = singleNodeModel(op: "Add", inputs: ["X", "W"])
        var weight = Onnx_TensorProto()
        weight.name = "W"
        weight.dataType = 1
        weight.dims = [1 << 40, 1 << 20]
        weight.dataLocation = .external
        var entry = Onnx_StringStringEntryProto()
        entry.key = "location"
        entry.value = "model.onnx.data"
        weight.externalData = [entry]
        model.graph.initializer = [weight]
        let message = try #require(loadError(try model.serializedData()))
        #expect(message.contains("initializer 'W'"), "\(message)")
        #expect(message.contains("too large") || message.contains("elements"), "\(message)")
    }

    @Test("nodes that feed each other in a cycle are named as a cycle")
    func cycle() throws {
        var model = singleNodeModel(op: "Relu", inputs: ["B"])
        var first = model.graph.node[0]
        first.output = ["A"]
        var second = Onnx_NodeProto()
        second.opType = "Add"
        second.name = "loop_back"
        second.input = ["X", "A"]
        second.output = ["B"]
        var last = Onnx_NodeProto()
        last.opType = "Identity"
        last.input = ["A"]
        last.output = ["Y"]
        model.graph.node = [first, second, last]
        let message = try #require(loadError(try model.serializedData()))
        #expect(message.contains("cycle"), "\(message)")
        #expect(message.contains("loop_back"), "\(message)")
    }

    @Test("nodes whose element types disagree fail the load, naming the node")
    func typeMismatch() throws {
        var model = singleNodeModel(op: "Add", inputs: ["X", "K"])
        model.graph.initializer = [
            {
                var k = Onnx_TensorProto()
                k.name = "K"
                k.dataType = 7  // INT64 beside X's FLOAT
                k.dims = [4]
                k.int64Data = [1, 2, 3, 4]
                return k
            }()
        ]
        let message = try #require(loadError(try model.serializedData()))
        #expect(message.contains("the_node"), "\(message)")
        #expect(message.contains("float") && message.contains("int64"), "\(message)")
    }

    @Test("a model that fails its trial run names the node")
    func trialRun() throws {
        // A 4-vector into a Gemm needs 2-D input: the trial run catches it at load.
        var b = Onnx_TensorProto()
        b.name = "B"
        b.dataType = 1
        b.dims = [4, 4]
        b.floatData = [Float](repeating: 1, count: 16)
        var model = singleNodeModel(op: "Gemm", inputs: ["X", "B"])
        model.graph.initializer = [b]
        let message = loadError(try model.serializedData())
        #expect(message?.contains("fails a trial run") == true)
        #expect(message?.contains("node 'the_node' (Gemm, opset 17)") == true)
    }

    @Test("hostile attribute values fail the load instead of crashing the process")
    func hostileAttributes() throws {
        func ints(_ name: String, _ values: [Int64]) -> Onnx_AttributeProto {
            var a = Onnx_AttributeProto()
            a.name = name
            a.type = .ints
            a.ints = values
            return a
        }
        for attributes in [
            [ints("kernel_shape", [2, 2]), ints("strides", [0, 1])],
            [ints("kernel_shape", [-3, 2])],
            [ints("kernel_shape", [2, 2]), ints("pads", [Int64.max, 0, 0, 0])],
        ] {
            let message = loadError(try singleNodeModel(op: "MaxPool", attributes: attributes).serializedData())
            #expect(message?.contains("kernel_shape, strides and dilations must be") == true)
        }
        var to = Onnx_AttributeProto()
        to.name = "to"
        to.type = .int
        to.i = Int64.max
        #expect(
            loadError(try singleNodeModel(op: "Cast", attributes: [to]).serializedData())?.contains("casting to type")
                == true)
    }

    @Test("constant folding that would allocate a huge tensor fails the load")
    func hugeConstantFolding() throws {
        var a = Onnx_TensorProto()
        a.name = "A"
        a.dataType = 1
        a.dims = [1 << 20, 1]
        a.rawData = Data(count: 4 << 20)
        var b = a
        b.name = "B"
        b.dims = [1, 1 << 20]
        var model = singleNodeModel(op: "Add", inputs: ["A", "B"])
        model.graph.input = []
        model.graph.initializer = [a, b]
        let message = loadError(try model.serializedData())
        #expect(message?.contains("exceeds") == true)
    }

    @Test("a tree ensemble whose nodes form a cycle is refused at load")
    func treeCycle() throws {
        func attr(_ name: String, ints: [Int64]? = nil, floats: [Float]? = nil, strings: [String]? = nil)
            -> Onnx_AttributeProto
        {
            var a = Onnx_AttributeProto()
            a.name = name
            if let ints {
                a.type = .ints
                a.ints = ints
            }
            if let floats {
                a.type = .floats
                a.floats = floats
            }
            if let strings {
                a.type = .strings
                a.strings = strings.map { Data($0.utf8) }
            }
            return a
        }
        // Node 1 points back to node 0, so the root is referenced as a child.
        let attributes = [
            attr("nodes_treeids", ints: [0, 0, 0]), attr("nodes_nodeids", ints: [0, 1, 2]),
            attr("nodes_featureids", ints: [0, 0, 0]),
            attr("nodes_modes", strings: ["BRANCH_LT", "BRANCH_LT", "LEAF"]), attr("nodes_values", floats: [0, 0, 0]),
            attr("nodes_truenodeids", ints: [1, 0, 0]), attr("nodes_falsenodeids", ints: [2, 2, 0]),
            attr("target_treeids", ints: [0]), attr("target_nodeids", ints: [2]), attr("target_ids", ints: [0]),
            attr("target_weights", floats: [1]),
        ]
        var model = singleNodeModel(op: "TreeEnsembleRegressor", domain: "ai.onnx.ml", attributes: attributes)
        var ml = Onnx_OperatorSetIdProto()
        ml.domain = "ai.onnx.ml"
        ml.version = 3
        model.opsetImport.append(ml)
        let message = loadError(try model.serializedData())
        #expect(message != nil)
    }

    @Test("a rank-0 input to an axis operator is an error, not a crash")
    func scalarAxis() throws {
        var model = singleNodeModel(op: "Softmax")
        var scalar = Onnx_TypeProto.Tensor()
        scalar.elemType = 1
        scalar.shape = Onnx_TensorShapeProto()
        model.graph.input[0].type.tensorType = scalar
        model.graph.output[0].type.tensorType = scalar
        let message = loadError(try model.serializedData())
        #expect(message?.contains("out of range for rank 0") == true)
    }

    @Test("a config that contradicts the graph is refused")
    func configMismatch() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("iw-onnx-\(UUID())")
        defer { try? FileManager.default.removeItem(at: directory) }
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try FileManager.default.copyItem(
            atPath: "\(fixtures)/logistic_regression/model.onnx",
            toPath: directory.appendingPathComponent("model.onnx").path)
        var config = Inferwire_V1_ModelConfig()
        config.name = "m"
        config.platform = "onnx"
        var input = Inferwire_V1_TensorSpec()
        input.name = "X"
        input.datatype = .fp64
        input.shape = [8]
        config.input = [input]
        config.maxBatchSize = 8
        #expect(throws: InferWireError.self) {
            try OnnxModelLoader().load(config: config, versionDirectory: directory.path)
        }
    }

    @Test("model_filename names a file in the version directory: a path elsewhere is refused unread")
    func modelFilenameStaysInside() throws {
        for name in ["../model.onnx", "/etc/passwd", "..", "", "sub/model.onnx"] {
            var config = Inferwire_V1_ModelConfig()
            config.name = "m"
            config.platform = "onnx"
            config.parameters["model_filename"] = name
            do {
                _ = try OnnxModelLoader().load(config: config, versionDirectory: "\(fixtures)/logistic_regression")
                Issue.record("model_filename '\(name)' was accepted")
            } catch let error as InferWireError {
                #expect(error.code == .invalidArgument, "\(name)")
                #expect(error.message.hasPrefix("model_filename must name a file in the version directory"))
            }
        }
    }
}
