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

/// A loaded, validated and planned ONNX graph.
struct ExecutionPlan: Sendable {
    struct Step: Sendable {
        let kernel: any Kernel
        let label: String
        let inputs: [Int?]
        let outputs: [Int]
        /// Slots whose last reader is this step: freed after it.
        var release: [Int]
        /// Whether outputs in the wide type of a narrow input are that narrow type (false for
        /// operators whose output type does not follow their inputs': Cast, Shape, ArgMax, …).
        var keepsNarrowTypes = true
        /// See ``typeSourceInputs``; nil: the first narrow-typed input.
        var typeSource: Int? = nil
    }

    /// Operators whose output types are not their inputs': narrow types are not carried over.
    static let typeChangingOperators: Set<String> = [
        "Cast", "CastLike", "Shape", "Size", "ArgMax", "ArgMin", "NonZero", "TopK", "ai.onnx.ml.LabelEncoder",
        "ai.onnx.ml.TreeEnsembleClassifier", "ai.onnx.ml.LinearClassifier", "ai.onnx.ml.ArrayFeatureExtractor",
        "ConstantOfShape", "Constant", "QuantizeLinear", "DequantizeLinear",
    ]

    /// The input whose element type an operator's output takes, where it is not the first
    /// narrow-typed input (OneHot's indices may be INT8 while its values are BF16).
    static let typeSourceInputs: [String: Int] = ["OneHot": 2, "Where": 1]

    /// Runs a kernel on narrow-typed inputs: on their wide storage, then its outputs of that
    /// wide type wrapped or rounded back to the (first) narrow input type.
    static func run(
        _ kernel: any Kernel, _ arguments: [OnnxTensor?], keepsNarrowTypes: Bool, typeSource: Int? = nil
    ) throws -> [OnnxTensor] {
        // Operators that set their output types themselves see the narrow types as they are.
        guard keepsNarrowTypes, arguments.contains(where: { $0?.narrow != nil }) else {
            return try kernel.run(arguments)
        }
        let results = try kernel.run(arguments.map { $0?.widened })
        let source = typeSource.flatMap { $0 < arguments.count ? arguments[$0] : nil }
        guard let narrow = typeSource == nil ? arguments.lazy.compactMap({ $0?.narrow }).first : source?.narrow
        else { return results }
        return results.map { result in
            guard result.narrow == nil, result.storageType == narrow.wide else { return result }
            return OnnxTensor(shape: result.shape, storage: narrow.narrowed(result.storage), narrow: narrow)
        }
    }

    var slotCount: Int
    var constants: [(slot: Int, value: OnnxTensor)]
    var inputSlots: [Int]
    var outputSlots: [Int]
    var steps: [Step]

    /// Runs the graph on inputs in graph-input order; returns outputs in graph-output order.
    func run(_ inputs: [OnnxTensor]) throws -> [OnnxTensor] {
        var slots = [OnnxTensor?](repeating: nil, count: self.slotCount)
        for (slot, value) in self.constants { slots[slot] = value }
        for (slot, value) in zip(self.inputSlots, inputs) { slots[slot] = value }
        for step in self.steps {
            let arguments = step.inputs.map { $0.flatMap { slots[$0] } }
            let results: [OnnxTensor]
            do {
                results = try Self.run(
                    step.kernel, arguments, keepsNarrowTypes: step.keepsNarrowTypes, typeSource: step.typeSource)
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
