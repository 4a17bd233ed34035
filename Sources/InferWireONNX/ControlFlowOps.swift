/// Scan, If and Loop: operators that run subgraphs. Each body is planned at load time like
/// the main graph; the outer-scope values it reads arrive after the node's declared inputs.
enum ControlFlowOps {
    /// A Loop without a trip count runs until its condition turns false; past this many
    /// iterations it fails instead of holding a request forever.
    static let maxLoopIterations = 1 << 20

    static func register(_ r: inout [String: KernelFactory]) {
        r["Scan"] = { c in try ScanKernel(&c) }
        r["If"] = { c in try IfKernel(&c) }
        r["Loop"] = { c in try LoopKernel(&c) }
    }
}

/// Scan (version 9 and later): runs the body once per slice of the scan inputs, carrying
/// state variables from one iteration to the next and stacking the per-iteration outputs.
/// Scan-8 adds a batch axis in front of every input and output and a first input,
/// sequence_lens: it runs as Scan-9 once per batch row.
struct ScanKernel: Kernel {
    let body: Subgraph
    let stateCount: Int
    let scanInputCount: Int
    let inputAxes: [Int]
    let inputReversed: [Bool]
    let outputAxes: [Int]
    let outputReversed: [Bool]
    /// Scan-8: inputs and outputs carry a batch axis; the first input is sequence_lens.
    let batched: Bool

    init(_ c: inout NodeContext) throws {
        self.batched = c.opset < 9
        guard let graph = try c.attributes.graph("body") else { throw c.error("needs a body graph") }
        let declared = c.inputCount - (self.batched ? 1 : 0)
        guard let m = try c.attributes.int("num_scan_inputs"), m >= 1, m <= declared else {
            throw c.error("needs num_scan_inputs between 1 and its input count")
        }
        self.body = try c.loadSubgraph(graph)
        c.dependsOnValues = self.body.dependsOnValues
        self.scanInputCount = m
        self.stateCount = declared - m
        guard self.body.inputCount == declared else {
            throw c.error("its body takes \(self.body.inputCount) inputs, but the node passes \(declared)")
        }
        let scanOutputs = self.body.outputs.count - self.stateCount
        guard scanOutputs >= 0, c.outputCount == self.body.outputs.count else {
            throw c.error(
                "its body gives \(self.body.outputs.count) outputs; the node has \(c.outputCount) and \(self.stateCount) states"
            )
        }
        func list(_ name: String, count: Int) throws -> [Int] {
            let values = try c.attributes.ints(name) ?? Array(repeating: 0, count: count)
            guard values.count == count else { throw c.error("\(name) needs \(count) values, got \(values.count)") }
            return values
        }
        if self.batched {
            self.inputAxes = Array(repeating: 0, count: m)
            self.inputReversed = try list("directions", count: m).map { $0 == 1 }
            self.outputAxes = Array(repeating: 0, count: scanOutputs)
            self.outputReversed = Array(repeating: false, count: scanOutputs)
        } else {
            self.inputAxes = try list("scan_input_axes", count: m)
            self.inputReversed = try list("scan_input_directions", count: m).map { $0 == 1 }
            self.outputAxes = try list("scan_output_axes", count: scanOutputs)
            self.outputReversed = try list("scan_output_directions", count: scanOutputs).map { $0 == 1 }
        }
    }

    func run(_ inputs: [OnnxTensor?]) throws -> [OnnxTensor] {
        guard self.batched else { return try self.scan(inputs) }
        // Scan-8: each batch row scanned on its own, the results stacked again.
        let declared = self.stateCount + self.scanInputCount
        let values = try (1...declared).map { try input(inputs, $0, "Scan") }
        guard let rows = values.first?.shape.first, values.allSatisfy({ $0.shape.first == rows }) else {
            throw OnnxError("Scan-8's inputs must share their batch dimension")
        }
        if let lengths = inputs[0] {
            let full = values[self.stateCount].rank > 1 ? values[self.stateCount].shape[1] : 0
            guard try lengths.integers("Scan's sequence_lens").allSatisfy({ $0 == full }) else {
                throw OnnxError("Scan-8 with sequence_lens shorter than the sequence is not supported")
            }
        }
        var perRow: [[OnnxTensor]] = []
        for row in 0..<rows {
            let sliced: [OnnxTensor?] = try values.map { try slice($0, axis: 0, at: row) }
            perRow.append(try self.scan(sliced + Array(inputs[(declared + 1)...])))
        }
        return try (0..<self.body.outputs.count).map { k in
            try stack(perRow.map { $0[k] }, axis: 0, empty: self.body.outputs[k], what: "Scan output \(k)")
        }
    }

