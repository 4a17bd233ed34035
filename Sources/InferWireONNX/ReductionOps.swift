import Foundation

/// Splits a shape around `axes` for reductions: iterates every output element and the
/// input offsets that reduce into it.
struct ReductionLayout {
    let outShape: [Int]
    let keptShape: [Int]
    /// For each output element, the base offset; plus offsets to add for each reduced element.
    let bases: [Int]
    let offsets: [Int]

    init(shape: [Int], axes: Set<Int>, keepDims: Bool) {
        let rank = shape.count
        var strides = [Int](repeating: 1, count: rank)
        for i in stride(from: rank - 2, through: 0, by: -1) { strides[i] = strides[i + 1] * shape[i + 1] }
        let keptDims = (0..<rank).filter { !axes.contains($0) }
        let reducedDims = (0..<rank).filter { axes.contains($0) }
        func enumerate(_ dims: [Int]) -> [Int] {
            var result = [0]
            for d in dims {
                var next: [Int] = []
                next.reserveCapacity(result.count * shape[d])
                for base in result { for i in 0..<shape[d] { next.append(base + i * strides[d]) } }
                result = next
            }
            return result
        }
        self.bases = enumerate(keptDims)
        self.offsets = enumerate(reducedDims)
        self.keptShape = keptDims.map { shape[$0] }
        self.outShape = keepDims ? (0..<rank).map { axes.contains($0) ? 1 : shape[$0] } : self.keptShape
    }
}

enum ReduceKind: Sendable { case sum, mean, max, min, prod, sumSquare, l1, l2, logSum, logSumExp }

func reduce(_ x: OnnxTensor, axes: [Int]?, keepDims: Bool, noopWithEmptyAxes: Bool, kind: ReduceKind) throws
    -> OnnxTensor
{
    if (axes ?? []).isEmpty && noopWithEmptyAxes { return x }
    let set = Set(try (axes ?? []).map { a throws(OnnxError) in try normalizeAxis(a, rank: x.rank) })
    let all = (axes ?? []).isEmpty ? Set(0..<x.rank) : set
    let layout = ReductionLayout(shape: x.shape, axes: all, keepDims: keepDims)
    func run<T: BinaryFloatingPoint>(_ v: [T], log: (T) -> T, exp: (T) -> T) -> [T] {
        v.withUnsafeBufferPointer { p in
            layout.bases.map { base in
                switch kind {
                case .sum: return layout.offsets.reduce(T.zero) { $0 + p[base + $1] }
                case .mean: return layout.offsets.reduce(T.zero) { $0 + p[base + $1] } / T(layout.offsets.count)
                case .max: return layout.offsets.reduce(-T.infinity) { Swift.max($0, p[base + $1]) }
                case .min: return layout.offsets.reduce(T.infinity) { Swift.min($0, p[base + $1]) }
                case .prod: return layout.offsets.reduce(T(1)) { $0 * p[base + $1] }
                case .sumSquare: return layout.offsets.reduce(T.zero) { $0 + p[base + $1] * p[base + $1] }
                case .l1: return layout.offsets.reduce(T.zero) { $0 + Swift.abs(p[base + $1]) }
                case .l2: return layout.offsets.reduce(T.zero) { $0 + p[base + $1] * p[base + $1] }.squareRoot()
                case .logSum: return log(layout.offsets.reduce(T.zero) { $0 + p[base + $1] })
                case .logSumExp:
                    let m = layout.offsets.reduce(-T.infinity) { Swift.max($0, p[base + $1]) }
                    guard m.isFinite else { return log(layout.offsets.reduce(T.zero) { $0 + exp(p[base + $1]) }) }
                    return m + log(layout.offsets.reduce(T.zero) { $0 + exp(p[base + $1] - m) })
                }
            }
        }
    }
    func runInt<T: FixedWidthInteger>(_ v: [T]) -> [T] {
        v.withUnsafeBufferPointer { p in
            layout.bases.map { base in
                switch kind {
                case .sum: return layout.offsets.reduce(T.zero) { $0 &+ p[base + $1] }
                case .mean:
                    return layout.offsets.isEmpty
                        ? 0 : layout.offsets.reduce(T.zero) { $0 &+ p[base + $1] } / T(layout.offsets.count)
                case .max: return layout.offsets.reduce(T.min) { Swift.max($0, p[base + $1]) }
                case .min: return layout.offsets.reduce(T.max) { Swift.min($0, p[base + $1]) }
                case .prod: return layout.offsets.reduce(T(1)) { $0 &* p[base + $1] }
                case .sumSquare: return layout.offsets.reduce(T.zero) { $0 &+ p[base + $1] &* p[base + $1] }
                case .l1:
                    return layout.offsets.reduce(T.zero) { $0 &+ (p[base + $1] < 0 ? 0 &- p[base + $1] : p[base + $1]) }
                case .l2:
                    let sum = layout.offsets.reduce(0.0) { $0 + Double(p[base + $1]) * Double(p[base + $1]) }
                    return T(sum.squareRoot().rounded(.towardZero))
                case .logSum:
                    let sum = layout.offsets.reduce(0.0) { $0 + Double(p[base + $1]) }
                    return T(exactly: Foundation.log(sum).rounded(.towardZero)) ?? 0
                case .logSumExp:
                    let sum = layout.offsets.reduce(0.0) { $0 + Foundation.exp(Double(p[base + $1])) }
                    return T(exactly: Foundation.log(sum).rounded(.towardZero)) ?? 0
                }
            }
        }
    }
    switch x.storage {
    case .float(let v): return OnnxTensor(shape: layout.outShape, storage: .float(run(v, log: logf, exp: expf)))
    case .double(let v):
        return OnnxTensor(shape: layout.outShape, storage: .double(run(v, log: Foundation.log, exp: Foundation.exp)))
    case .int64(let v): return OnnxTensor(shape: layout.outShape, storage: .int64(runInt(v)))
    case .int32(let v): return OnnxTensor(shape: layout.outShape, storage: .int32(runInt(v)))
    case .bool(let v) where kind == .max || kind == .min:
        // Max of booleans is any, min is all.
        let result = v.withUnsafeBufferPointer { p in
            layout.bases.map { base in
                kind == .max ? layout.offsets.contains { p[base + $0] } : layout.offsets.allSatisfy { p[base + $0] }
            }
        }
        return OnnxTensor(shape: layout.outShape, storage: .bool(result))
    default: throw OnnxError("reduction of \(x.elementType) is not supported")
    }
}

