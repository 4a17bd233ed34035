import Foundation

/// Operators that build, repeat, split or mask tensors: Size, ConstantOfShape, Range, Expand,
/// Tile, Split, Trilu, CumSum; and LayerNormalization.
enum TensorOps {
    static func register(_ r: inout [String: KernelFactory]) {
        r["Size"] = { c in
            try c.require(inputs: 1...1)
            return FunctionKernel { inputs in
                [OnnxTensor(shape: [], int64s: [Int64(try input(inputs, 0, "Size").count)])]
            }
        }
        r["ConstantOfShape"] = { c in
            try c.require(inputs: 1...1)
            let value = try c.attributes.tensor("value") ?? OnnxTensor(shape: [1], floats: [0])
            guard value.count == 1 else { throw c.error("value must hold one element, has \(value.count)") }
            try c.attributes.checkAllUsed()
            return FunctionKernel { inputs in
                let shape = try input(inputs, 0, "ConstantOfShape").integers("ConstantOfShape's shape")
                let count = try checkedCount(shape, "ConstantOfShape's output")
                return [try GatherIndices(indices: [Int](repeating: 0, count: count)).tensor(from: value, shape: shape)]
            }
        }
        r["Range"] = { c in
            try c.require(inputs: 3...3)
            // Range-27's stash_type sets the precision of FP16/BF16 sums; FP32 and FP64 compute as they are.
            _ = try c.attributes.int("stash_type")
            try c.attributes.checkAllUsed()
            return FunctionKernel { inputs in
                [
                    try range(
                        try input(inputs, 0, "Range"), try input(inputs, 1, "Range"), try input(inputs, 2, "Range"))
                ]
            }
        }
        r["Expand"] = { c in
            try c.require(inputs: 2...2)
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "Expand")
                let target = try input(inputs, 1, "Expand").integers("Expand's shape")
                let shape = try broadcastShape(x.shape, target)
                return [
                    try GatherIndices(indices: try broadcastIndices(from: x.shape, to: shape)).tensor(
                        from: x, shape: shape)
                ]
            }
        }
        r["Tile"] = { c in
            try c.require(inputs: 2...2)
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "Tile")
                let repeats = try input(inputs, 1, "Tile").integers("Tile's repeats")
                guard repeats.count == x.rank, repeats.allSatisfy({ $0 >= 0 }) else {
                    throw OnnxError("Tile's repeats \(repeats) must be \(x.rank) non-negative counts")
                }
                let shape = zip(x.shape, repeats).map { $0 * $1 }
                let count = try checkedCount(shape, "Tile's output")
                var indices: [Int] = []
                indices.reserveCapacity(count)
                forEachIndex(shape) { index in
                    indices.append(flatIndex(zip(index, x.shape).map { $0 % $1 }, shape: x.shape))
                }
                return [try GatherIndices(indices: indices).tensor(from: x, shape: shape)]
            }
        }
        r["Split"] = { c in
            try c.require(inputs: 1...2, outputs: 1...Int.max)
            let axis = try c.attributes.int("axis", default: 0)
            let attrSplit = c.opset < 13 ? try c.attributes.ints("split") : nil
            let numOutputs = try c.attributes.int("num_outputs")
            try c.attributes.checkAllUsed()
            let outputs = c.outputCount
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "Split")
                let a = try normalizeAxis(axis, rank: x.rank)
                let given = try attrSplit ?? (inputs.count > 1 ? try inputs[1]?.integers("Split's split") : nil)
                let n = x.shape[a]
                let sizes: [Int]
                if let given {
                    guard given.count == outputs, given.allSatisfy({ $0 >= 0 }), given.reduce(0, +) == n else {
                        throw OnnxError("Split sizes \(given) do not split \(n) into \(outputs) parts")
                    }
                    sizes = given
                } else {
                    let parts = numOutputs ?? outputs
                    guard parts == outputs, parts > 0 else {
                        throw OnnxError("Split into \(parts) parts, but the node has \(outputs) outputs")
                    }
                    // Equal parts, the last smaller when they do not divide (opset 18).
                    let size = (n + parts - 1) / parts
                    sizes = (0..<parts).map { max(0, min(size, n - $0 * size)) }
                }
                var start = 0
                return try sizes.map { size in
                    defer { start += size }
                    return try sliceAxis(x, axis: a, start: start, count: size)
                }
            }
        }
        r["Trilu"] = { c in
            try c.require(inputs: 1...2)
            let upper = try c.attributes.int("upper", default: 1) != 0
            try c.attributes.checkAllUsed()
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "Trilu")
                let k = inputs.count > 1 ? try inputs[1]?.integers("Trilu's k").first ?? 0 : 0
                return [try trilu(x, k: k, upper: upper)]
            }
        }
        r["CumSum"] = { c in
            try c.require(inputs: 2...2)
            let exclusive = try c.attributes.int("exclusive", default: 0) != 0
            let reverse = try c.attributes.int("reverse", default: 0) != 0
            try c.attributes.checkAllUsed()
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "CumSum")
                guard let axis = try input(inputs, 1, "CumSum").integers("CumSum's axis").first else {
                    throw OnnxError("CumSum's axis is empty")
                }
                return [
                    try cumulativeSum(
                        x, axis: try normalizeAxis(axis, rank: x.rank), exclusive: exclusive, reverse: reverse)
                ]
            }
        }
        r["LayerNormalization"] = { c in
            try c.require(inputs: 2...3, outputs: 1...3)
            let axis = try c.attributes.int("axis", default: -1)
            let epsilon = Double(try c.attributes.float("epsilon", default: 1e-5))
            _ = try c.attributes.int("stash_type")  // statistics are computed in Double either way
            try c.attributes.checkAllUsed()
            let outputs = c.outputCount
            return FunctionKernel { inputs in
                try layerNormalization(
                    try input(inputs, 0, "LayerNormalization"), scale: try input(inputs, 1, "LayerNormalization"),
                    bias: inputs.count > 2 ? inputs[2] : nil, axis: axis, epsilon: epsilon, outputs: outputs)
            }
        }
    }
}