    /// Scan-9's semantics: `inputs` are the states, the scan inputs, then the implicit values.
    private func scan(_ inputs: [OnnxTensor?]) throws -> [OnnxTensor] {
        let declared = self.stateCount + self.scanInputCount
        var states = try (0..<self.stateCount).map { try input(inputs, $0, "Scan") }
        let scans = try (0..<self.scanInputCount).map { try input(inputs, self.stateCount + $0, "Scan") }
        let implicit = inputs[declared...]
        var axes: [Int] = []
        var length: Int?
        for (index, scan) in scans.enumerated() {
            let axis = try normalizeAxis(self.inputAxes[index], rank: scan.rank, "scan_input_axes")
            axes.append(axis)
            if let length, length != scan.shape[axis] {
                throw OnnxError("Scan inputs differ in length: \(length) and \(scan.shape[axis])")
            }
            length = scan.shape[axis]
        }
        let iterations = length ?? 0
        var perIteration: [[OnnxTensor]] = Array(repeating: [], count: self.outputAxes.count)
        var held = HeldElements()
        for t in 0..<iterations {
            var arguments = states
            for (index, scan) in scans.enumerated() {
                arguments.append(
                    try slice(scan, axis: axes[index], at: self.inputReversed[index] ? iterations - 1 - t : t))
            }
            let results = try self.body.run(arguments, implicit: implicit)
            states = Array(results.prefix(self.stateCount))
            for k in perIteration.indices { perIteration[k].append(results[self.stateCount + k]) }
            try held.add(results[self.stateCount...], "Scan")
        }
        var outputs = states
        for (k, parts) in perIteration.enumerated() {
            let ordered = self.outputReversed[k] ? Array(parts.reversed()) : parts
            outputs.append(
                try stack(
                    ordered, axis: self.outputAxes[k], empty: self.body.outputs[self.stateCount + k],
                    what: "Scan output \(k)"))
        }
        return outputs
    }
}

/// If: runs one of two branches on the outer scope's values.
struct IfKernel: Kernel {
    let thenBranch: Subgraph
    let elseBranch: Subgraph

    init(_ c: inout NodeContext) throws {
        try c.require(inputs: 1...1, outputs: 1...Int.max)
        guard let thenGraph = try c.attributes.graph("then_branch"),
            let elseGraph = try c.attributes.graph("else_branch")
        else { throw c.error("needs then_branch and else_branch graphs") }
        self.thenBranch = try c.loadSubgraph(thenGraph)
        self.elseBranch = try c.loadSubgraph(elseGraph)
        // Which branch runs depends on values.
        c.dependsOnValues = true
        for (name, branch) in [("then_branch", self.thenBranch), ("else_branch", self.elseBranch)] {
            guard branch.inputCount == 0 else { throw c.error("\(name) must take no inputs") }
            guard branch.outputs.count == c.outputCount else {
                throw c.error("\(name) gives \(branch.outputs.count) outputs; the node has \(c.outputCount)")
            }
        }
    }

    func run(_ inputs: [OnnxTensor?]) throws -> [OnnxTensor] {
        let condition = try input(inputs, 0, "If")
        guard case .bool(let values) = condition.storage, values.count == 1 else {
            throw OnnxError("If's condition must be one bool, got \(condition.elementType) \(condition.shape)")
        }
        return try (values[0] ? self.thenBranch : self.elseBranch).run([], implicit: inputs[1...])
    }
}

/// Loop: runs the body while the trip count and the condition allow, carrying values and
/// stacking scan outputs along a new first axis.
struct LoopKernel: Kernel {
    let body: Subgraph
    let carriedCount: Int
    let declaredInputs: Int

    init(_ c: inout NodeContext) throws {
        guard c.opset >= 11 else {
            throw c.error("Loop before version 11 is not supported; re-export with opset 11 or newer")
        }
        try c.require(inputs: 2...Int.max, outputs: 0...Int.max)
        guard let graph = try c.attributes.graph("body") else { throw c.error("needs a body graph") }
        self.body = try c.loadSubgraph(graph)
        // How often the body runs depends on values.
        c.dependsOnValues = true
        self.declaredInputs = c.inputCount
        self.carriedCount = c.inputCount - 2
        guard self.body.inputCount == self.carriedCount + 2 else {
            throw c.error("its body takes \(self.body.inputCount) inputs; the node carries \(self.carriedCount) values")
        }
        guard self.body.outputs.count >= self.carriedCount + 1, c.outputCount == self.body.outputs.count - 1 else {
            throw c.error("its body gives \(self.body.outputs.count) outputs; the node has \(c.outputCount)")
        }
    }

