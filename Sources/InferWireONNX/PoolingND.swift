import Foundation

/// Window geometry of any spatial rank, for the pools the 2-D fast path does not take:
/// 1-D and 3-D kernels, AveragePool with dilations, MaxPool with its Indices output.
struct WindowND: Sendable {
    var kernel: [Int]
    var strides: [Int]
    var dilations: [Int]
    /// Begin pads for each spatial axis, then end pads.
    var pads: [Int]
    var ceilMode: Bool
    var autoPad: String

    /// A node's window attributes, read before the kernel's size may be known.
    struct Attributes: Sendable {
        var strides: [Int]?
        var dilations: [Int]?
        var pads: [Int]?
        var autoPad: String
        var ceilMode: Bool

        init(strides: [Int]?, dilations: [Int]?, pads: [Int]?, autoPad: String = "NOTSET", ceilMode: Bool = false) {
            self.strides = strides
            self.dilations = dilations
            self.pads = pads
            self.autoPad = autoPad
            self.ceilMode = ceilMode
        }

        init(_ c: inout NodeContext) throws {
            self.strides = try c.attributes.ints("strides")
            self.dilations = try c.attributes.ints("dilations")
            self.pads = try c.attributes.ints("pads")
            self.autoPad = try c.attributes.string("auto_pad", default: "NOTSET")
            self.ceilMode = try c.attributes.int("ceil_mode", default: 0) != 0
            guard ["NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"].contains(self.autoPad) else {
                throw c.error("auto_pad '\(self.autoPad)' is not supported")
            }
        }
    }

    static func parse(_ c: inout NodeContext, kernel: [Int]) throws -> WindowND {
        let attributes = try Attributes(&c)
        do {
            return try Self.make(kernel: kernel, attributes)
        } catch {
            throw c.error(error.message)
        }
    }

    /// The window for a kernel of known size and the node's attributes.
    static func make(kernel: [Int], _ attributes: Attributes) throws(OnnxError) -> WindowND {
        let rank = kernel.count
        let strides = attributes.strides ?? [Int](repeating: 1, count: rank)
        let dilations = attributes.dilations ?? [Int](repeating: 1, count: rank)
        let pads = attributes.pads ?? [Int](repeating: 0, count: 2 * rank)
        let autoPad = attributes.autoPad
        let ceil = attributes.ceilMode
        guard rank >= 1, strides.count == rank, dilations.count == rank, pads.count == 2 * rank else {
            throw OnnxError("kernel_shape, strides, dilations and pads must describe \(rank) dimensions")
        }
        let limit = 1 << 16
        guard kernel.allSatisfy({ $0 >= 1 && $0 <= limit }), strides.allSatisfy({ $0 >= 1 && $0 <= limit }),
            dilations.allSatisfy({ $0 >= 1 && $0 <= limit }), pads.allSatisfy({ $0 >= 0 && $0 <= limit })
        else {
            throw OnnxError(
                "kernel_shape, strides and dilations must be 1…\(limit) and pads 0…\(limit); got \(kernel), \(strides), \(dilations), \(pads)"
            )
        }
        return WindowND(
            kernel: kernel, strides: strides, dilations: dilations, pads: pads, ceilMode: ceil, autoPad: autoPad)
    }

    /// Each kernel position's offset along every spatial axis (dilations applied), in
    /// row-major order: the flat kernel index of `taps[i]` is `i`.
    var taps: [[Int]] {
        var taps: [[Int]] = []
        forEachIndex(self.kernel) { k in taps.append(zip(k, self.dilations).map { $0 * $1 }) }
        return taps
    }

    /// Output sizes and begin pads for spatial sizes `sizes`.
    func resolve(_ sizes: [Int]) throws -> (out: [Int], begin: [Int], end: [Int]) {
        let rank = self.kernel.count
        var out = [Int](repeating: 0, count: rank)
        var begin = Array(self.pads[..<rank])
        var end = Array(self.pads[rank...])
        for d in 0..<rank {
            let n = sizes[d]
            let s = self.strides[d]
            let extent = (self.kernel[d] - 1) * self.dilations[d] + 1
            switch self.autoPad {
            case "VALID":
                begin[d] = 0
                end[d] = 0
                out[d] = n >= extent ? (n - extent) / s + 1 : 0
            case "SAME_UPPER", "SAME_LOWER":
                out[d] = (n + s - 1) / s
                let total = max(0, (out[d] - 1) * s + extent - n)
                begin[d] = self.autoPad == "SAME_UPPER" ? total / 2 : total - total / 2
                end[d] = total - begin[d]
            default:
                let span = n + begin[d] + end[d] - extent
                if span < 0 {
                    out[d] = 0
                } else {
                    out[d] = (self.ceilMode ? (span + s - 1) / s : span / s) + 1
                    // With ceil_mode, a last window that would start in the end padding is dropped.
                    if self.ceilMode, (out[d] - 1) * s >= n + begin[d] { out[d] -= 1 }
                }
            }
            guard out[d] > 0 else { throw OnnxError("window larger than the padded input \(sizes)") }
        }
        return (out, begin, end)
    }
}

