import Foundation
import InferWireCore
import InferWireProto

/// The domains InferWire runs: the newest opsets it accepts, and the operator versions its
/// kernels were written for.
enum OpsetSupport {
    static let defaultDomainMax = OperatorVersions.newestDefault
    static let mlDomainMax = OperatorVersions.newestML
    /// onnxruntime's contrib operators ("com.microsoft") InferWire runs are all version 1.
    static let microsoftDomainMax = 1

    /// The opset through which a kernel knows its operator's versions, unless
    /// ``Operators/implementedThrough`` says more: later versions run only when they changed
    /// nothing but the element types accepted.
    static let kernelsWrittenFor = (defaultDomain: 21, mlDomain: 3)

    /// Why a node at `opset` cannot run as the operator's version there, or nil when it can.
    static func refusal(op: String, domain: String, opset: Int) -> String? {
        let key = domain.isEmpty ? op : domain + "." + op
        guard let versions = OperatorVersions.table[key] else { return nil }
        guard let effective = versions.since.last(where: { $0 <= opset }) else {
            return "\(op) does not exist at opset \(opset) (its first version is opset \(versions.since[0]))"
        }
        let through =
            Operators.implementedThrough[key]
            ?? (domain.isEmpty ? Self.kernelsWrittenFor.defaultDomain : Self.kernelsWrittenFor.mlDomain)
        let known = versions.since.last(where: { $0 <= through }) ?? 0
        let changed = versions.since.filter { $0 > known && $0 <= effective && !versions.typeOnly.contains($0) }
        guard let first = changed.first else { return nil }
        return
            "\(op)-\(first) (in opset \(opset)) changed \(op)'s inputs or attributes; InferWire runs \(op) through version \(known)"
    }
}

/// A graph input or output as declared in the model.
struct GraphValue: Sendable {
    var name: String
    var type: ElementType
    /// -1 for symbolic or missing dimensions.
    var shape: [Int]
    var hasShape: Bool
    /// False for a subgraph's value declared without a type (`type` is then meaningless).
    var isTyped = true
}

/// An ONNX model loaded into InferWire's runtime.
final class OnnxModel: InferenceModel {
    let signature: ModelSignature
    var isLightweight: Bool { false }
    let plan: ExecutionPlan
    let inputs: [GraphValue]
    let outputs: [GraphValue]

    /// Parses, validates and plans a model, then runs it once on zeros to prove every
    /// node's shapes work out.
    /// - Parameters:
    ///   - maxBatchSize: used when every input has a symbolic first dimension.
    ///   - directory: where tensors kept in external data files are read from (the version
    ///     directory; their paths must stay inside it); nil refuses external data.
    init(data: Data, name: String, maxBatchSize: Int = 1 << 16, directory: String? = nil) throws(OnnxError) {
        do {
            _ = try BLAS.load()
        } catch {
            throw OnnxError(error.message)
        }
        let model: Onnx_ModelProto
        do {
            model = try Onnx_ModelProto(serializedBytes: data)
        } catch {
            throw OnnxError("not a valid ONNX file (\(data.count) bytes): \(error)")
        }
        let loaded = try GraphLoader(model: model, externalData: directory.map { ExternalData(directory: $0) }).load()
        self.plan = loaded.plan
        self.inputs = loaded.inputs
        self.outputs = loaded.outputs

        // A symbolic or missing first dimension on every input is the batch dimension.
        let batched =
            !self.inputs.isEmpty && self.inputs.allSatisfy { $0.hasShape && !$0.shape.isEmpty && $0.shape[0] == -1 }
        let batch = batched ? maxBatchSize : 0

        // Trial runs, batch 1 and (where batched) 2, when every other dimension is known:
        // they prove that each node's shapes and types work out before any request
        // arrives. With other symbolic dimensions a guessed shape could fail a correct
        // model, so the static checks above are all such a model gets.
        // Nor does a model with inputs whose values are shapes or axes: ones are no valid guess.
        // Nor does one with a node whose success depends on values (``NodeContext/dependsOnValues``).
        let fullyKnown =
            loaded.shapeValuedInputs.isEmpty && loaded.valueDependentNodes.isEmpty
            && self.inputs.allSatisfy {
                $0.hasShape && $0.shape.dropFirst(batched ? 1 : 0).allSatisfy { $0 >= 0 }
            }
        var observed: [[[Int]]] = []
        for rows in fullyKnown ? (batched ? [1, 2] : [1]) : [] {
            let trial = try self.inputs.map { value throws(OnnxError) -> OnnxTensor in
                let shape = value.shape.enumerated().map { index, dim in dim >= 0 ? dim : rows }
                _ = try checkedCount(shape, "input '\(value.name)'")
                return OnnxTensor.ones(value.type, shape: shape)
            }
            let results: [OnnxTensor]
            do {
                results = try self.plan.run(trial)
            } catch {
                throw OnnxError("model '\(name)' fails a trial run on ones (batch \(rows)): \(error)")
            }
            for (value, result) in zip(self.outputs, results) where result.elementType != value.type {
                throw OnnxError("output '\(value.name)' is declared \(value.type) but computes \(result.elementType)")
            }
            observed.append(results.map(\.shape))
        }
        self.signature = ModelSignature(
            inputs: self.inputs.map { TensorSpec(name: $0.name, dataType: $0.type.dataType, shape: $0.shape) },
            outputs: self.outputs.enumerated().map { index, value in
                TensorSpec(
                    name: value.name, dataType: value.type.dataType,
                    shape: Self.outputShape(declared: value, observed: observed.map { $0[index] }))
            },
            maxBatchSize: batch)
    }

