import Foundation

/// ConvTranspose (every version; 1-D, 2-D, 3-D and higher): per image and group one GEMM
/// `Wᵀ·X` into columns, scattered (col2im) into the output. FP32 through `sgemm`, FP64
/// through `dgemm`; FP16 and BF16 are computed in FP32 and rounded by the plan.
enum ConvTransposeOps {
    static func register(_ r: inout [String: KernelFactory]) {
        r["ConvTranspose"] = { c in
            try c.require(inputs: 2...3)
            let attributes = try ConvTransposeAttributes(&c)
            try c.attributes.checkAllUsed()
            return FunctionKernel { inputs in
                [
                    try convTranspose(
                        try input(inputs, 0, "ConvTranspose"), try input(inputs, 1, "ConvTranspose"),
                        bias: optionalInput(inputs, 2), attributes)
                ]
            }
        }
    }
}

/// A ConvTranspose node's attributes.
struct ConvTransposeAttributes: Sendable {
    var kernelShape: [Int]?
    var strides: [Int]?
    var dilations: [Int]?
    var pads: [Int]?
    var outputPadding: [Int]?
    var outputShape: [Int]?
    var autoPad: String
    var group: Int

    init(_ c: inout NodeContext) throws(OnnxError) {
        self.kernelShape = try c.attributes.ints("kernel_shape")
        self.strides = try c.attributes.ints("strides")
        self.dilations = try c.attributes.ints("dilations")
        self.pads = try c.attributes.ints("pads")
        self.outputPadding = try c.attributes.ints("output_padding")
        self.outputShape = try c.attributes.ints("output_shape")
        self.autoPad = try c.attributes.string("auto_pad", default: "NOTSET")
        self.group = try c.attributes.int("group", default: 1)
        guard ["NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"].contains(self.autoPad) else {
            throw c.error("auto_pad '\(self.autoPad)' is not supported")
        }
        guard self.group >= 1 else { throw c.error("group must be at least 1, got \(self.group)") }
    }

    /// Output sizes and begin pads for spatial input sizes `sizes` and kernel `kernel`, as
    /// onnxruntime resolves them: `output_shape` (spatial, or with N and C) fixes the size and
    /// the padding is what the full result has beyond it (more at the end unless SAME_UPPER);
    /// SAME_UPPER and SAME_LOWER aim at input × stride; VALID pads nothing.
    func resolve(_ sizes: [Int], kernel: [Int]) throws(OnnxError) -> (out: [Int], begin: [Int]) {
        let rank = sizes.count
        func list(_ values: [Int]?, _ count: Int, _ fallback: Int, _ name: String) throws(OnnxError) -> [Int] {
            guard let values else { return [Int](repeating: fallback, count: count) }
            guard values.count == count else {
                throw OnnxError("ConvTranspose's \(name) has \(values.count) values; a \(rank)-D kernel needs \(count)")
            }
            return values
        }
        let strides = try list(self.strides, rank, 1, "strides")
        let dilations = try list(self.dilations, rank, 1, "dilations")
        let pads = try list(self.pads, 2 * rank, 0, "pads")
        let outputPadding = try list(self.outputPadding, rank, 0, "output_padding")
        var requested: [Int]?
        if let shape = self.outputShape {
            guard shape.count == rank || shape.count == rank + 2 else {
                throw OnnxError("ConvTranspose's output_shape \(shape) does not describe \(rank) spatial dimensions")
            }
            requested = Array(shape.suffix(rank))
        }
        let limit = 1 << 16
        for (name, values, low) in [
            ("kernel", kernel, 1), ("strides", strides, 1), ("dilations", dilations, 1), ("pads", pads, 0),
            ("output_padding", outputPadding, 0),
        ] where !values.allSatisfy({ $0 >= low && $0 <= limit }) {
            throw OnnxError("ConvTranspose's \(name) must be \(low)…\(limit), got \(values)")
        }
        var out = [Int](repeating: 0, count: rank)
        var begin = [Int](repeating: 0, count: rank)
        for d in 0..<rank {
            let extent = (kernel[d] - 1) * dilations[d] + 1
            let full = (sizes[d] - 1) * strides[d] + outputPadding[d] + extent
            var total: Int
            if let requested {
                out[d] = requested[d]
                total = max(0, full - out[d])
                begin[d] = self.autoPad == "SAME_UPPER" ? total / 2 : total - total / 2
            } else {
                switch self.autoPad {
                case "VALID":
                    total = 0
                    out[d] = full
                case "SAME_UPPER", "SAME_LOWER":
                    total = max(0, full - sizes[d] * strides[d])
                    out[d] = full - total
                    begin[d] = self.autoPad == "SAME_UPPER" ? total / 2 : total - total / 2
                default:
                    total = pads[d] + pads[d + rank]
                    begin[d] = pads[d]
                    out[d] = full - total
                }
            }
            guard out[d] > 0 else {
                throw OnnxError("ConvTranspose's output would have size \(out[d]) along spatial axis \(d)")
            }
            // As onnxruntime checks: the output, convolved back, must give the input's size
            // (output_padding smaller than the stride, output_shape within one stride).
            let back = out[d] + total - extent
            guard back >= 0, back / strides[d] + 1 == sizes[d] else {
                throw OnnxError(
                    "ConvTranspose's output size \(out[d]) along spatial axis \(d) is inconsistent with input size \(sizes[d]) (kernel \(kernel[d]), stride \(strides[d]), dilation \(dilations[d]), output_padding \(outputPadding[d]))"
                )
            }
        }
        return (out, begin)
    }
}