extension GatherIndices {
    /// The gathered elements of `x` as a tensor of `shape`.
    func tensor(from x: OnnxTensor, shape: [Int]) throws -> OnnxTensor {
        OnnxTensor(shape: shape, storage: try x.storage.transformed(self))
    }
}

/// Calls `body` with every index of `shape`, in row-major order.
func forEachIndex(_ shape: [Int], _ body: ([Int]) -> Void) {
    let count = shape.reduce(1, *)
    guard count > 0 else { return }
    var index = [Int](repeating: 0, count: shape.count)
    for _ in 0..<count {
        body(index)
        var d = shape.count - 1
        while d >= 0 {
            index[d] += 1
            if index[d] < shape[d] { break }
            index[d] = 0
            d -= 1
        }
    }
}

func flatIndex(_ index: [Int], shape: [Int]) -> Int {
    var flat = 0
    for (i, n) in zip(index, shape) { flat = flat * n + i }
    return flat
}

/// For each element of `shape`, the flat index of the element of `source` it broadcasts from.
func broadcastIndices(from source: [Int], to shape: [Int]) throws -> [Int] {
    let count = try checkedCount(shape, "broadcast output")
    let strides = broadcastStrides(source, to: shape)
    var indices: [Int] = []
    indices.reserveCapacity(count)
    forEachIndex(shape) { index in indices.append(zip(index, strides).reduce(0) { $0 + $1.0 * $1.1 }) }
    return indices
}

/// `count` entries of `x` along `axis` from `start`.
func sliceAxis(_ x: OnnxTensor, axis: Int, start: Int, count: Int) throws -> OnnxTensor {
    var shape = x.shape
    shape[axis] = count
    let outer = x.shape[..<axis].reduce(1, *)
    let inner = x.shape[(axis + 1)...].reduce(1, *)
    var indices: [Int] = []
    indices.reserveCapacity(outer * count * inner)
    for o in 0..<outer {
        for k in start..<(start + count) {
            let base = (o * x.shape[axis] + k) * inner
            indices.append(contentsOf: base..<(base + inner))
        }
    }
    return try GatherIndices(indices: indices).tensor(from: x, shape: shape)
}

/// Range(start, limit, delta) of scalars of one numeric type.
func range(_ start: OnnxTensor, _ limit: OnnxTensor, _ delta: OnnxTensor) throws -> OnnxTensor {
    guard let s = doubles(start)?.first, let l = doubles(limit)?.first, let d = doubles(delta)?.first else {
        throw OnnxError("Range takes three numeric scalars")
    }
    guard d != 0 else { throw OnnxError("Range's delta is zero") }
    let n = max(0, Int(((l - s) / d).rounded(.up)))
    guard n <= 1 << 28 else { throw OnnxError("Range would hold \(n) elements") }
    switch start.storage {
    case .float(let v):
        let (first, step) = (v[0], delta.floats![0])
        return OnnxTensor(shape: [n], floats: (0..<n).map { first + Float($0) * step })
    case .double: return OnnxTensor(shape: [n], doubles: (0..<n).map { s + Double($0) * d })
    case .int64(let v):
        let step = delta.int64s![0]
        return OnnxTensor(shape: [n], int64s: (0..<n).map { v[0] &+ Int64($0) &* step })
    case .int32(let v):
        guard case .int32(let steps) = delta.storage else { throw OnnxError("Range's inputs differ in type") }
        return OnnxTensor(shape: [n], storage: .int32((0..<n).map { v[0] &+ Int32($0) &* steps[0] }))
    default: throw OnnxError("Range takes numeric scalars, got \(start.elementType)")
    }
}