    /// An output's shape for the metadata: as declared, unless the trial runs computed shapes
    /// the declaration contradicts (exporters write e.g. [1] for a label answered as [N]);
    /// then as computed, with dimensions that changed with the batch symbolic.
    static func outputShape(declared: GraphValue, observed: [[Int]]) -> [Int] {
        guard let first = observed.first, observed.allSatisfy({ $0.count == first.count }) else {
            return declared.hasShape ? declared.shape : []
        }
        let computed = first.indices.map { axis in observed.allSatisfy { $0[axis] == first[axis] } ? first[axis] : -1 }
        let agrees =
            declared.hasShape && declared.shape.count == computed.count
            && zip(declared.shape, computed).allSatisfy { $0 == -1 || $0 == $1 }
        return agrees ? declared.shape : computed
    }

    func execute(_ tensors: [Tensor]) throws -> [Tensor] {
        let inputs: [OnnxTensor]
        do {
            inputs = try tensors.map { tensor throws(OnnxError) in try OnnxTensor(tensor) }
        } catch {
            throw InferWireError(code: .invalidArgument, message: error.message)
        }
        let results: [OnnxTensor]
        do {
            results = try self.plan.run(inputs)
        } catch let error as OnnxError {
            // A shape that passed the signature but not an operator (e.g. a bad free dimension).
            throw InferWireError(code: .invalidArgument, message: error.message)
        }
        return zip(self.outputs, results).map { $1.wire(name: $0.name) }
    }
}

/// Turns a `ModelProto` into an execution plan.
struct GraphLoader {
    let model: Onnx_ModelProto
    var externalData: ExternalData? = nil

    struct Loaded {
        var plan: ExecutionPlan
        var inputs: [GraphValue]
        var outputs: [GraphValue]
        /// Graph inputs whose values a node reads as a shape, axes, sizes or counts: a trial
        /// run would have to guess them.
        var shapeValuedInputs: [String]
        /// Nodes whose success depends on values (``NodeContext/dependsOnValues``).
        var valueDependentNodes: [String]
    }

    /// Input positions whose values operators read as shapes, axes, indices of dimensions,
    /// sizes or counts (nil: from that position on).
    static let shapeValuedPositions: [String: [Int]] = [
        "Reshape": [1], "Unsqueeze": [1], "Squeeze": [1], "Slice": [1, 2, 3, 4], "Expand": [1], "Tile": [1],
        "ConstantOfShape": [0], "Range": [0, 1, 2], "TopK": [1], "OneHot": [1], "Pad": [1, 2, 3], "Resize": [1, 2, 3],
        "Upsample": [1], "Split": [1], "CumSum": [1], "ReduceSum": [1], "ReduceMean": [1], "ReduceMax": [1],
        "ReduceMin": [1], "ReduceProd": [1], "ReduceSumSquare": [1], "ReduceL1": [1], "ReduceL2": [1],
        "ReduceLogSum": [1], "ReduceLogSumExp": [1], "Trilu": [1],
    ]

