import Foundation

/// The trees of a TreeEnsembleClassifier or TreeEnsembleRegressor, flattened into arrays
/// for a tight evaluation loop.
struct TreeForest: Sendable {
    enum Mode: UInt8 { case leq, lt, gte, gt, eq, neq, leaf }

    var feature: [Int32] = []
    var threshold: [Float] = []
    var mode: [Mode] = []
    var trueChild: [Int32] = []
    var falseChild: [Int32] = []
    var missingTracksTrue: [Bool] = []
    /// Per node: the range in `leafTargets`/`leafWeights` of its leaf contributions.
    var leafStart: [Int32] = []
    var leafCount: [Int32] = []
    var leafTargets: [Int32] = []
    var leafWeights: [Float] = []
    var roots: [Int32] = []
    var maxFeature = -1

    /// Builds the forest from the node attributes and the (tree, node, target, weight) leaf lists.
    init(_ c: inout NodeContext, leafPrefix: String) throws {
        func required<T>(_ value: T?, _ name: String) throws -> T {
            guard let value else { throw c.error("attribute '\(name)' is required") }
            return value
        }
        if c.attributes.has("nodes_values_as_tensor") || c.attributes.has("\(leafPrefix)_weights_as_tensor") {
            throw c.error("double-precision *_as_tensor attributes are not supported")
        }
        let treeIDs = try required(try c.attributes.int64s("nodes_treeids"), "nodes_treeids")
        let nodeIDs = try required(try c.attributes.int64s("nodes_nodeids"), "nodes_nodeids")
        let features = try required(try c.attributes.int64s("nodes_featureids"), "nodes_featureids")
        let modes = try required(try c.attributes.strings("nodes_modes"), "nodes_modes")
        let values = try required(try c.attributes.floats("nodes_values"), "nodes_values")
        let trues = try required(try c.attributes.int64s("nodes_truenodeids"), "nodes_truenodeids")
        let falses = try required(try c.attributes.int64s("nodes_falsenodeids"), "nodes_falsenodeids")
        let missing = try c.attributes.int64s("nodes_missing_value_tracks_true") ?? []
        _ = try c.attributes.floats("nodes_hitrates")  // statistics only
        let n = treeIDs.count
        guard
            [nodeIDs.count, features.count, modes.count, values.count, trues.count, falses.count].allSatisfy({ $0 == n }
            ),
            missing.isEmpty || missing.count == n
        else { throw c.error("the nodes_* attributes have different lengths") }

        var index: [Int64: [Int64: Int]] = [:]
        for i in 0..<n {
            guard index[treeIDs[i], default: [:]].updateValue(i, forKey: nodeIDs[i]) == nil else {
                throw c.error("tree \(treeIDs[i]) declares node \(nodeIDs[i]) twice")
            }
        }
        let modeMap: [String: Mode] = [
            "BRANCH_LEQ": .leq, "BRANCH_LT": .lt, "BRANCH_GTE": .gte, "BRANCH_GT": .gt,
            "BRANCH_EQ": .eq, "BRANCH_NEQ": .neq, "LEAF": .leaf,
        ]
        var isChild = Set<Int>()
        for i in 0..<n {
            guard let m = modeMap[modes[i]] else { throw c.error("node mode '\(modes[i])' is not supported") }
            self.mode.append(m)
            guard let feature = Int32(exactly: features[i]) else {
                throw c.error("feature id \(features[i]) is out of range")
            }
            self.feature.append(feature)
            self.threshold.append(values[i])
            self.missingTracksTrue.append(missing.isEmpty ? false : missing[i] != 0)
            if m == .leaf {
                self.trueChild.append(-1)
                self.falseChild.append(-1)
            } else {
                guard features[i] >= 0 else {
                    throw c.error("node \(nodeIDs[i]) of tree \(treeIDs[i]) has a negative feature id")
                }
                self.maxFeature = max(self.maxFeature, Int(features[i]))
                guard let t = index[treeIDs[i]]?[trues[i]], let f = index[treeIDs[i]]?[falses[i]] else {
                    throw c.error("node \(nodeIDs[i]) of tree \(treeIDs[i]) points to a missing child")
                }
                self.trueChild.append(Int32(t))
                self.falseChild.append(Int32(f))
                isChild.insert(t)
                isChild.insert(f)
            }
        }
        var seenTrees = Set<Int64>()
        for i in 0..<n where !isChild.contains(i) && seenTrees.insert(treeIDs[i]).inserted {
            self.roots.append(Int32(i))
        }

        let leafTrees = try required(try c.attributes.int64s("\(leafPrefix)_treeids"), "\(leafPrefix)_treeids")
        let leafNodes = try required(try c.attributes.int64s("\(leafPrefix)_nodeids"), "\(leafPrefix)_nodeids")
        let leafIDs = try required(try c.attributes.int64s("\(leafPrefix)_ids"), "\(leafPrefix)_ids")
        let weights = try required(try c.attributes.floats("\(leafPrefix)_weights"), "\(leafPrefix)_weights")
        guard leafNodes.count == leafTrees.count, leafIDs.count == leafTrees.count, weights.count == leafTrees.count
        else {
            throw c.error("the \(leafPrefix)_* attributes have different lengths")
        }
        var perNode = [[(Int32, Float)]](repeating: [], count: n)
        for i in 0..<leafTrees.count {
            guard let node = index[leafTrees[i]]?[leafNodes[i]] else {
                throw c.error("\(leafPrefix) weight for missing node \(leafNodes[i]) of tree \(leafTrees[i])")
            }
            guard let id = Int32(exactly: leafIDs[i]), id >= 0 else {
                throw c.error("\(leafPrefix) id \(leafIDs[i]) is out of range")
            }
            perNode[node].append((id, weights[i]))
        }
        for list in perNode {
            self.leafStart.append(Int32(self.leafTargets.count))
            self.leafCount.append(Int32(list.count))
            for (target, weight) in list {
                self.leafTargets.append(target)
                self.leafWeights.append(weight)
            }
        }
        self.leafIDs = Set(leafIDs.map { Int($0) })
        // Every tree needs a root: a node no other node points to.
        if let rootless = Set(treeIDs).subtracting(self.roots.map { treeIDs[Int($0)] }).first {
            throw c.error("tree \(rootless) has no root (every node is some node's child: a cycle)")
        }
        // Each tree must be a tree: a node reached twice means a cycle or a shared subtree,
        // which would loop forever or be walked with the wrong depth.
        var reached = [Bool](repeating: false, count: n)
        for root in self.roots {
            var stack = [Int(root)]
            while let i = stack.popLast() {
                guard !reached[i] else {
                    throw c.error("tree \(treeIDs[i]) reaches node \(nodeIDs[i]) twice (a cycle or a shared node)")
                }
                reached[i] = true
                if self.mode[i] != .leaf {
                    stack.append(Int(self.trueChild[i]))
                    stack.append(Int(self.falseChild[i]))
                }
            }
        }
        self.pack()
    }

