/// Bounds on what one tensor may hold, so a hostile model or request gets an error
/// instead of an allocation that aborts the process.
enum OnnxLimits {
    /// Elements in one tensor: 2^28 (1 GiB of FP32).
    static let maxElements = 1 << 28
}

/// The element count of `shape`, or an error on a negative dimension, on overflow, or
/// past ``OnnxLimits/maxElements`` (zero dimensions do not hide an overflowing rest).
func checkedCount(_ shape: [Int], _ what: @autoclosure () -> String = "tensor") throws(OnnxError) -> Int {
    var product = 1
    var hasZero = false
    for d in shape {
        guard d >= 0 else { throw OnnxError("\(what()) has a negative dimension in \(shape)") }
        if d == 0 {
            hasZero = true
            continue
        }
        let (p, overflow) = product.multipliedReportingOverflow(by: d)
        guard !overflow, p <= OnnxLimits.maxElements else {
            throw OnnxError("\(what()) of shape \(shape) exceeds \(OnnxLimits.maxElements) elements")
        }
        product = p
    }
    return hasZero ? 0 : product
}

/// numpy-style broadcasting of two shapes.
func broadcastShape(_ a: [Int], _ b: [Int]) throws(OnnxError) -> [Int] {
    let rank = max(a.count, b.count)
    var out = [Int](repeating: 1, count: rank)
    for i in 0..<rank {
        let da = i < rank - a.count ? 1 : a[i - (rank - a.count)]
        let db = i < rank - b.count ? 1 : b[i - (rank - b.count)]
        guard da == db || da == 1 || db == 1 else {
            throw OnnxError("shapes \(a) and \(b) do not broadcast")
        }
        out[i] = da == 1 ? db : da
    }
    _ = try checkedCount(out, "broadcast result")
    return out
}

/// Row-major strides of `shape` aligned to `rank` dimensions, 0 where the dimension broadcasts.
func broadcastStrides(_ shape: [Int], to out: [Int]) -> [Int] {
    let offset = out.count - shape.count
    var strides = [Int](repeating: 0, count: out.count)
    var step = 1
    for i in stride(from: shape.count - 1, through: 0, by: -1) {
        strides[i + offset] = shape[i] == 1 && out[i + offset] != 1 ? 0 : step
        step *= shape[i]
    }
    return strides
}

/// Applies `op` elementwise with broadcasting. Fast paths for equal shapes, a scalar
/// side, and the general case walks the output with the innermost dimension as a loop.
@inline(__always)
func broadcastBinary<A, B, R>(
    _ a: [A], _ aShape: [Int], _ b: [B], _ bShape: [Int], _ op: (A, B) -> R
) throws(OnnxError) -> ([R], [Int]) {
    if aShape == bShape {
        return (
            [R](unsafeUninitializedCapacity: a.count) { out, n in
                a.withUnsafeBufferPointer { pa in
                    b.withUnsafeBufferPointer { pb in
                        for i in 0..<pa.count { out[i] = op(pa[i], pb[i]) }
                    }
                }
                n = a.count
            }, aShape
        )
    }
    let shape = try broadcastShape(aShape, bShape)
    let total = shape.reduce(1, *)
    if b.count == 1, shape == aShape {
        let y = b[0]
        return (a.map { op($0, y) }, shape)
    }
    if a.count == 1, shape == bShape {
        let x = a[0]
        return (b.map { op(x, $0) }, shape)
    }
    let sa = broadcastStrides(aShape, to: shape)
    let sb = broadcastStrides(bShape, to: shape)
    let rank = shape.count
    let inner = rank > 0 ? shape[rank - 1] : 1
    let ia = rank > 0 ? sa[rank - 1] : 0
    let ib = rank > 0 ? sb[rank - 1] : 0
    let result = [R](unsafeUninitializedCapacity: total) { out, n in
        guard total > 0 else {
            n = 0
            return
        }
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                var index = [Int](repeating: 0, count: max(rank - 1, 0))
                var offsetA = 0
                var offsetB = 0
                var o = 0
                while o < total {
                    var ja = offsetA
                    var jb = offsetB
                    for _ in 0..<inner {
                        out[o] = op(pa[ja], pb[jb])
                        o += 1
                        ja += ia
                        jb += ib
                    }
                    // Advance the outer index (odometer over dims 0..<rank-1).
                    var d = rank - 2
                    while d >= 0 {
                        index[d] += 1
                        offsetA += sa[d]
                        offsetB += sb[d]
                        if index[d] < shape[d] { break }
                        offsetA -= sa[d] * shape[d]
                        offsetB -= sb[d] * shape[d]
                        index[d] = 0
                        d -= 1
                    }
                }
            }
        }
        n = total
    }
    return (result, shape)
}

/// Normalises a possibly negative axis against `rank`.
func normalizeAxis(_ axis: Int, rank: Int, _ what: String = "axis") throws(OnnxError) -> Int {
    let a = axis < 0 ? axis + rank : axis
    guard a >= 0, a < rank else { throw OnnxError("\(what) \(axis) is out of range for rank \(rank)") }
    return a
}

/// Copies `values` (row-major `shape`) with axes permuted by `perm`.
func transpose<T>(_ values: [T], shape: [Int], perm: [Int]) -> ([T], [Int]) {
    let rank = shape.count
    let outShape = perm.map { shape[$0] }
    var inStrides = [Int](repeating: 1, count: rank)
    for i in stride(from: rank - 2, through: 0, by: -1) { inStrides[i] = inStrides[i + 1] * shape[i + 1] }
    let permuted = perm.map { inStrides[$0] }
    let total = values.count
    let result = [T](unsafeUninitializedCapacity: total) { out, n in
        guard total > 0 else {
            n = 0
            return
        }
        values.withUnsafeBufferPointer { src in
            var index = [Int](repeating: 0, count: rank)
            var offset = 0
            for o in 0..<total {
                out[o] = src[offset]
                var d = rank - 1
                while d >= 0 {
                    index[d] += 1
                    offset += permuted[d]
                    if index[d] < outShape[d] { break }
                    offset -= permuted[d] * outShape[d]
                    index[d] = 0
                    d -= 1
                }
            }
        }
        n = total
    }
    return (result, outShape)
}