    func load() throws(OnnxError) -> Loaded {
        guard self.model.hasGraph else { throw OnnxError("the model has no graph") }
        guard self.model.functions.isEmpty else { throw OnnxError("model-local functions are not supported") }

        // Opsets.
        var opsets: [String: Int] = [:]
        for entry in self.model.opsetImport {
            let domain = entry.domain == "ai.onnx" ? "" : entry.domain
            opsets[domain] = Int(entry.version)
        }
        guard let defaultOpset = opsets[""] ?? (opsets.isEmpty ? nil : 1) else {
            throw OnnxError("the model imports no opset for the default domain")
        }
        if defaultOpset > OpsetSupport.defaultDomainMax {
            throw OnnxError(
                "default-domain opset \(defaultOpset) is newer than InferWire supports (\(OpsetSupport.defaultDomainMax))"
            )
        }
        if let ml = opsets["ai.onnx.ml"], ml > OpsetSupport.mlDomainMax {
            throw OnnxError("ai.onnx.ml opset \(ml) is newer than InferWire supports (\(OpsetSupport.mlDomainMax))")
        }
        if let microsoft = opsets["com.microsoft"], microsoft > OpsetSupport.microsoftDomainMax {
            throw OnnxError(
                "com.microsoft opset \(microsoft) is newer than InferWire supports (\(OpsetSupport.microsoftDomainMax))"
            )
        }
        return try self.load(graph: self.model.graph, opsets: opsets, implicit: nil)
    }