    /// Target (or class) ids that carry weights.
    var leafIDs: Set<Int> = []

    /// One node in 16 bytes, the layout the evaluation loop walks. For a leaf, `a` and
    /// `b` are the start and count of its weights; otherwise the true and false children.
    struct PackedNode {
        var threshold: Float
        var feature: Int32
        var a: Int32
        var b: Int32
    }
    var packed: [PackedNode] = []
    var packedModes: [Mode] = []
    /// Every branch is BRANCH_LEQ and no missing value goes the true way: the common
    /// scikit-learn shape, evaluated without a switch.
    var allLessOrEqual = false

    /// Depth of each tree (root to deepest leaf), in `roots` order.
    var depths: [Int] = []

    mutating func pack() {
        // A leaf points to itself on both sides, so a walk can take a fixed number of
        // steps (the tree's depth) with no test for having arrived.
        self.packed = (0..<self.mode.count).map { i in
            self.mode[i] == .leaf
                ? PackedNode(threshold: 0, feature: 0, a: Int32(i), b: Int32(i))
                : PackedNode(
                    threshold: self.threshold[i], feature: self.feature[i], a: self.trueChild[i], b: self.falseChild[i])
        }
        self.packedModes = self.mode
        self.allLessOrEqual = zip(self.mode, self.missingTracksTrue).allSatisfy { ($0 == .leaf || $0 == .leq) && !$1 }
        // Trees were checked acyclic at load, so breadth-first levels give the depth.
        self.depths = self.roots.map { root in
            var depth = 0
            var frontier = [Int(root)]
            while true {
                let next = frontier.filter { self.mode[$0] != .leaf }.flatMap {
                    [Int(self.trueChild[$0]), Int(self.falseChild[$0])]
                }
                if next.isEmpty { return depth }
                depth += 1
                frontier = next
            }
        }
    }

