package import InferWireProto

/// The declared name, element type and shape of one model input or output.
public struct TensorSpec: Sendable, Hashable {
    public var name: String
    public var dataType: DataType
    /// The full shape; -1 marks a dimension of any size (the batch dimension among them).
    public var shape: [Int]

    public init(name: String, dataType: DataType, shape: [Int]) {
        self.name = name
        self.dataType = dataType
        self.shape = shape
    }

    /// Whether `shape` fits this spec: same rank, and every fixed dimension equal.
    public func accepts(shape: [Int]) -> Bool {
        shape.count == self.shape.count && zip(shape, self.shape).allSatisfy { $1 == -1 || $0 == $1 }
    }

    package var wire: Inferwire_V1_TensorSpec {
        var spec = Inferwire_V1_TensorSpec()
        spec.name = self.name
        spec.datatype = self.dataType.wire
        spec.shape = self.shape.map { Int64($0) }
        return spec
    }
}

/// What a model takes and gives.
public struct ModelSignature: Sendable, Hashable {
    public var inputs: [TensorSpec]
    public var outputs: [TensorSpec]
    /// 0: no batch dimension. > 0: dimension 0 of every input and output is the
    /// batch, at most this large.
    public var maxBatchSize: Int

    public init(inputs: [TensorSpec], outputs: [TensorSpec], maxBatchSize: Int) {
        self.inputs = inputs
        self.outputs = outputs
        self.maxBatchSize = maxBatchSize
    }

    /// The signature a configuration declares (the batch dimension prepended when batching).
    public init(configuration config: ModelConfiguration) throws(InferWireError) {
        let batched = config.maxBatchSize > 0
        guard config.maxBatchSize >= 0 else {
            throw InferWireError(code: .invalidArgument, message: "max_batch_size must not be negative")
        }
        func specs(_ list: [TensorSpec], _ kind: String) throws(InferWireError) -> [TensorSpec] {
            var seen = Set<String>()
            var result: [TensorSpec] = []
            for spec in list {
                guard !spec.name.isEmpty else {
                    throw InferWireError(code: .invalidArgument, message: "an \(kind) has no name")
                }
                guard seen.insert(spec.name).inserted else {
                    throw InferWireError(code: .invalidArgument, message: "\(kind) '\(spec.name)' is declared twice")
                }
                guard spec.dataType.isKnown else {
                    throw InferWireError(
                        code: .invalidArgument, message: "\(kind) '\(spec.name)' has no valid datatype")
                }
                guard spec.shape.allSatisfy({ $0 >= -1 }) else {
                    throw InferWireError(
                        code: .invalidArgument, message: "\(kind) '\(spec.name)' has a dimension below -1")
                }
                result.append(
                    TensorSpec(
                        name: spec.name, dataType: spec.dataType, shape: batched ? [-1] + spec.shape : spec.shape))
            }
            return result
        }
        self.inputs = try specs(config.inputs, "input")
        self.outputs = try specs(config.outputs, "output")
        self.maxBatchSize = config.maxBatchSize
        guard !self.inputs.isEmpty, !self.outputs.isEmpty else {
            throw InferWireError(code: .invalidArgument, message: "a model needs at least one input and one output")
        }
    }

    /// The signature a `ModelConfig` message declares.
    package init(config: Inferwire_V1_ModelConfig) throws(InferWireError) {
        try self.init(configuration: ModelConfiguration(config))
    }
}

/// A runnable model: what the ONNX runtime and the built-in models implement.
///
/// The server validates inputs against the signature before calling `execute`, so an
/// implementation may assume names, types, ranks and byte counts are right.
public protocol InferenceModel: Sendable {
    /// The inputs it takes and the outputs it gives.
    var signature: ModelSignature { get }

    /// True when one execution takes microseconds (a copy, an add): cheap enough to run
    /// on the I/O thread that read the request instead of paying two thread hops.
    var isLightweight: Bool { get }

    /// Runs the model.
    /// - Parameter inputs: one tensor per signature input, in signature order.
    /// - Returns: one tensor per signature output, in signature order.
    func execute(_ inputs: [Tensor]) throws -> [Tensor]
}

/// Creates models of one platform (the `platform` field of `ModelConfig`).
public protocol ModelLoader: Sendable {
    /// The platform name this loader handles, e.g. `identity` or `onnx`.
    var platform: String { get }

    /// Loads one version of a model.
    /// - Parameters:
    ///   - configuration: the model's configuration.
    ///   - versionDirectory: `<repository>/<model>/<version>`.
    /// - Throws: an ``InferWireError`` naming what is wrong with the model. Its message may
    ///   reach clients: name files relative to the version directory, never by full path.
    func load(configuration: ModelConfiguration, versionDirectory: String) throws -> any InferenceModel
}

extension ModelLoader {
    /// Loads one version described by a `ModelConfig` message (the engine reads configs as such).
    package func load(config: Inferwire_V1_ModelConfig, versionDirectory: String) throws -> any InferenceModel {
        try self.load(configuration: ModelConfiguration(config), versionDirectory: versionDirectory)
    }
}