/// Softmax or LogSoftmax over `axis`; before opset 13 the input is coerced to 2-D at `axis`.
func softmax(_ x: OnnxTensor, axis: Int, legacy: Bool, log: Bool) throws -> OnnxTensor {
    let a = try normalizeAxis(axis, rank: x.rank)
    let outer: Int
    let n: Int
    let inner: Int
    if legacy {
        outer = x.shape[..<a].reduce(1, *)
        n = x.shape[a...].reduce(1, *)
        inner = 1
    } else {
        outer = x.shape[..<a].reduce(1, *)
        n = x.shape[a]
        inner = x.shape[(a + 1)...].reduce(1, *)
    }
    func run<T: BinaryFloatingPoint & Comparable>(_ v: [T], exp: (T) -> T, logf: (T) -> T) -> [T] {
        var out = v
        out.withUnsafeMutableBufferPointer { p in
            for o in 0..<outer {
                for i in 0..<inner {
                    let base = o * n * inner + i
                    var m = -T.infinity
                    for k in 0..<n { m = Swift.max(m, p[base + k * inner]) }
                    var sum = T.zero
                    for k in 0..<n {
                        let e = exp(p[base + k * inner] - m)
                        if !log { p[base + k * inner] = e }
                        sum += e
                    }
                    if log {
                        let ls = logf(sum)
                        for k in 0..<n { p[base + k * inner] = p[base + k * inner] - m - ls }
                    } else {
                        for k in 0..<n { p[base + k * inner] /= sum }
                    }
                }
            }
        }
        return out
    }
    switch x.storage {
    case .float(let v): return OnnxTensor(shape: x.shape, storage: .float(run(v, exp: expf, logf: logf)))
    case .double(let v):
        return OnnxTensor(shape: x.shape, storage: .double(run(v, exp: Foundation.exp, logf: Foundation.log)))
    default: throw OnnxError("Softmax takes float or double, got \(x.elementType)")
    }
}