    /// Plans `graph`. A subgraph (a Scan, Loop or If body) also takes `implicit`, the
    /// outer-scope values its node reads, as inputs after its own; nil for the main graph.
    func load(graph: Onnx_GraphProto, opsets: [String: Int], implicit: [String]?) throws(OnnxError) -> Loaded {
        guard graph.sparseInitializer.isEmpty else { throw OnnxError("sparse initializers are not supported") }

        var slots: [String: Int] = [:]
        func slot(_ name: String) -> Int {
            if let s = slots[name] { return s }
            let s = slots.count
            slots[name] = s
            return s
        }

        // Initializers.
        var constants: [Int: OnnxTensor] = [:]
        for initializer in graph.initializer {
            var initializer = initializer
            if let externalData = self.externalData, initializer.dataLocation == .external {
                initializer = try externalData.inlined(initializer)
            }
            constants[slot(initializer.name)] = try OnnxTensor(proto: initializer)
        }

        // Inputs: graph inputs that are not initializers.
        var inputs: [GraphValue] = []
        for value in graph.input where slots[value.name].map({ constants[$0] == nil }) ?? true {
            inputs.append(try Self.describe(value, role: "input", subgraph: implicit != nil))
            _ = slot(value.name)
        }
        for name in implicit ?? [] { _ = slot(name) }
        let outputs = try graph.output.map { value throws(OnnxError) in
            try Self.describe(value, role: "output", subgraph: implicit != nil)
        }

        // The outer-scope values each node's subgraphs read: inputs of the node too.
        var implicitOf: [Int: [String]] = [:]
        for (index, node) in graph.node.enumerated() {
            var names: [String] = []
            for attribute in node.attribute where attribute.type == .graph || attribute.hasG {
                for name in Self.outerNames(attribute.g) where !names.contains(name) { names.append(name) }
            }
            if !names.isEmpty { implicitOf[index] = names }
        }

        // Nodes, in dependency order.
        var known = Set(slots.keys)
        var pending = Array(graph.node.enumerated())
        var ordered: [(Int, Onnx_NodeProto)] = []
        while !pending.isEmpty {
            let before = pending.count
            pending.removeAll { index, node in
                let reads = node.input + (implicitOf[index] ?? [])
                guard reads.allSatisfy({ $0.isEmpty || known.contains($0) }) else { return false }
                ordered.append((index, node))
                known.formUnion(node.output.filter { !$0.isEmpty })
                return true
            }
            if pending.count == before {
                let produced = Set(pending.flatMap { $0.1.output })
                func missing(_ entry: (Int, Onnx_NodeProto)) -> String? {
                    (entry.1.input + (implicitOf[entry.0] ?? [])).first { !$0.isEmpty && !known.contains($0) }
                }
                // An input nothing produces is the cause; if every missing input is produced by a
                // node still waiting, those nodes wait on each other.
                if let (index, node) = pending.first(where: { missing($0).map { !produced.contains($0) } ?? false }) {
                    throw OnnxError(
                        "\(Self.label(node, index: index, opset: nil)): input '\(missing((index, node)) ?? "?")' is produced by no node, initializer or graph input"
                    )
                }
                let cycle = pending.prefix(4).map { Self.label($0.1, index: $0.0, opset: nil) }.joined(separator: ", ")
                throw OnnxError(
                    "the graph has a cycle: \(pending.count) nodes wait on each other's outputs (\(cycle)\(pending.count > 4 ? ", …" : ""))"
                )
            }
        }

        var steps: [ExecutionPlan.Step] = []
        var valueDependent: [String] = []
        // Every node that cannot run, so that one load names them all.
        var problems: [String] = []
        for (index, node) in ordered {
            let domain = node.domain == "ai.onnx" ? "" : node.domain
            guard let opset = opsets[domain] else {
                problems.append(
                    "\(Self.label(node, index: index, opset: nil)): the model imports no opset for domain '\(domain)'")
                continue
            }
            let label = Self.label(node, index: index, opset: opset)
            let registry: [String: KernelFactory] =
                switch domain {
                case "": Operators.defaultDomain
                case "ai.onnx.ml": Operators.mlDomain
                case "com.microsoft": Operators.microsoftDomain
                default: [:]
                }
            guard let factory = registry[node.opType] else {
                problems.append(
                    "\(label): operator \(domain.isEmpty ? "" : domain + ".")\(node.opType) is not supported")
                continue
            }
            if let refusal = OpsetSupport.refusal(op: node.opType, domain: domain, opset: opset) {
                problems.append("\(label): \(refusal)")
                continue
            }
            let implicitNames = implicitOf[index] ?? []
            let inputSlots: [Int?] = node.input.map { $0.isEmpty ? nil : slot($0) } + implicitNames.map { slot($0) }
            var constantInputs: [Int: OnnxTensor] = [:]
            for (position, s) in inputSlots.prefix(node.input.count).enumerated() {
                if let s, let c = constants[s] { constantInputs[position] = c }
            }
            var context = NodeContext(
                label: label, attributes: Attributes(node, label: label), opset: opset,
                inputCount: node.input.count, outputCount: node.output.count, constantInputs: constantInputs)
            context.implicitInputCount = implicitNames.count
            context.loadSubgraph = { body throws(OnnxError) in
                let loaded = try self.load(graph: body, opsets: opsets, implicit: implicitNames)
                return Subgraph(
                    plan: loaded.plan, inputCount: loaded.inputs.count, outputs: loaded.outputs,
                    dependsOnValues: !loaded.valueDependentNodes.isEmpty)
            }
            let kernel: any Kernel
            do {
                kernel = try factory(&context)
                // Every attribute must have been read by the kernel: one it does not
                // understand fails the load rather than being silently ignored.
                try context.attributes.checkAllUsed()
            } catch let error as OnnxError {
                problems.append(error.message.hasPrefix(label) ? error.message : "\(label): \(error.message)")
                continue
            } catch {
                problems.append("\(label): \(error)")
                continue
            }
            if context.dependsOnValues { valueDependent.append(label) }
            let outputSlots = node.output.map { slot($0) }
            let narrowTyping = NarrowTyping(operator: domain.isEmpty ? node.opType : domain + "." + node.opType)
            // Once a node is refused, later nodes are only checked, not folded.
            guard problems.isEmpty else { continue }

            // Constant folding: a node whose inputs are all known now is computed once, here.
            let allConstant = inputSlots.allSatisfy { $0 == nil || constants[$0!] != nil }
            if allConstant && !inputSlots.isEmpty || node.opType == "Constant" {
                do {
                    let values = try narrowTyping.run(kernel, inputSlots.map { $0.flatMap { constants[$0] } })
                    for (s, v) in zip(outputSlots, values) { constants[s] = v }
                    continue
                } catch {
                    throw OnnxError("\(label): \(error)")
                }
            }
            steps.append(
                ExecutionPlan.Step(
                    kernel: kernel, label: label, inputs: inputSlots, outputs: outputSlots, release: [],
                    narrowTyping: narrowTyping))
        }

        if problems.count == 1 { throw OnnxError(problems[0]) }
        if problems.count > 1 {
            throw OnnxError("\(problems.count) nodes cannot run: " + problems.joined(separator: "; "))
        }

        let inputSlots = inputs.map { slots[$0.name]! } + (implicit ?? []).map { slots[$0]! }
        var outputSlots: [Int] = []
        for output in outputs {
            guard let s = slots[output.name], known.contains(output.name) else {
                throw OnnxError("graph output '\(output.name)' is produced by no node")
            }
            outputSlots.append(s)
        }

        // Free each intermediate after its last reader so memory is recycled within a run.
        var lastUse: [Int: Int] = [:]
        for (position, step) in steps.enumerated() {
            for s in step.inputs.compactMap({ $0 }) { lastUse[s] = position }
        }
        let keep = Set(outputSlots).union(constants.keys)
        for (s, position) in lastUse where !keep.contains(s) {
            steps[position].release.append(s)
        }

        let plan = ExecutionPlan(
            slotCount: slots.count,
            constants: constants.filter { constantSlot, _ in
                steps.contains { $0.inputs.contains(constantSlot) } || outputSlots.contains(constantSlot)
            }.map { ($0.key, $0.value) },
            inputSlots: inputSlots, outputSlots: outputSlots, steps: steps)
        let inputNames = Set(inputs.map(\.name))
        var shapeValued: [String] = []
        for node in graph.node where node.domain.isEmpty || node.domain == "ai.onnx" {
            for position in Self.shapeValuedPositions[node.opType] ?? [] where position < node.input.count {
                let name = node.input[position]
                if inputNames.contains(name) && !shapeValued.contains(name) { shapeValued.append(name) }
            }
        }
        return Loaded(
            plan: plan, inputs: inputs, outputs: outputs, shapeValuedInputs: shapeValued,
            valueDependentNodes: valueDependent)
    }

