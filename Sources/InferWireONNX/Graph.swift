import Foundation
import InferWireCore
import InferWireProto

/// One operator instance, configured from its node's attributes at load time.
protocol Kernel: Sendable {
    /// Computes the node's outputs. `inputs[i]` is nil for an omitted optional input.
    func run(_ inputs: [OnnxTensor?]) throws -> [OnnxTensor]
}

/// A kernel given by a closure.
struct FunctionKernel: Kernel {
    let body: @Sendable ([OnnxTensor?]) throws -> [OnnxTensor]
    init(_ body: @escaping @Sendable ([OnnxTensor?]) throws -> [OnnxTensor]) { self.body = body }
    func run(_ inputs: [OnnxTensor?]) throws -> [OnnxTensor] { try self.body(inputs) }
}

/// What building a kernel knows about its node.
struct NodeContext {
    /// "node 'name' (Op, opset N)", for error messages.
    let label: String
    var attributes: Attributes
    let opset: Int
    let inputCount: Int
    let outputCount: Int
    /// Inputs whose values are known at load time (initializers, folded constants), by position.
    let constantInputs: [Int: OnnxTensor]
    /// How many outer-scope values the node's subgraphs read: the kernel receives them after
    /// its declared inputs, and passes them on to ``Subgraph/run(_:implicit:)``.
    var implicitInputCount = 0
    /// Plans one of the node's graph attributes (a Scan, Loop or If body).
    var loadSubgraph: (Onnx_GraphProto) throws(OnnxError) -> Subgraph = { _ throws(OnnxError) in
        throw OnnxError("subgraphs are not available here")
    }
    /// Set by a kernel whose success depends on its inputs' values, not only their shapes and
    /// types (OneHotEncoder with zeros = 0 fails on an unknown category; If and Loop choose by
    /// values): a trial run on ones proves nothing about such a model, so it gets none.
    var dependsOnValues = false

    func error(_ text: String) -> OnnxError { OnnxError("\(self.label): \(text)") }

    func require(inputs range: ClosedRange<Int>, outputs outputRange: ClosedRange<Int> = 1...1) throws(OnnxError) {
        guard range.contains(self.inputCount) else {
            throw self.error("takes \(range.lowerBound)–\(range.upperBound) inputs, got \(self.inputCount)")
        }
        guard outputRange.contains(self.outputCount) else {
            throw self.error(
                "gives \(outputRange.lowerBound)–\(outputRange.upperBound) outputs, got \(self.outputCount)")
        }
    }
}

typealias KernelFactory = @Sendable (inout NodeContext) throws -> any Kernel

/// Fetches a required input inside a kernel.
@inline(__always)
func input(_ inputs: [OnnxTensor?], _ index: Int, _ op: String) throws -> OnnxTensor {
    guard index < inputs.count, let tensor = inputs[index] else { throw OnnxError("\(op): input \(index) is missing") }
    return tensor
}

/// A planned graph attribute: its formal inputs, then the outer-scope values it reads.
struct Subgraph: Sendable {
    let plan: ExecutionPlan
    /// The body's own inputs (before the outer-scope values).
    let inputCount: Int
    /// The body's outputs as declared (their types give empty scan outputs a type).
    let outputs: [GraphValue]
    /// Whether a node in the body depends on values (``NodeContext/dependsOnValues``).
    let dependsOnValues: Bool

    func run(_ inputs: [OnnxTensor], implicit: ArraySlice<OnnxTensor?>) throws -> [OnnxTensor] {
        guard inputs.count == self.inputCount else {
            throw OnnxError("the body takes \(self.inputCount) inputs, was given \(inputs.count)")
        }
        return try self.plan.run(inputs, implicit: implicit)
    }
}

/// A loaded, validated and planned ONNX graph.
struct ExecutionPlan: Sendable {
    struct Step: Sendable {
        let kernel: any Kernel
        let label: String
        let inputs: [Int?]
        let outputs: [Int]
        /// Slots whose last reader is this step: freed after it.
        var release: [Int]
        /// How its outputs take narrow element types from its inputs.
        var narrowTyping = NarrowTyping()
    }