/// ConvTranspose of x [N, C, spatial…] with w [C, M/group, kernel…] and bias [M].
func convTranspose(_ x: OnnxTensor, _ w: OnnxTensor, bias: OnnxTensor?, _ attributes: ConvTransposeAttributes) throws
    -> OnnxTensor
{
    guard x.rank >= 3, w.rank == x.rank else {
        throw OnnxError(
            "ConvTranspose takes x [N, C, …] and w [C, M/group, …] of one rank, got \(x.shape) and \(w.shape)")
    }
    let group = attributes.group
    let (n, channels) = (x.shape[0], x.shape[1])
    guard w.shape[0] == channels, channels % group == 0 else {
        throw OnnxError("ConvTranspose: weights \(w.shape) do not fit \(channels) input channels in group \(group)")
    }
    let kernel = Array(w.shape.dropFirst(2))
    if let given = attributes.kernelShape, given != kernel {
        throw OnnxError("ConvTranspose's kernel_shape \(given) disagrees with the weights \(w.shape)")
    }
    let sizes = Array(x.shape.dropFirst(2))
    let (out, begin) = try attributes.resolve(sizes, kernel: kernel)
    let perGroup = w.shape[1]
    let outChannels = perGroup * group
    let outShape = [n, outChannels] + out
    _ = try checkedCount(outShape, "ConvTranspose output")
    let taps = kernel.reduce(1, *)
    _ = try checkedCount([perGroup * taps, sizes.reduce(1, *)], "ConvTranspose column buffer")
    let geometry = TransposeGeometry(
        batch: n, channels: channels, group: group, perGroup: perGroup, sizes: sizes, kernel: kernel,
        strides: attributes.strides ?? [Int](repeating: 1, count: sizes.count),
        dilations: attributes.dilations ?? [Int](repeating: 1, count: sizes.count), begin: begin, out: out)
    func biasValues<T>(_ extract: (OnnxTensor) -> [T]?) throws -> [T]? {
        guard let bias else { return nil }
        guard let values = extract(bias), values.count == outChannels else {
            throw OnnxError(
                "ConvTranspose's bias must be \(x.elementType) [\(outChannels)], got \(bias.elementType) \(bias.shape)")
        }
        return values
    }
    switch (x.storage, w.storage) {
    case (.float(let xv), .float(let wv)):
        let b = try biasValues { $0.floats }
        let y = geometry.run(xv, wv, bias: b) { a, bb, c, m, nn, k in sgemm(a, bb, c, m: m, n: nn, k: k, transA: true) }
        return OnnxTensor(shape: outShape, floats: y)
    case (.double(let xv), .double(let wv)):
        let b = try biasValues { t -> [Double]? in if case .double(let v) = t.storage { v } else { nil } }
        let y = geometry.run(xv, wv, bias: b) { a, bb, c, m, nn, k in dgemm(a, bb, c, m: m, n: nn, k: k, transA: true) }
        return OnnxTensor(shape: outShape, doubles: y)
    default:
        throw OnnxError(
            "ConvTranspose takes float, double or float16 x and w of one type, got \(x.elementType) and \(w.elementType)"
        )
    }
}

