import Foundation

/// 2-D window geometry shared by Conv and the pools.
struct Window2D {
    var kernel: (Int, Int)
    var strides: (Int, Int)
    var dilations: (Int, Int)
    /// top, left, bottom, right
    var pads: (Int, Int, Int, Int)
    var ceilMode: Bool

    static func parse(_ c: inout NodeContext, kernel given: [Int]?, allowDilation: Bool = true) throws -> (
        Window2D, autoPad: String
    ) {
        guard let k = given, k.count == 2 else {
            throw c.error("only 2-D kernels are supported (kernel_shape \(given ?? []))")
        }
        let strides = try c.attributes.ints("strides") ?? [1, 1]
        let dilations = try c.attributes.ints("dilations") ?? [1, 1]
        let pads = try c.attributes.ints("pads") ?? [0, 0, 0, 0]
        let autoPad = try c.attributes.string("auto_pad", default: "NOTSET")
        let ceil = try c.attributes.int("ceil_mode", default: 0) != 0
        guard strides.count == 2, dilations.count == 2, pads.count == 4 else {
            throw c.error("strides, dilations and pads must describe 2 dimensions")
        }
        guard ["NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"].contains(autoPad) else {
            throw c.error("auto_pad '\(autoPad)' is not supported")
        }
        if !allowDilation && dilations != [1, 1] { throw c.error("dilations are not supported") }
        let limit = 1 << 16
        guard k.allSatisfy({ $0 >= 1 && $0 <= limit }), strides.allSatisfy({ $0 >= 1 && $0 <= limit }),
            dilations.allSatisfy({ $0 >= 1 && $0 <= limit }), pads.allSatisfy({ $0 >= 0 && $0 <= limit })
        else {
            throw c.error(
                "kernel_shape, strides and dilations must be 1…\(limit) and pads 0…\(limit); got \(k), \(strides), \(dilations), \(pads)"
            )
        }
        return (
            Window2D(
                kernel: (k[0], k[1]), strides: (strides[0], strides[1]), dilations: (dilations[0], dilations[1]),
                pads: (pads[0], pads[1], pads[2], pads[3]), ceilMode: ceil), autoPad
        )
    }

    /// Output size and resolved pads for an input of `h`×`w`.
    func resolve(h: Int, w: Int, autoPad: String) throws -> (oh: Int, ow: Int, pads: (Int, Int, Int, Int)) {
        let ekh = (self.kernel.0 - 1) * self.dilations.0 + 1
        let ekw = (self.kernel.1 - 1) * self.dilations.1 + 1
        var pads = self.pads
        if autoPad == "VALID" { pads = (0, 0, 0, 0) }
        if autoPad.hasPrefix("SAME") {
            let oh = (h + self.strides.0 - 1) / self.strides.0
            let ow = (w + self.strides.1 - 1) / self.strides.1
            let ph = max(0, (oh - 1) * self.strides.0 + ekh - h)
            let pw = max(0, (ow - 1) * self.strides.1 + ekw - w)
            pads =
                autoPad == "SAME_UPPER"
                ? (ph / 2, pw / 2, ph - ph / 2, pw - pw / 2) : (ph - ph / 2, pw - pw / 2, ph / 2, pw / 2)
            return (oh, ow, pads)
        }
        func size(_ n: Int, _ ek: Int, _ s: Int, _ p0: Int, _ p1: Int) -> Int {
            let span = n + p0 + p1 - ek
            if span < 0 { return 0 }
            var out = (self.ceilMode ? (span + s - 1) / s : span / s) + 1
            // With ceil_mode, a last window that would start in the end padding is dropped.
            if self.ceilMode, (out - 1) * s >= n + p0 { out -= 1 }
            return out
        }
        let oh = size(h, ekh, self.strides.0, pads.0, pads.2)
        let ow = size(w, ekw, self.strides.1, pads.1, pads.3)
        guard oh > 0, ow > 0 else { throw OnnxError("window larger than the padded input \(h)×\(w)") }
        return (oh, ow, pads)
    }
}

enum ConvolutionOps {
    /// Output pixels one GEMM should cover: images with smaller output planes are im2col'd
    /// side by side into one GEMM until their pixels reach this many. Wider would stream the
    /// columns through memory instead of cache.
    static let pixelsPerGEMM = 1024
    /// Floats of im2col columns one GEMM over several images may hold (16 MiB).
    static let batchedColumnLimit = 4 << 20