    enum Aggregate: String {
        case sum = "SUM"
        case average = "AVERAGE"
        case min = "MIN"
        case max = "MAX"
    }

    /// Raw per-target scores for every row; `hasScore` marks targets some leaf reached.
    /// Each row adds its trees' weights in tree order, as onnxruntime does.
    func scores(_ x: [Float], rows: Int, columns: Int, targets: Int, aggregate: Aggregate) -> (
        scores: [Float], hasScore: [Bool]
    ) {
        var scores = [Float](repeating: 0, count: rows * targets)
        var has = [Bool](repeating: false, count: rows * targets)
        x.withUnsafeBufferPointer { px in
            self.packed.withUnsafeBufferPointer { nodes in
                self.packedModes.withUnsafeBufferPointer { modes in
                    self.leafTargets.withUnsafeBufferPointer { leafTargets in
                        self.leafWeights.withUnsafeBufferPointer { leafWeights in
                            scores.withUnsafeMutableBufferPointer { out in
                                has.withUnsafeMutableBufferPointer { seen in
                                    // Adds leaf `i`'s weights to row `r`'s scores.
                                    @inline(__always) func add(_ i: Int, _ r: Int) {
                                        let base = r * targets
                                        let start = Int(self.leafStart[i])
                                        let end = start + Int(self.leafCount[i])
                                        for k in start..<end {
                                            let t = base + Int(leafTargets[k])
                                            let w = leafWeights[k]
                                            switch aggregate {
                                            case .sum, .average: out[t] += w
                                            case .min: out[t] = seen[t] ? Swift.min(out[t], w) : w
                                            case .max: out[t] = seen[t] ? Swift.max(out[t], w) : w
                                            }
                                            seen[t] = true
                                        }
                                    }
                                    if self.allLessOrEqual {
                                        // Four rows walk each tree together: four independent chains
                                        // of loads keep the core busy while each waits on memory.
                                        var r = 0
                                        while r < rows {
                                            let lanes = Swift.min(4, rows - r)
                                            let x0 = px.baseAddress! + r * columns
                                            let x1 = lanes > 1 ? x0 + columns : x0
                                            let x2 = lanes > 2 ? x0 + 2 * columns : x0
                                            let x3 = lanes > 3 ? x0 + 3 * columns : x0
                                            for (t, root) in self.roots.enumerated() {
                                                var i0 = Int(root)
                                                var i1 = i0
                                                var i2 = i0
                                                var i3 = i0
                                                for _ in 0..<self.depths[t] {
                                                    let n0 = nodes[i0]
                                                    let n1 = nodes[i1]
                                                    let n2 = nodes[i2]
                                                    let n3 = nodes[i3]
                                                    i0 = Int(x0[Int(n0.feature)] <= n0.threshold ? n0.a : n0.b)
                                                    i1 = Int(x1[Int(n1.feature)] <= n1.threshold ? n1.a : n1.b)
                                                    i2 = Int(x2[Int(n2.feature)] <= n2.threshold ? n2.a : n2.b)
                                                    i3 = Int(x3[Int(n3.feature)] <= n3.threshold ? n3.a : n3.b)
                                                }
                                                add(i0, r)
                                                if lanes > 1 { add(i1, r + 1) }
                                                if lanes > 2 { add(i2, r + 2) }
                                                if lanes > 3 { add(i3, r + 3) }
                                            }
                                            r += lanes
                                        }
                                    } else {
                                        for r in 0..<rows {
                                            let row = px.baseAddress! + r * columns
                                            for root in self.roots {
                                                add(self.leaf(root: root, row: row, nodes: nodes, modes: modes), r)
                                            }
                                        }
                                    }
                                    if aggregate == .average {
                                        let n = Float(self.roots.count)
                                        for i in 0..<out.count { out[i] /= n }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        return (scores, has)
    }

    /// The leaf a row reaches, for trees with any node mode or missing-value rule.
    @inline(__always)
    func leaf(
        root: Int32, row: UnsafePointer<Float>, nodes: UnsafeBufferPointer<PackedNode>, modes: UnsafeBufferPointer<Mode>
    ) -> Int {
        var i = Int(root)
        while true {
            let m = modes[i]
            if m == .leaf { return i }
            let n = nodes[i]
            let x = row[Int(n.feature)]
            let goTrue: Bool
            if x.isNaN && self.missingTracksTrue[i] {
                goTrue = true
            } else {
                switch m {
                case .leq: goTrue = x <= n.threshold
                case .lt: goTrue = x < n.threshold
                case .gte: goTrue = x >= n.threshold
                case .gt: goTrue = x > n.threshold
                case .eq: goTrue = x == n.threshold
                case .neq: goTrue = x != n.threshold
                case .leaf: goTrue = false
                }
            }
            i = Int(goTrue ? n.a : n.b)
        }
    }
}

enum TreeEnsemble {
    static func register(_ r: inout [String: KernelFactory]) {
        r["TreeEnsembleRegressor"] = { c in
            try c.require(inputs: 1...1)
            let forest = try TreeForest(&c, leafPrefix: "target")
            let targets = try c.attributes.int("n_targets", default: (forest.leafIDs.max() ?? 0) + 1)
            let aggregateName = try c.attributes.string("aggregate_function", default: "SUM")
            guard let aggregate = TreeForest.Aggregate(rawValue: aggregateName) else {
                throw c.error("aggregate_function '\(aggregateName)' is not supported")
            }
            let baseValues = try c.attributes.floats("base_values") ?? []
            let transform = try PostTransform(&c)
            try c.attributes.checkAllUsed()
            guard targets > 0, targets <= max(1, forest.leafIDs.count) * 1024,
                forest.leafIDs.allSatisfy({ $0 >= 0 && $0 < targets })
            else {
                throw c.error("n_targets \(targets) does not fit the target ids")
            }
            guard baseValues.isEmpty || baseValues.count == targets else {
                throw c.error("base_values has \(baseValues.count) values for \(targets) targets")
            }
            return FunctionKernel { inputs in
                let (x, rows, columns) = try featureRows(
                    try input(inputs, 0, "TreeEnsembleRegressor"), "TreeEnsembleRegressor")
                guard forest.maxFeature < columns else {
                    throw OnnxError("the trees read feature \(forest.maxFeature); X has \(columns)")
                }
                var (scores, has) = forest.scores(
                    x, rows: rows, columns: columns, targets: targets, aggregate: aggregate)
                scores.withUnsafeMutableBufferPointer { p in
                    for r in 0..<rows {
                        // As onnxruntime does: a target no leaf reached stays 0, without its base value.
                        for t in 0..<baseValues.count where has[r * targets + t] { p[r * targets + t] += baseValues[t] }
                        transform.apply(UnsafeMutableBufferPointer(rebasing: p[(r * targets)..<((r + 1) * targets)]))
                    }
                }
                return [OnnxTensor(shape: [rows, targets], floats: scores)]
            }
        }
        r["TreeEnsembleClassifier"] = { c in
            try c.require(inputs: 1...1, outputs: 1...2)
            let forest = try TreeForest(&c, leafPrefix: "class")
            let labels = try ClassLabels.parse(&c, intsName: "classlabels_int64s")
            let baseValues = try c.attributes.floats("base_values") ?? []
            let transform = try PostTransform(&c)
            try c.attributes.checkAllUsed()
            let classes = labels.count
            guard classes > 0, forest.leafIDs.allSatisfy({ $0 >= 0 && $0 < classes }) else {
                throw c.error("class ids exceed the \(classes) class labels")
            }
            guard baseValues.isEmpty || baseValues.count == classes || (classes == 2 && baseValues.count == 1) else {
                throw c.error("base_values has \(baseValues.count) values for \(classes) classes")
            }
            // Two labels but weights for one class only: a binary model scoring one side.
            let binaryCase = classes == 2 && forest.leafIDs.count == 1
            let allPositive = forest.leafWeights.allSatisfy { $0 >= 0 }
            return FunctionKernel { inputs in
                let (x, rows, columns) = try featureRows(
                    try input(inputs, 0, "TreeEnsembleClassifier"), "TreeEnsembleClassifier")
                guard forest.maxFeature < columns else {
                    throw OnnxError("the trees read feature \(forest.maxFeature); X has \(columns)")
                }
                let (raw, has) = forest.scores(x, rows: rows, columns: columns, targets: classes, aggregate: .sum)
                var out = [Float](repeating: 0, count: rows * classes)
                var winners = [Int](repeating: 0, count: rows)
                for r in 0..<rows {
                    let base = r * classes
                    if classes > 2 {
                        var scores = Array(raw[base..<(base + classes)])
                        var scored = Array(has[base..<(base + classes)])
                        for k in 0..<baseValues.count {
                            scores[k] = scored[k] ? scores[k] + baseValues[k] : baseValues[k]
                            scored[k] = true
                        }
                        var best = -1
                        for k in 0..<classes where scored[k] && (best < 0 || scores[k] > scores[best]) { best = k }
                        winners[r] = max(best, 0)
                        scores.withUnsafeMutableBufferPointer { transform.apply($0) }
                        for k in 0..<classes { out[base + k] = scores[k] }
                        continue
                    }
                    // Two classes: onnxruntime's rules, which differ by how many classes
                    // carry weights and whether any weight is negative.
                    var s0 = raw[base]
                    var s1 = raw[base + 1]
                    let has0 = has[base]
                    let has1 = has[base + 1]
                    var additional = -1
                    // Two entries stay unless class 1 has no score and there are not two base values.
                    var single = false
                    if baseValues.count == 2 {
                        if has1 {
                            s1 = baseValues[1] + s0
                            s0 = -s1
                        } else {
                            // Binary as multiclass: both shift; class 1 still counts as unscored.
                            s1 += baseValues[1]
                            s0 += baseValues[0]
                        }
                    } else if baseValues.count == 1 {
                        s0 += baseValues[0]
                        single = !has1
                    } else {
                        additional = 3
                        single = !has1
                    }
                    let positiveWeight = has1 ? s1 : (has0 ? s0 : 0)
                    let positive = allPositive ? positiveWeight > 0.5 : positiveWeight > 0
                    winners[r] = positive ? 1 : 0
                    if binaryCase { additional = allPositive ? (positive ? 0 : 1) : (positive ? 2 : 3) }
                    if !single {
                        var pair = [s0, s1]
                        pair.withUnsafeMutableBufferPointer { transform.apply($0) }
                        out[base] = pair[0]
                        out[base + 1] = pair[1]
                    } else if transform == .probit {
                        out[base] = Float(2.0.squareRoot() * inverseErf(2 * Double(s0) - 1))
                    } else {
                        switch additional {
                        case 0, 1:
                            out[base] = 1 - s0
                            out[base + 1] = s0
                        case 2, 3:
                            if transform == .logistic {
                                out[base] = sigmoid(-s0)
                                out[base + 1] = sigmoid(s0)
                            } else {
                                out[base] = -s0
                                out[base + 1] = s0
                            }
                        default:
                            out[base] = s0
                        }
                    }
                }
                // Labels are the class labels at the winning index. (onnxruntime returns the
                // literal 1 or 0 in the two-class case even when the int64 labels are others.)
                return [labels.tensor(winners), OnnxTensor(shape: [rows, classes], floats: out)]
            }
        }
    }
}