/// MaxPool or AveragePool over [N, C, spatial...] of any spatial rank; with `indices`, also the
/// flat index into the input of each maximum (MaxPool's second output), its spatial part
/// row-major or, with `columnMajor` (storage_order 1), column-major.
func poolND(
    _ x: OnnxTensor, window: WindowND, isMax: Bool, countIncludePad: Bool, indices: Bool, name: String,
    columnMajor: Bool = false
) throws -> [OnnxTensor] {
    let rank = window.kernel.count
    guard x.rank == rank + 2 else {
        throw OnnxError("\(name) with a \(rank)-D kernel takes [N, C, \(rank) sizes], got \(x.shape)")
    }
    guard let values = doubles(x), isMax || x.storageType == .float || x.storageType == .double else {
        throw OnnxError("\(name) takes numbers (AveragePool: float or double), got \(x.elementType)")
    }
    let sizes = Array(x.shape[2...])
    let (out, begin, end) = try window.resolve(sizes)
    let planes = x.shape[0] * x.shape[1]
    let planeSize = sizes.reduce(1, *)
    let outCount = try checkedCount([planes] + out, "\(name)'s output")
    var result = [Double](repeating: 0, count: outCount)
    var argmax = [Int64](repeating: 0, count: indices ? outCount : 0)
    let taps = window.taps
    var o = 0
    for plane in 0..<planes {
        let base = plane * planeSize
        forEachIndex(out) { position in
            var best = -Double.infinity
            var bestIndex = -1
            var sum = 0.0
            var count = 0
            var padded = 0
            for tap in taps {
                var inside = true
                var inPadding = true
                var flat = 0
                for d in 0..<rank {
                    let i = position[d] * window.strides[d] - begin[d] + tap[d]
                    if i < 0 || i >= sizes[d] { inside = false }
                    if i < -begin[d] || i >= sizes[d] + end[d] { inPadding = false }
                    flat = flat * sizes[d] + i
                }
                if inside {
                    let v = values[base + flat]
                    if v > best || bestIndex < 0 {
                        best = v
                        bestIndex = base + flat
                    }
                    sum += v
                    count += 1
                } else if inPadding {
                    padded += 1
                }
            }
            if isMax {
                result[o] = bestIndex < 0 ? -Double.infinity : best
                if indices {
                    var index = max(bestIndex, 0)
                    if columnMajor {
                        // The same element, its spatial coordinates numbered first-fastest.
                        var rest = index % planeSize
                        var flat = 0
                        var stride = 1
                        var coordinates = [Int](repeating: 0, count: rank)
                        for d in (0..<rank).reversed() {
                            coordinates[d] = rest % sizes[d]
                            rest /= sizes[d]
                        }
                        for d in 0..<rank {
                            flat += coordinates[d] * stride
                            stride *= sizes[d]
                        }
                        index = index - index % planeSize + flat
                    }
                    argmax[o] = Int64(index)
                }
            } else {
                let divisor = countIncludePad ? count + padded : count
                result[o] = divisor > 0 ? sum / Double(divisor) : 0
            }
            o += 1
        }
    }
    let shape = Array(x.shape[..<2]) + out
    let y = try asType(result, like: OnnxTensor(shape: shape, storage: x.storage))
    return indices ? [y, OnnxTensor(shape: shape, int64s: argmax)] : [y]
}

/// Convolution of any spatial rank, computed directly (the 2-D case has its own im2col and
/// GEMM path): x [N, C, spatial...], w [M, C/group, kernel...], bias [M].
func convND(_ x: OnnxTensor, _ w: OnnxTensor, bias: OnnxTensor?, group: Int, window: WindowND) throws -> OnnxTensor {
    let rank = window.kernel.count
    guard x.rank == rank + 2, w.rank == rank + 2 else {
        throw OnnxError(
            "Conv with a \(rank)-D kernel takes [N, C, \(rank) sizes], got \(x.shape) and weights \(w.shape)")
    }
    guard let xv = doubles(x), let wv = doubles(w), x.storageType == .float || x.storageType == .double else {
        throw OnnxError("Conv takes float or double, got \(x.elementType)")
    }
    let (n, channels, m, perGroup) = (x.shape[0], x.shape[1], w.shape[0], w.shape[1])
    guard group >= 1, channels == perGroup * group, m % group == 0 else {
        throw OnnxError("Conv: input channels \(channels) and weights \(w.shape) do not fit group \(group)")
    }
    let b = bias.flatMap(doubles)
    if let b, b.count != m { throw OnnxError("Conv: bias has \(b.count) values for \(m) output channels") }
    let sizes = Array(x.shape[2...])
    let (out, begin, _) = try window.resolve(sizes)
    let outShape = [n, m] + out
    let count = try checkedCount(outShape, "Conv output")
    let planeSize = sizes.reduce(1, *)
    let taps = window.taps
    var result = [Double](repeating: 0, count: count)
    let outputsPerGroup = m / group
    var o = 0
    for batch in 0..<n {
        for oc in 0..<m {
            let g = oc / outputsPerGroup
            forEachIndex(out) { position in
                var sum = b?[oc] ?? 0
                for ic in 0..<perGroup {
                    let xBase = (batch * channels + g * perGroup + ic) * planeSize
                    let wBase = (oc * perGroup + ic) * taps.count
                    for (kFlat, tap) in taps.enumerated() {
                        var inside = true
                        var flat = 0
                        for d in 0..<rank {
                            let i = position[d] * window.strides[d] - begin[d] + tap[d]
                            if i < 0 || i >= sizes[d] {
                                inside = false
                                break
                            }
                            flat = flat * sizes[d] + i
                        }
                        if inside { sum += xv[xBase + flat] * wv[wBase + kFlat] }
                    }
                }
                result[o] = sum
                o += 1
            }
        }
    }
    return try asType(result, like: OnnxTensor(shape: outShape, storage: x.storage))
}