    /// im2col of one image's group of channels: one row per (channel, ky, kx), one column per
    /// output pixel, rows `rowStride` floats apart. For each output row the valid output
    /// columns are computed once, so the inner copy has no bounds tests.
    static func im2col(
        _ image: UnsafePointer<Float>, into columns: UnsafeMutablePointer<Float>, rowStride: Int, channels: Int,
        h: Int, w: Int, oh: Int, ow: Int, window: Window2D, pads: (Int, Int, Int, Int)
    ) {
        let (kh, kw) = window.kernel
        for ch in 0..<channels {
            let plane = image + ch * h * w
            for ky in 0..<kh {
                for kx in 0..<kw {
                    let dst = columns + ((ch * kh + ky) * kw + kx) * rowStride
                    let offsetX = kx * window.dilations.1 - pads.1
                    let sx = window.strides.1
                    // ox is valid when 0 <= ox*sx + offsetX < w.
                    let oxStart = min(ow, offsetX >= 0 ? 0 : (-offsetX + sx - 1) / sx)
                    let oxEnd = max(oxStart, min(ow, w - offsetX <= 0 ? 0 : (w - offsetX + sx - 1) / sx))
                    for oy in 0..<oh {
                        let iy = oy * window.strides.0 - pads.0 + ky * window.dilations.0
                        let out = dst + oy * ow
                        guard iy >= 0 && iy < h else {
                            out.update(repeating: 0, count: ow)
                            continue
                        }
                        let src = plane + iy * w + offsetX
                        if oxStart > 0 { out.update(repeating: 0, count: oxStart) }
                        if sx == 1 {
                            (out + oxStart).update(from: src + oxStart, count: oxEnd - oxStart)
                        } else {
                            for ox in oxStart..<oxEnd { out[ox] = src[ox * sx] }
                        }
                        if oxEnd < ow { (out + oxEnd).update(repeating: 0, count: ow - oxEnd) }
                    }
                }
            }
        }
    }