    var slotCount: Int
    var constants: [(slot: Int, value: OnnxTensor)]
    var inputSlots: [Int]
    var outputSlots: [Int]
    var steps: [Step]

    /// Runs the graph on inputs in graph-input order; returns outputs in graph-output order.
    /// `implicit` fills the input slots after `inputs`: the outer-scope values of a subgraph.
    func run(_ inputs: [OnnxTensor], implicit: ArraySlice<OnnxTensor?> = []) throws -> [OnnxTensor] {
        var slots = [OnnxTensor?](repeating: nil, count: self.slotCount)
        for (slot, value) in self.constants { slots[slot] = value }
        for (slot, value) in zip(self.inputSlots, inputs) { slots[slot] = value }
        for (slot, value) in zip(self.inputSlots.dropFirst(inputs.count), implicit) { slots[slot] = value }
        for step in self.steps {
            let arguments = step.inputs.map { $0.flatMap { slots[$0] } }
            let results: [OnnxTensor]
            do {
                results = try step.narrowTyping.run(step.kernel, arguments)
            } catch let error as OnnxError {
                throw OnnxError("\(step.label): \(error.message)")
            }
            guard results.count >= step.outputs.count else {
                throw OnnxError("\(step.label): produced \(results.count) outputs, expected \(step.outputs.count)")
            }
            for (slot, value) in zip(step.outputs, results) { slots[slot] = value }
            for slot in step.release { slots[slot] = nil }
        }
        return try self.outputSlots.map { slot in
            guard let value = slots[slot] else { throw OnnxError("graph output was not computed") }
            return value
        }
    }
}

/// How an operator's outputs take the narrow element types (``ElementType/isNarrow``) of its
/// inputs: kernels compute on the wide storage, and outputs of that wide type are wrapped or
/// rounded back to the narrow type.
struct NarrowTyping: Sendable {
    /// False for operators that set their output types themselves (Cast, Shape, ArgMax, …):
    /// they see narrow inputs as they are, and their outputs are left alone.
    var follows = true
    /// The input whose type the outputs take; nil: the first narrow-typed input.
    var source: Int?
    /// The outputs that take it; nil: every output of its wide type.
    var outputs: Set<Int>?

    /// The typing of a default-domain or `ai.onnx.ml.` operator.
    init(operator name: String) {
        switch name {
        case "Cast", "CastLike", "Shape", "Size", "ArgMax", "ArgMin", "NonZero", "QuantizeLinear", "DequantizeLinear",
            "Scan", "If", "Loop", "DynamicQuantizeLinear", "MatMulInteger", "QLinearMatMul", "ConvInteger",
            "QLinearConv",
            "com.microsoft.QLinearAdd", "com.microsoft.QLinearMul":
            self.follows = false
        // ML operators whose outputs have types of their own (labels, scores, encodings).
        case "ai.onnx.ml.LabelEncoder", "ai.onnx.ml.CategoryMapper", "ai.onnx.ml.OneHotEncoder",
            "ai.onnx.ml.FeatureVectorizer", "ai.onnx.ml.SVMClassifier", "ai.onnx.ml.SVMRegressor":
            self.follows = false
        case "OneHot": self.source = 2  // its indices may be INT8 while its values are BF16
        case "Where": self.source = 1
        case "TopK": self.outputs = [0]  // the indices stay INT64
        default: break
        }
    }

    init() {}

    func run(_ kernel: any Kernel, _ arguments: [OnnxTensor?]) throws -> [OnnxTensor] {
        guard self.follows, arguments.contains(where: { $0?.narrow != nil }) else { return try kernel.run(arguments) }
        let results = try kernel.run(arguments.map { $0?.widened })
        let narrow =
            self.source.map { $0 < arguments.count ? arguments[$0]?.narrow : nil }
            ?? arguments.lazy.compactMap({ $0?.narrow }).first
        guard let narrow else { return results }
        return results.enumerated().map { index, result in
            guard self.outputs?.contains(index) ?? true, result.narrow == nil, result.storageType == narrow.wide
            else { return result }
            return OnnxTensor(shape: result.shape, storage: narrow.narrowed(result.storage), narrow: narrow)
        }
    }
}