/// The shapes of one ConvTranspose.
struct TransposeGeometry {
    var batch: Int
    var channels: Int
    var group: Int
    /// Output channels per group.
    var perGroup: Int
    var sizes: [Int]
    var kernel: [Int]
    var strides: [Int]
    var dilations: [Int]
    var begin: [Int]
    var out: [Int]

    func run<T: BLASScalar>(
        _ x: [T], _ w: [T], bias: [T]?,
        gemmTransposedA: (UnsafePointer<T>, UnsafePointer<T>, UnsafeMutablePointer<T>, Int, Int, Int) -> Void
    ) -> [T] {
        let rank = self.sizes.count
        let inPlane = self.sizes.reduce(1, *)
        let outPlane = self.out.reduce(1, *)
        let taps = self.kernel.reduce(1, *)
        let channelsPerGroup = self.channels / self.group
        let outChannels = self.perGroup * self.group
        let rows = self.perGroup * taps
        // For each axis and kernel offset, the (input, output) index pairs inside the output.
        var pairs: [[[(Int, Int)]]] = []
        for d in 0..<rank {
            pairs.append(
                (0..<self.kernel[d]).map { t in
                    (0..<self.sizes[d]).compactMap { i in
                        let o = i * self.strides[d] - self.begin[d] + t * self.dilations[d]
                        return o >= 0 && o < self.out[d] ? (i, o) : nil
                    }
                })
        }
        var tapIndices: [[Int]] = []
        forEachIndex(self.kernel) { tapIndices.append($0) }
        var y = [T](repeating: .zero, count: self.batch * outChannels * outPlane)
        var columns = [T](repeating: .zero, count: rows * inPlane)
        x.withUnsafeBufferPointer { px in
            w.withUnsafeBufferPointer { pw in
                y.withUnsafeMutableBufferPointer { py in
                    columns.withUnsafeMutableBufferPointer { pc in
                        for b in 0..<self.batch {
                            for g in 0..<self.group {
                                if channelsPerGroup > 0 && inPlane > 0 {
                                    // columns [perGroup·taps, inPlane] = W_gᵀ [.., C/group] · X_g [C/group, inPlane]
                                    gemmTransposedA(
                                        pw.baseAddress! + g * channelsPerGroup * rows,
                                        px.baseAddress! + (b * self.channels + g * channelsPerGroup) * inPlane,
                                        pc.baseAddress!, rows, inPlane, channelsPerGroup)
                                } else {
                                    pc.update(repeating: .zero)
                                }
                                for m in 0..<self.perGroup {
                                    let target =
                                        py.baseAddress! + ((b * outChannels) + g * self.perGroup + m) * outPlane
                                    for (t, tap) in tapIndices.enumerated() {
                                        let source = UnsafePointer(pc.baseAddress! + (m * taps + t) * inPlane)
                                        self.scatter(
                                            source, into: target, pairs: pairs, tap: tap, axis: 0, input: 0, output: 0)
                                    }
                                }
                            }
                        }
                        if let bias {
                            for b in 0..<self.batch {
                                for ch in 0..<outChannels {
                                    let base = (b * outChannels + ch) * outPlane
                                    for i in 0..<outPlane { py[base + i] += bias[ch] }
                                }
                            }
                        }
                    }
                }
            }
        }
        return y
    }

    /// Adds one column row (one output channel and kernel offset, over every input position)
    /// into the output plane: axis by axis, only the positions that land inside it.
    private func scatter<T: BLASScalar>(
        _ source: UnsafePointer<T>, into target: UnsafeMutablePointer<T>, pairs: [[[(Int, Int)]]], tap: [Int],
        axis: Int, input: Int, output: Int
    ) {
        let list = pairs[axis][tap[axis]]
        if axis == self.sizes.count - 1 {
            let src = source + input * self.sizes[axis]
            let dst = target + output * self.out[axis]
            for (i, o) in list { dst[o] += src[i] }
            return
        }
        for (i, o) in list {
            self.scatter(
                source, into: target, pairs: pairs, tap: tap, axis: axis + 1, input: input * self.sizes[axis] + i,
                output: output * self.out[axis] + o)
        }
    }
}