/// The index of the largest (or, `minimum`, the smallest) element along `axis`.
func argMax(_ x: OnnxTensor, axis: Int, keepDims: Bool, selectLast: Bool, minimum: Bool = false) throws -> OnnxTensor {
    let a = try normalizeAxis(axis, rank: x.rank)
    let outer = x.shape[..<a].reduce(1, *)
    let n = x.shape[a]
    let inner = x.shape[(a + 1)...].reduce(1, *)
    guard n > 0 else { throw OnnxError("ArgMax over an empty axis") }
    var shape = x.shape
    if keepDims { shape[a] = 1 } else { shape.remove(at: a) }
    func run<T: Comparable>(_ v: [T]) -> [Int64] {
        var out = [Int64](repeating: 0, count: outer * inner)
        v.withUnsafeBufferPointer { p in
            for o in 0..<outer {
                for i in 0..<inner {
                    let base = o * n * inner + i
                    var best = 0
                    for k in 1..<max(n, 1) {
                        let value = p[base + k * inner]
                        let current = p[base + best * inner]
                        if (minimum ? value < current : value > current) || (selectLast && value == current) {
                            best = k
                        }
                    }
                    out[o * inner + i] = Int64(best)
                }
            }
        }
        return out
    }
    switch x.storage {
    case .float(let v): return OnnxTensor(shape: shape, int64s: run(v))
    case .double(let v): return OnnxTensor(shape: shape, int64s: run(v))
    case .int64(let v): return OnnxTensor(shape: shape, int64s: run(v))
    case .int32(let v): return OnnxTensor(shape: shape, int64s: run(v))
    default: throw OnnxError("ArgMax of \(x.elementType) is not supported")
    }
}

enum ReductionOps {
    static func register(_ r: inout [String: KernelFactory]) {
        for (name, kind, axesInputFrom) in [
            ("ReduceSum", ReduceKind.sum, 13), ("ReduceMean", .mean, 18), ("ReduceMax", .max, 18),
            ("ReduceMin", .min, 18), ("ReduceProd", .prod, 18), ("ReduceSumSquare", .sumSquare, 18),
            ("ReduceL1", .l1, 18), ("ReduceL2", .l2, 18), ("ReduceLogSum", .logSum, 18),
            ("ReduceLogSumExp", .logSumExp, 18),
        ] {
            r[name] = { c in
                try c.require(inputs: 1...2)
                let keepDims = try c.attributes.int("keepdims", default: 1) != 0
                let noop = try c.attributes.int("noop_with_empty_axes", default: 0) != 0
                let attrAxes = c.opset < axesInputFrom ? try c.attributes.ints("axes") : nil
                try c.attributes.checkAllUsed()
                return FunctionKernel { inputs in
                    let x = try input(inputs, 0, name)
                    let axes = try attrAxes ?? (inputs.count > 1 ? try inputs[1]?.integers("\(name) axes") : nil)
                    return [try reduce(x, axes: axes, keepDims: keepDims, noopWithEmptyAxes: noop, kind: kind)]
                }
            }
        }
        for (name, log) in [("Softmax", false), ("LogSoftmax", true)] {
            r[name] = { c in
                try c.require(inputs: 1...1)
                let legacy = c.opset < 13
                let axis = try c.attributes.int("axis", default: legacy ? 1 : -1)
                try c.attributes.checkAllUsed()
                return FunctionKernel { inputs in
                    [try softmax(try input(inputs, 0, name), axis: axis, legacy: legacy, log: log)]
                }
            }
        }
        for (name, minimum) in [("ArgMax", false), ("ArgMin", true)] {
            r[name] = { c in
                try c.require(inputs: 1...1)
                let axis = try c.attributes.int("axis", default: 0)
                let keepDims = try c.attributes.int("keepdims", default: 1) != 0
                let selectLast = try c.attributes.int("select_last_index", default: 0) != 0
                try c.attributes.checkAllUsed()
                return FunctionKernel { inputs in
                    [
                        try argMax(
                            try input(inputs, 0, name), axis: axis, keepDims: keepDims, selectLast: selectLast,
                            minimum: minimum)
                    ]
                }
            }
        }
    }
}