    static func register(_ r: inout [String: KernelFactory]) {
        r["Conv"] = { c in
            try c.require(inputs: 2...3)
            // kernel_shape may be omitted: then it is taken from the weights (at run time when
            // they are an input rather than an initializer).
            let kernelShape =
                try c.attributes.ints("kernel_shape") ?? c.constantInputs[1].map { Array($0.shape.dropFirst(2)) }
            let group = try c.attributes.int("group", default: 1)
            let attributes = try WindowND.Attributes(&c)
            try c.attributes.checkAllUsed()
            // Kernels of other ranks, or of a size known only at run time, are convolved directly.
            guard let kernelShape, kernelShape.count == 2 else {
                let known = try kernelShape.map { k throws(OnnxError) in try WindowND.make(kernel: k, attributes) }
                return FunctionKernel { inputs in
                    let x = try input(inputs, 0, "Conv")
                    let w = try input(inputs, 1, "Conv")
                    let window = try known ?? WindowND.make(kernel: Array(w.shape.dropFirst(2)), attributes)
                    return [try convND(x, w, bias: inputs.count > 2 ? inputs[2] : nil, group: group, window: window)]
                }
            }
            let general = try WindowND.make(kernel: kernelShape, attributes)
            let window = Window2D(
                kernel: (kernelShape[0], kernelShape[1]), strides: (general.strides[0], general.strides[1]),
                dilations: (general.dilations[0], general.dilations[1]),
                pads: (general.pads[0], general.pads[1], general.pads[2], general.pads[3]), ceilMode: false)
            let autoPad = general.autoPad
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "Conv")
                let w = try input(inputs, 1, "Conv")
                guard x.rank == 4, w.rank == 4 else {
                    throw OnnxError("Conv supports 2-D inputs [N,C,H,W], got \(x.shape)")
                }
                guard let xv = x.floats, let wv = w.floats else { throw OnnxError("Conv supports float tensors") }
                let (n, cIn, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
                let (m, cPerGroup, kh, kw) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3])
                guard (kh, kw) == window.kernel else {
                    throw OnnxError("Conv weights \(w.shape) disagree with kernel_shape")
                }
                guard group >= 1, cIn == cPerGroup * group, m % group == 0 else {
                    throw OnnxError("Conv: input channels \(cIn) and weights \(w.shape) do not fit group \(group)")
                }
                let bias = inputs.count > 2 ? inputs[2]?.floats : nil
                if let bias, bias.count != m {
                    throw OnnxError("Conv: bias has \(bias.count) values for \(m) output channels")
                }
                let (oh, ow, pads) = try window.resolve(h: h, w: wd, autoPad: autoPad)
                _ = try checkedCount([n, m, oh, ow], "Conv output")
                _ = try checkedCount([cPerGroup * kh * kw, oh * ow], "Conv column buffer")
                let mPerGroup = m / group
                let colRows = cPerGroup * kh * kw
                let colCols = oh * ow
                var out = [Float](repeating: 0, count: n * m * colCols)
                // A 1×1 kernel with stride 1 and no padding reads each input plane as it is:
                // the GEMM takes the input itself, with no column copy.
                let pointwise =
                    (kh, kw) == (1, 1) && window.strides == (1, 1) && pads == (0, 0, 0, 0) && (oh, ow) == (h, wd)
                // Small output planes make thin GEMMs image by image: several images' columns go
                // side by side into one GEMM per group, up to ``pixelsPerGEMM`` pixels.
                let imagesPerGEMM =
                    pointwise
                    ? 1
                    : max(
                        1,
                        min(
                            n, Self.pixelsPerGEMM / max(colCols, 1),
                            Self.batchedColumnLimit / max(colRows * colCols, 1)))
                let batched = imagesPerGEMM > 1
                let columnsPerGEMM = imagesPerGEMM * colCols
                var columns = [Float](repeating: 0, count: pointwise ? 0 : colRows * columnsPerGEMM)
                var staged = [Float](repeating: 0, count: batched ? mPerGroup * columnsPerGEMM : 0)
                xv.withUnsafeBufferPointer { px in
                    wv.withUnsafeBufferPointer { pw in
                        out.withUnsafeMutableBufferPointer { po in
                            columns.withUnsafeMutableBufferPointer { pc in
                                staged.withUnsafeMutableBufferPointer { ps in
                                    for g in 0..<group {
                                        let weights = pw.baseAddress! + g * mPerGroup * colRows
                                        if batched {
                                            for first in stride(from: 0, to: n, by: imagesPerGEMM) {
                                                let images = min(imagesPerGEMM, n - first)
                                                let width = images * colCols
                                                for i in 0..<images {
                                                    Self.im2col(
                                                        px.baseAddress! + ((first + i) * cIn + g * cPerGroup) * h * wd,
                                                        into: pc.baseAddress! + i * colCols, rowStride: width,
                                                        channels: cPerGroup, h: h, w: wd, oh: oh, ow: ow,
                                                        window: window, pads: pads)
                                                }
                                                sgemm(
                                                    weights, pc.baseAddress!, ps.baseAddress!, m: mPerGroup,
                                                    n: width, k: colRows)
                                                // [channel, image·pixel] back to [image, channel, pixel].
                                                for i in 0..<images {
                                                    for oc in 0..<mPerGroup {
                                                        (po.baseAddress!
                                                            + ((first + i) * m + g * mPerGroup + oc) * colCols).update(
                                                                from: ps.baseAddress! + oc * width + i * colCols,
                                                                count: colCols)
                                                    }
                                                }
                                            }
                                            continue
                                        }
                                        for b in 0..<n {
                                            let plane = px.baseAddress! + (b * cIn + g * cPerGroup) * h * wd
                                            let source: UnsafePointer<Float>
                                            if pointwise {
                                                source = UnsafePointer(plane)
                                            } else {
                                                Self.im2col(
                                                    plane, into: pc.baseAddress!, rowStride: colCols,
                                                    channels: cPerGroup, h: h, w: wd, oh: oh, ow: ow,
                                                    window: window, pads: pads)
                                                source = UnsafePointer(pc.baseAddress!)
                                            }
                                            sgemm(
                                                weights, source, po.baseAddress! + (b * m + g * mPerGroup) * colCols,
                                                m: mPerGroup, n: colCols, k: colRows)
                                        }
                                    }
                                    if let bias {
                                        for b in 0..<n {
                                            for oc in 0..<m {
                                                let v = bias[oc]
                                                let base = po.baseAddress! + (b * m + oc) * colCols
                                                for i in 0..<colCols { base[i] += v }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                return [OnnxTensor(shape: [n, m, oh, ow], floats: out)]
            }
        }
        for (name, isMax) in [("MaxPool", true), ("AveragePool", false)] {
            r[name] = { c in
                try c.require(inputs: 1...1, outputs: isMax ? 1...2 : 1...1)
                let indices = c.outputCount == 2
                guard let kernelShape = try c.attributes.ints("kernel_shape") else {
                    throw c.error("kernel_shape is required")
                }
                let countIncludePad = isMax ? false : try c.attributes.int("count_include_pad", default: 0) != 0
                let columnMajor = try isMax && c.attributes.int("storage_order", default: 0) != 0
                let general = try WindowND.parse(&c, kernel: kernelShape)
                try c.attributes.checkAllUsed()
                // Other ranks, MaxPool's Indices and AveragePool's dilations take the general path.
                guard kernelShape.count == 2, !indices, isMax || general.dilations == [1, 1] else {
                    return FunctionKernel { inputs in
                        try poolND(
                            try input(inputs, 0, name), window: general, isMax: isMax,
                            countIncludePad: countIncludePad, indices: indices, name: name, columnMajor: columnMajor)
                    }
                }
                let window = Window2D(
                    kernel: (kernelShape[0], kernelShape[1]), strides: (general.strides[0], general.strides[1]),
                    dilations: (general.dilations[0], general.dilations[1]),
                    pads: (general.pads[0], general.pads[1], general.pads[2], general.pads[3]),
                    ceilMode: general.ceilMode)
                let autoPad = general.autoPad
                return FunctionKernel { inputs in
                    let x = try input(inputs, 0, name)
                    guard x.rank == 4, let xv = x.floats else {
                        return try poolND(
                            x, window: general, isMax: isMax, countIncludePad: countIncludePad, indices: false,
                            name: name)
                    }
                    let (n, ch, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
                    let (oh, ow, pads) = try window.resolve(h: h, w: w, autoPad: autoPad)
                    var result = [Float](repeating: 0, count: n * ch * oh * ow)
                    xv.withUnsafeBufferPointer { px in
                        result.withUnsafeMutableBufferPointer { out in
                            for plane in 0..<(n * ch) {
                                let src = px.baseAddress! + plane * h * w
                                for oy in 0..<oh {
                                    for ox in 0..<ow {
                                        let iy0 = oy * window.strides.0 - pads.0
                                        let ix0 = ox * window.strides.1 - pads.1
                                        let lastY = iy0 + (window.kernel.0 - 1) * window.dilations.0
                                        let lastX = ix0 + (window.kernel.1 - 1) * window.dilations.1
                                        if iy0 >= 0, ix0 >= 0, lastY < h, lastX < w {
                                            // Window entirely inside: no bounds tests.
                                            var best = -Float.infinity
                                            var sum: Float = 0
                                            for ky in 0..<window.kernel.0 {
                                                let line = src + (iy0 + ky * window.dilations.0) * w + ix0
                                                for kx in 0..<window.kernel.1 {
                                                    let v = line[kx * window.dilations.1]
                                                    best = max(best, v)
                                                    sum += v
                                                }
                                            }
                                            out[(plane * oh + oy) * ow + ox] =
                                                isMax ? best : sum / Float(window.kernel.0 * window.kernel.1)
                                            continue
                                        }
                                        var best = -Float.infinity
                                        var sum: Float = 0
                                        var count = 0
                                        var padded = 0
                                        for ky in 0..<window.kernel.0 {
                                            let iy = oy * window.strides.0 - pads.0 + ky * window.dilations.0
                                            for kx in 0..<window.kernel.1 {
                                                let ix = ox * window.strides.1 - pads.1 + kx * window.dilations.1
                                                if iy >= 0 && iy < h && ix >= 0 && ix < w {
                                                    let v = src[iy * w + ix]
                                                    best = max(best, v)
                                                    sum += v
                                                    count += 1
                                                } else if iy < h + pads.2 && ix < w + pads.3 {
                                                    padded += 1
                                                }
                                            }
                                        }
                                        let divisor = countIncludePad ? count + padded : count
                                        out[(plane * oh + oy) * ow + ox] =
                                            isMax ? best : (divisor > 0 ? sum / Float(divisor) : 0)
                                    }
                                }
                            }
                        }
                    }
                    return [OnnxTensor(shape: [n, ch, oh, ow], floats: result)]
                }
            }
        }
        r["GlobalMaxPool"] = { c in
            try c.require(inputs: 1...1)
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "GlobalMaxPool")
                guard x.rank >= 3, let values = doubles(x), x.storageType == .float || x.storageType == .double else {
                    throw OnnxError("GlobalMaxPool takes float or double [N,C,...], got \(x.shape)")
                }
                let planes = x.shape[0] * x.shape[1]
                let size = x.shape[2...].reduce(1, *)
                let maxima = (0..<planes).map { p in values[(p * size)..<((p + 1) * size)].max() ?? -.infinity }
                let shape = Array(x.shape[..<2]) + [Int](repeating: 1, count: x.rank - 2)
                return [
                    x.storageType == .float
                        ? OnnxTensor(shape: shape, floats: maxima.map { Float($0) })
                        : OnnxTensor(shape: shape, doubles: maxima)
                ]
            }
        }
        r["GlobalAveragePool"] = { c in
            try c.require(inputs: 1...1)
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "GlobalAveragePool")
                guard x.rank >= 3, let xv = x.floats else {
                    throw OnnxError("GlobalAveragePool takes float [N,C,...], got \(x.shape)")
                }
                let planes = x.shape[0] * x.shape[1]
                let size = x.shape[2...].reduce(1, *)
                var out = [Float](repeating: 0, count: planes)
                for p in 0..<planes {
                    var s: Float = 0
                    for i in 0..<size { s += xv[p * size + i] }
                    out[p] = size > 0 ? s / Float(size) : 0
                }
                return [OnnxTensor(shape: Array(x.shape[..<2]) + Array(repeating: 1, count: x.rank - 2), floats: out)]
            }
        }
        r["BatchNormalization"] = { c in
            let epsilon = try c.attributes.float("epsilon", default: 1e-5)
            let momentum = try c.attributes.float("momentum", default: 0.9)
            // Training mode (opset 14 on) normalizes by the batch's own statistics and also
            // gives the updated running mean and variance.
            let training = try c.attributes.int("training_mode", default: 0) != 0
            try c.require(inputs: 5...5, outputs: training ? 1...3 : 1...1)
            _ = try c.attributes.int("spatial")  // opset < 9; 1 is the only behaviour here
            try c.attributes.checkAllUsed()
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "BatchNormalization")
                guard x.rank >= 2, let xv = x.floats else {
                    throw OnnxError("BatchNormalization takes float [N,C,...], got \(x.shape)")
                }
                let params = try (1...4).map { i -> [Float] in
                    guard let v = try input(inputs, i, "BatchNormalization").floats, v.count == x.shape[1] else {
                        throw OnnxError("BatchNormalization: parameter \(i) must be float [\(x.shape[1])]")
                    }
                    return v
                }
                var (scale, bias, mean, variance) = (params[0], params[1], params[2], params[3])
                let channels = x.shape[1]
                let size = x.shape[2...].reduce(1, *)
                var running: [OnnxTensor] = []
                if training {
                    // Population statistics over every axis but the channels.
                    var batchMean = [Float](repeating: 0, count: channels)
                    var batchVariance = [Float](repeating: 0, count: channels)
                    let count = Double(x.shape[0] * size)
                    for ch in 0..<channels {
                        var sum = 0.0
                        for b in 0..<x.shape[0] {
                            let base = (b * channels + ch) * size
                            for i in 0..<size { sum += Double(xv[base + i]) }
                        }
                        let m = count > 0 ? sum / count : 0
                        var squares = 0.0
                        for b in 0..<x.shape[0] {
                            let base = (b * channels + ch) * size
                            for i in 0..<size { squares += (Double(xv[base + i]) - m) * (Double(xv[base + i]) - m) }
                        }
                        batchMean[ch] = Float(m)
                        batchVariance[ch] = Float(count > 0 ? squares / count : 0)
                    }
                    running = [
                        OnnxTensor(
                            shape: [channels],
                            floats: (0..<channels).map { mean[$0] * momentum + batchMean[$0] * (1 - momentum) }),
                        OnnxTensor(
                            shape: [channels],
                            floats: (0..<channels).map { variance[$0] * momentum + batchVariance[$0] * (1 - momentum) }),
                    ]
                    (mean, variance) = (batchMean, batchVariance)
                }
                var out = xv
                for b in 0..<x.shape[0] {
                    for ch in 0..<channels {
                        let k = scale[ch] / (variance[ch] + epsilon).squareRoot()
                        let shift = bias[ch] - mean[ch] * k
                        let base = (b * channels + ch) * size
                        for i in 0..<size { out[base + i] = out[base + i] * k + shift }
                    }
                }
                return [OnnxTensor(shape: x.shape, floats: out)] + running
            }
        }
    }
}