    func run(_ inputs: [OnnxTensor?]) throws -> [OnnxTensor] {
        var tripCount: Int?
        if let m = inputs[0] {
            guard let value = try m.integers("Loop's trip count").first, m.count == 1 else {
                throw OnnxError("Loop's trip count must be one integer")
            }
            tripCount = max(value, 0)
        }
        var condition = true
        if let cond = inputs[1] {
            guard case .bool(let values) = cond.storage, values.count == 1 else {
                throw OnnxError("Loop's condition must be one bool, got \(cond.elementType) \(cond.shape)")
            }
            condition = values[0]
        }
        var carried = try (0..<self.carriedCount).map { try input(inputs, 2 + $0, "Loop") }
        let implicit = inputs[self.declaredInputs...]
        let scanCount = self.body.outputs.count - 1 - self.carriedCount
        var perIteration: [[OnnxTensor]] = Array(repeating: [], count: scanCount)
        var held = HeldElements()
        var iteration = 0
        while condition && iteration < (tripCount ?? Int.max) {
            guard iteration < ControlFlowOps.maxLoopIterations else {
                throw OnnxError("Loop ran more than \(ControlFlowOps.maxLoopIterations) iterations")
            }
            let results = try self.body.run(
                [OnnxTensor(shape: [], int64s: [Int64(iteration)]), OnnxTensor(shape: [], storage: .bool([condition]))]
                    + carried, implicit: implicit)
            guard case .bool(let next) = results[0].storage, next.count == 1 else {
                throw OnnxError("Loop's body must give one bool condition, got \(results[0].elementType)")
            }
            condition = next[0]
            carried = Array(results[1..<(1 + self.carriedCount)])
            for k in 0..<scanCount { perIteration[k].append(results[1 + self.carriedCount + k]) }
            try held.add(results[(1 + self.carriedCount)...], "Loop")
            iteration += 1
        }
        var outputs = carried
        for (k, parts) in perIteration.enumerated() {
            outputs.append(
                try stack(parts, axis: 0, empty: self.body.outputs[1 + self.carriedCount + k], what: "Loop output \(k)")
            )
        }
        return outputs
    }
}

/// Scan outputs are held until the last iteration stacks them: counted as they come and
/// bounded like one tensor, so a long run fails before it exhausts memory.
struct HeldElements {
    private var total = 0

    mutating func add(_ outputs: ArraySlice<OnnxTensor>, _ op: String) throws {
        for output in outputs { self.total += output.count }
        guard self.total <= OnnxLimits.maxElements else {
            throw OnnxError("\(op)'s scan outputs exceed \(OnnxLimits.maxElements) elements")
        }
    }
}

/// Element `index` of `tensor` along `axis`, that axis removed.
func slice(_ tensor: OnnxTensor, axis: Int, at index: Int) throws -> OnnxTensor {
    struct AxisSlice: ArrayTransform {
        let outer: Int
        let length: Int
        let inner: Int
        let index: Int
        func apply<T>(_ values: [T]) throws -> [T] {
            var out: [T] = []
            out.reserveCapacity(self.outer * self.inner)
            for o in 0..<self.outer {
                let start = (o * self.length + self.index) * self.inner
                out.append(contentsOf: values[start..<(start + self.inner)])
            }
            return out
        }
    }
    var shape = tensor.shape
    let length = shape.remove(at: axis)
    let transform = AxisSlice(
        outer: tensor.shape[..<axis].reduce(1, *), length: length, inner: tensor.shape[(axis + 1)...].reduce(1, *),
        index: index)
    return OnnxTensor(shape: shape, storage: try tensor.storage.transformed(transform), narrow: tensor.narrow)
}

/// Stacks equally shaped tensors along a new `axis`. With no parts, an empty tensor of the
/// body output's declared type (its unknown dimensions zero).
func stack(_ parts: [OnnxTensor], axis: Int, empty declared: GraphValue, what: String) throws -> OnnxTensor {
    guard let first = parts.first else {
        guard declared.isTyped else {
            throw OnnxError("\(what): no iterations ran, and the body does not declare the output's type")
        }
        let shape = [0] + declared.shape.map { max($0, 0) }
        return OnnxTensor.ones(declared.type, shape: shape)
    }
    let a = try normalizeAxis(axis, rank: first.rank + 1, "\(what)'s axis")
    for part in parts where part.shape != first.shape || part.elementType != first.elementType {
        throw OnnxError(
            "\(what) changes between iterations: \(first.elementType) \(first.shape) and \(part.elementType) \(part.shape)"
        )
    }
    var unit = first.shape
    unit.insert(1, at: a)
    var result = try concatenate(parts.map { OnnxTensor(shape: unit, storage: $0.storage) }, axis: a)
    result.narrow = first.narrow
    return result
}