    /// The names a subgraph reads but does not define (its inputs, initializers and node
    /// outputs), nested subgraphs included: values of the scopes around it.
    static func outerNames(_ graph: Onnx_GraphProto) -> [String] {
        var defined = Set(graph.input.map(\.name)).union(graph.initializer.map(\.name))
        for node in graph.node { defined.formUnion(node.output) }
        var names: [String] = []
        func read(_ name: String) {
            if !name.isEmpty && !defined.contains(name) && !names.contains(name) { names.append(name) }
        }
        for node in graph.node {
            node.input.forEach(read)
            for attribute in node.attribute where attribute.type == .graph || attribute.hasG {
                Self.outerNames(attribute.g).forEach(read)
            }
        }
        graph.output.map(\.name).forEach(read)
        return names
    }

    static func label(_ node: Onnx_NodeProto, index: Int, opset: Int?) -> String {
        let name = node.name.isEmpty ? "#\(index)" : "'\(node.name)'"
        let domain = node.domain.isEmpty || node.domain == "ai.onnx" ? "" : node.domain + "."
        return "node \(name) (\(domain)\(node.opType)" + (opset.map { ", opset \($0)" } ?? "") + ")"
    }

    /// A graph input or output's declaration. A subgraph's may leave out the type (ONNX lets
    /// bodies inherit types from the node), which leaves it untyped.
    static func describe(_ value: Onnx_ValueInfoProto, role: String, subgraph: Bool = false) throws(OnnxError)
        -> GraphValue
    {
        if subgraph && value.type.value == nil {
            return GraphValue(name: value.name, type: .float, shape: [], hasShape: false, isTyped: false)
        }
        guard case .tensorType(let tensorType)? = value.type.value else {
            throw OnnxError(
                "graph \(role) '\(value.name)' is not a tensor (sequences and maps are not supported; export classifiers without ZipMap)"
            )
        }
        guard let type = ElementType(onnx: tensorType.elemType) else {
            throw OnnxError(
                "graph \(role) '\(value.name)' has element type \(ElementType.name(ofONNX: tensorType.elemType)), which InferWire does not run"
            )
        }
        let shape = tensorType.shape.dim.map { dim -> Int in
            if case .dimValue(let v)? = dim.value, v >= 0 { return Int(v) }
            return -1
        }
        return GraphValue(name: value.name, type: type, shape: shape, hasShape: tensorType.hasShape)
    }
}