/// Zeroes the elements below (upper) or above (lower) the k-th diagonal of the last two axes.
func trilu(_ x: OnnxTensor, k: Int, upper: Bool) throws -> OnnxTensor {
    guard x.rank >= 2 else { throw OnnxError("Trilu needs rank 2 or more, got \(x.shape)") }
    let rows = x.shape[x.rank - 2]
    let columns = x.shape[x.rank - 1]
    func keep(_ flat: Int) -> Bool {
        let j = flat % columns
        let i = (flat / columns) % rows
        return upper ? j - i >= k : j - i <= k
    }
    func mask<T>(_ v: [T], zero: T) -> [T] { v.enumerated().map { keep($0.offset) ? $0.element : zero } }
    switch x.storage {
    case .float(let v): return OnnxTensor(shape: x.shape, storage: .float(mask(v, zero: 0)))
    case .double(let v): return OnnxTensor(shape: x.shape, storage: .double(mask(v, zero: 0)))
    case .int64(let v): return OnnxTensor(shape: x.shape, storage: .int64(mask(v, zero: 0)))
    case .int32(let v): return OnnxTensor(shape: x.shape, storage: .int32(mask(v, zero: 0)))
    case .bool(let v): return OnnxTensor(shape: x.shape, storage: .bool(mask(v, zero: false)))
    default: throw OnnxError("Trilu does not take \(x.elementType)")
    }
}

func cumulativeSum(_ x: OnnxTensor, axis: Int, exclusive: Bool, reverse: Bool) throws -> OnnxTensor {
    let n = x.shape[axis]
    let outer = x.shape[..<axis].reduce(1, *)
    let inner = x.shape[(axis + 1)...].reduce(1, *)
    func run<T: AdditiveArithmetic>(_ v: [T]) -> [T] {
        var out = v
        for o in 0..<outer {
            for i in 0..<inner {
                var sum = T.zero
                for step in 0..<n {
                    let k = reverse ? n - 1 - step : step
                    let at = (o * n + k) * inner + i
                    if exclusive {
                        out[at] = sum
                        sum += v[at]
                    } else {
                        sum += v[at]
                        out[at] = sum
                    }
                }
            }
        }
        return out
    }
    switch x.storage {
    case .float(let v): return OnnxTensor(shape: x.shape, storage: .float(run(v)))
    case .double(let v): return OnnxTensor(shape: x.shape, storage: .double(run(v)))
    case .int64(let v): return OnnxTensor(shape: x.shape, storage: .int64(run(v)))
    case .int32(let v): return OnnxTensor(shape: x.shape, storage: .int32(run(v)))
    default: throw OnnxError("CumSum does not take \(x.elementType)")
    }
}

/// LayerNormalization over the axes from `axis` on: Y, and optionally the mean and the
/// inverse standard deviation (with the reduced axes kept as 1).
func layerNormalization(
    _ x: OnnxTensor, scale: OnnxTensor, bias: OnnxTensor?, axis: Int, epsilon: Double, outputs: Int
) throws -> [OnnxTensor] {
    let a = try normalizeAxis(axis, rank: x.rank)
    let groups = x.shape[..<a].reduce(1, *)
    let size = x.shape[a...].reduce(1, *)
    let normalizedShape = Array(x.shape[a...])
    let scaleIndex = try broadcastIndices(from: scale.shape, to: normalizedShape)
    let biasIndex = try bias.map { try broadcastIndices(from: $0.shape, to: normalizedShape) }
    guard let values = doubles(x), let gamma = doubles(scale) else {
        throw OnnxError("LayerNormalization takes float or double, got \(x.elementType)")
    }
    let beta = bias.flatMap(doubles)
    var y = [Double](repeating: 0, count: values.count)
    var means = [Double](repeating: 0, count: groups)
    var inverse = [Double](repeating: 0, count: groups)
    for g in 0..<groups {
        let base = g * size
        var mean = 0.0
        for i in 0..<size { mean += values[base + i] }
        mean /= Double(max(size, 1))
        var variance = 0.0
        for i in 0..<size { variance += (values[base + i] - mean) * (values[base + i] - mean) }
        variance /= Double(max(size, 1))
        let inv = 1 / (variance + epsilon).squareRoot()
        means[g] = mean
        inverse[g] = inv
        for i in 0..<size {
            var v = (values[base + i] - mean) * inv * gamma[scaleIndex[i]]
            if let beta, let biasIndex { v += beta[biasIndex[i]] }
            y[base + i] = v
        }
    }
    let statShape = Array(x.shape[..<a]) + [Int](repeating: 1, count: x.rank - a)
    func typed(_ v: [Double], _ shape: [Int]) -> OnnxTensor {
        if case .float = x.storage { return OnnxTensor(shape: shape, floats: v.map { Float($0) }) }
        return OnnxTensor(shape: shape, doubles: v)
    }
    return Array([typed(y, x.shape), typed(means, statShape), typed(inverse, statShape)].prefix(outputs))
}
