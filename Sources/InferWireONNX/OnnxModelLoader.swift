import Foundation
public import InferWireCore

/// `platform: "onnx"`: loads `<version>/model.onnx` (or the file named by the config's
/// `model_filename` parameter) into InferWire's runtime.
///
/// A config that declares inputs and outputs must match the graph; one that declares
/// none takes them from the graph, as does a model directory with no config at all.
public struct OnnxModelLoader: ModelLoader {
    /// Largest batch for models whose inputs all have a symbolic first dimension,
    /// when the config does not say.
    public var defaultMaxBatchSize: Int

    public init(defaultMaxBatchSize: Int = 1 << 16) {
        self.defaultMaxBatchSize = defaultMaxBatchSize
    }

    public var platform: String { "onnx" }

    public func load(configuration config: ModelConfiguration, versionDirectory: String) throws -> any InferenceModel {
        // Messages name the file relative to the version directory: they may reach clients.
        let file = config.parameters["model_filename"] ?? "model.onnx"
        guard !file.isEmpty, !file.contains("/"), file != ".", file != ".." else {
            throw InferWireError(
                code: .invalidArgument,
                message: "model_filename must name a file in the version directory, got '\(file)'")
        }
        guard let data = FileManager.default.contents(atPath: versionDirectory + "/" + file) else {
            throw InferWireError(code: .notFound, message: "cannot read \(file) in the version directory")
        }
        let model: OnnxModel
        do {
            let batch = config.maxBatchSize > 0 ? Int(config.maxBatchSize) : self.defaultMaxBatchSize
            model = try OnnxModel(data: data, name: config.name, maxBatchSize: batch, directory: versionDirectory)
        } catch {
            throw InferWireError(code: .invalidArgument, message: "\(file): \(error.message)", cause: error)
        }
        if !config.inputs.isEmpty || !config.outputs.isEmpty {
            let declared = try ModelSignature(configuration: config)
            try Self.check(declared.inputs, against: model.signature.inputs, kind: "input")
            try Self.check(declared.outputs, against: model.signature.outputs, kind: "output")
            return ConfiguredModel(model: model, signature: declared)
        }
        return model
    }

    private static func check(_ declared: [TensorSpec], against graph: [TensorSpec], kind: String) throws {
        for spec in declared {
            guard let match = graph.first(where: { $0.name == spec.name }) else {
                throw InferWireError(
                    code: .invalidArgument,
                    message: "config declares \(kind) '\(spec.name)'; the graph's \(kind)s are \(graph.map(\.name))")
            }
            guard match.dataType == spec.dataType else {
                throw InferWireError(
                    code: .invalidArgument,
                    message:
                        "config declares \(kind) '\(spec.name)' as \(spec.dataType.name); the graph has \(match.dataType.name)"
                )
            }
            // Every dimension the graph fixes must be the declared one (a fixed batch of 1
            // cannot be batched).
            if !match.shape.isEmpty {
                let agrees =
                    spec.shape.count == match.shape.count
                    && zip(spec.shape, match.shape).allSatisfy { declared, graph in graph < 0 || declared == graph }
                guard agrees else {
                    throw InferWireError(
                        code: .invalidArgument,
                        message:
                            "config declares \(kind) '\(spec.name)' with shape \(spec.shape) (batch dimension included); the graph has \(match.shape)"
                    )
                }
            }
        }
        if kind == "input", declared.count != graph.count {
            throw InferWireError(
                code: .invalidArgument,
                message: "config declares \(declared.count) inputs; the graph takes \(graph.count)")
        }
    }
}

/// An ONNX model served under the signature its config declares (a subset or reordering
/// of outputs, a smaller max batch).
struct ConfiguredModel: InferenceModel {
    let model: OnnxModel
    let signature: ModelSignature
    var isLightweight: Bool { false }

    func execute(_ inputs: [Tensor]) throws -> [Tensor] {
        // Reorder inputs into graph order, then pick the declared outputs.
        let byName = Dictionary(uniqueKeysWithValues: zip(self.signature.inputs.map(\.name), inputs))
        let ordered = self.model.signature.inputs.map { byName[$0.name]! }
        let outputs = try self.model.execute(ordered)
        return self.signature.outputs.map { spec in outputs.first { $0.name == spec.name }! }
    }
}

extension OnnxModelLoader {
    /// Parses, plans and trial-runs a model from its bytes, as a load from a file does (the
    /// fuzzing harness feeds it arbitrary bytes).
    package static func model(from data: Data, name: String) throws -> any InferenceModel {
        do {
            return try OnnxModel(data: data, name: name)
        } catch {
            throw InferWireError(code: .invalidArgument, message: error.message, cause: error)
        }
    }
}
