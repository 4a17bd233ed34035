import Foundation

/// Operators that pick, scatter, pad or rank elements: Dropout (inference), Pad, TopK,
/// GatherElements, ScatterElements, OneHot, NonZero, Hardmax; InstanceNormalization,
/// LpNormalization; QuantizeLinear and DequantizeLinear.
enum IndexingOps {
    static func register(_ r: inout [String: KernelFactory]) {
        r["Dropout"] = { c in
            try c.require(inputs: 1...3, outputs: 1...2)
            _ = try c.attributes.float("ratio")  // opset < 12; inference ignores it
            _ = try c.attributes.int("seed")
            _ = try c.attributes.int("is_test")  // opset < 7
            try c.attributes.checkAllUsed()
            let mask = c.outputCount == 2
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "Dropout")
                if inputs.count > 2, let training = inputs[2], case .bool(let flag) = training.storage,
                    flag.first == true
                {
                    throw OnnxError("Dropout in training mode is not supported: InferWire serves inference")
                }
                // Inference: the input passes through, every element kept.
                return mask
                    ? [x, OnnxTensor(shape: x.shape, storage: .bool(Array(repeating: true, count: x.count)))] : [x]
            }
        }
        r["Pad"] = { c in
            try c.require(inputs: 1...4)
            let mode = try c.attributes.string("mode", default: "constant")
            let attrPads = c.opset < 11 ? try c.attributes.ints("pads") : nil
            let attrValue = c.opset < 11 ? Double(try c.attributes.float("value", default: 0)) : nil
            try c.attributes.checkAllUsed()
            guard ["constant", "reflect", "edge", "wrap"].contains(mode) else {
                throw c.error("mode '\(mode)' is not supported (constant, reflect, edge, wrap)")
            }
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "Pad")
                let pads = try attrPads ?? (try input(inputs, 1, "Pad").integers("Pad's pads"))
                let value = try attrValue ?? (inputs.count > 2 ? inputs[2].flatMap(doubles)?.first : nil) ?? 0
                let axes = inputs.count > 3 ? try inputs[3]?.integers("Pad's axes") : nil
                return [try pad(x, pads: pads, axes: axes, mode: mode, value: value)]
            }
        }
        r["TopK"] = { c in
            try c.require(inputs: 1...2, outputs: 2...2)
            let axis = try c.attributes.int("axis", default: -1)
            let largest = try c.attributes.int("largest", default: 1) != 0
            let sorted = try c.attributes.int("sorted", default: 1) != 0
            let attrK = c.opset < 10 ? try c.attributes.int("k") : nil
            try c.attributes.checkAllUsed()
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "TopK")
                guard let k = try attrK ?? (try input(inputs, 1, "TopK").integers("TopK's k").first) else {
                    throw OnnxError("TopK's k is empty")
                }
                return try topK(x, k: k, axis: axis, largest: largest, sorted: sorted)
            }
        }
        r["GatherElements"] = { c in
            try c.require(inputs: 2...2)
            let axis = try c.attributes.int("axis", default: 0)
            try c.attributes.checkAllUsed()
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "GatherElements")
                let indices = try input(inputs, 1, "GatherElements")
                let a = try normalizeAxis(axis, rank: x.rank)
                let flat = try elementIndices(indices, axis: a, data: x.shape, what: "GatherElements")
                return [try GatherIndices(indices: flat).tensor(from: x, shape: indices.shape)]
            }
        }
        r["ScatterElements"] = { c in
            try c.require(inputs: 3...3)
            let axis = try c.attributes.int("axis", default: 0)
            let reduction = try c.attributes.string("reduction", default: "none")
            try c.attributes.checkAllUsed()
            guard ["none", "add", "mul", "max", "min"].contains(reduction) else {
                throw c.error("reduction '\(reduction)' is not supported")
            }
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "ScatterElements")
                let indices = try input(inputs, 1, "ScatterElements")
                let updates = try input(inputs, 2, "ScatterElements")
                guard updates.shape == indices.shape else {
                    throw OnnxError("ScatterElements' updates \(updates.shape) and indices \(indices.shape) differ")
                }
                let a = try normalizeAxis(axis, rank: x.rank)
                let flat = try elementIndices(indices, axis: a, data: x.shape, what: "ScatterElements")
                return [try scatter(x, at: flat, updates: updates, reduction: reduction)]
            }
        }
        r["OneHot"] = { c in
            try c.require(inputs: 3...3)
            let axis = try c.attributes.int("axis", default: -1)
            try c.attributes.checkAllUsed()
            return FunctionKernel { inputs in
                let indices = try input(inputs, 0, "OneHot")
                guard let depth = doubles(try input(inputs, 1, "OneHot"))?.first, depth >= 1, depth <= Double(1 << 24)
                else { throw OnnxError("OneHot's depth must be a positive number") }
                return [try oneHot(indices, depth: Int(depth), values: try input(inputs, 2, "OneHot"), axis: axis)]
            }
        }
        r["NonZero"] = { c in
            try c.require(inputs: 1...1)
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "NonZero")
                let nonzero: [Bool]
                switch x.storage {
                case .bool(let v): nonzero = v
                case .string(let v): nonzero = v.map { !$0.isEmpty }
                default: nonzero = doubles(x)!.map { $0 != 0 }
                }
                var coordinates = [[Int64]](repeating: [], count: max(x.rank, 1))
                var flat = 0
                forEachIndex(x.shape) { index in
                    if nonzero[flat] { for (d, i) in index.enumerated() { coordinates[d].append(Int64(i)) } }
                    flat += 1
                }
                if x.rank == 0 {
                    return [OnnxTensor(shape: [0, nonzero.first == true ? 1 : 0], int64s: [])]
                }
                let count = coordinates[0].count
                return [OnnxTensor(shape: [x.rank, count], int64s: coordinates.flatMap { $0 })]
            }
        }
        r["Hardmax"] = { c in
            try c.require(inputs: 1...1)
            let axis = try c.attributes.int("axis", default: c.opset < 13 ? 1 : -1)
            try c.attributes.checkAllUsed()
            let legacy = c.opset < 13
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "Hardmax")
                guard let values = doubles(x) else { throw OnnxError("Hardmax takes numbers, got \(x.elementType)") }
                let a = try normalizeAxis(axis, rank: x.rank)
                // Before opset 13 the input is coerced to 2-D at axis.
                let (outer, n, inner) =
                    legacy
                    ? (x.shape[..<a].reduce(1, *), x.shape[a...].reduce(1, *), 1)
                    : (x.shape[..<a].reduce(1, *), x.shape[a], x.shape[(a + 1)...].reduce(1, *))
                var out = [Double](repeating: 0, count: values.count)
                for o in 0..<outer {
                    for i in 0..<inner where n > 0 {
                        var best = 0
                        for k in 1..<n where values[(o * n + k) * inner + i] > values[(o * n + best) * inner + i] {
                            best = k
                        }
                        out[(o * n + best) * inner + i] = 1
                    }
                }
                return [try asType(out, like: x)]
            }
        }
        r["LpNormalization"] = { c in
            try c.require(inputs: 1...1)
            let axis = try c.attributes.int("axis", default: -1)
            let p = try c.attributes.int("p", default: 2)
            try c.attributes.checkAllUsed()
            guard p == 1 || p == 2 else { throw c.error("p must be 1 or 2, got \(p)") }
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "LpNormalization")
                guard let values = doubles(x) else { throw OnnxError("LpNormalization takes numbers") }
                let a = try normalizeAxis(axis, rank: x.rank)
                let (outer, n, inner) = (x.shape[..<a].reduce(1, *), x.shape[a], x.shape[(a + 1)...].reduce(1, *))
                var out = values
                for o in 0..<outer {
                    for i in 0..<inner {
                        var norm = 0.0
                        for k in 0..<n {
                            let v = values[(o * n + k) * inner + i]
                            norm += p == 1 ? Swift.abs(v) : v * v
                        }
                        if p == 2 { norm = norm.squareRoot() }
                        for k in 0..<n where norm > 0 { out[(o * n + k) * inner + i] /= norm }
                    }
                }
                return [try asType(out, like: x)]
            }
        }
        r["InstanceNormalization"] = { c in
            try c.require(inputs: 3...3)
            let epsilon = Double(try c.attributes.float("epsilon", default: 1e-5))
            try c.attributes.checkAllUsed()
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "InstanceNormalization")
                guard x.rank >= 3, let values = doubles(x),
                    let scale = doubles(try input(inputs, 1, "InstanceNormalization")),
                    let bias = doubles(try input(inputs, 2, "InstanceNormalization"))
                else { throw OnnxError("InstanceNormalization takes float [N, C, ...] with scale and bias") }
                let channels = x.shape[1]
                guard scale.count == channels, bias.count == channels else {
                    throw OnnxError("InstanceNormalization's scale and bias must have \(channels) values")
                }
                let size = x.shape[2...].reduce(1, *)
                var out = values
                for plane in 0..<(x.shape[0] * channels) {
                    let c = plane % channels
                    let slice = values[(plane * size)..<((plane + 1) * size)]
                    let mean = slice.reduce(0, +) / Double(max(size, 1))
                    let variance = slice.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(max(size, 1))
                    let inverse = 1 / (variance + epsilon).squareRoot()
                    for i in 0..<size {
                        out[plane * size + i] = (values[plane * size + i] - mean) * inverse * scale[c] + bias[c]
                    }
                }
                return [try asType(out, like: x)]
            }
        }
        r["DequantizeLinear"] = { c in
            try c.require(inputs: 2...3)
            let axis = try c.attributes.int("axis", default: 1)
            let block = try c.attributes.int("block_size", default: 0)
            let outputCode = try c.attributes.int("output_dtype", default: 0)
            try c.attributes.checkAllUsed()
            let output = Int32(exactly: outputCode).flatMap { ElementType(onnx: $0) }
            guard outputCode == 0 || output != nil else { throw c.error("output_dtype \(outputCode) is not supported") }
            guard block >= 0 else { throw c.error("block_size \(block) is negative") }
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "DequantizeLinear")
                let scale = try input(inputs, 1, "DequantizeLinear")
                guard let values = doubles(x) else {
                    throw OnnxError("DequantizeLinear takes numbers, got \(x.elementType)")
                }
                let p = try QuantizationParameters(
                    x, scale: scale, zero: inputs.count > 2 ? inputs[2] : nil, axis: axis, block: block,
                    op: "DequantizeLinear")
                let result = values.enumerated().map { i, v in (v - p.zero(i)) * p.scale(i) }
                // The scale's type unless output_dtype names another.
                return [try cast(OnnxTensor(shape: x.shape, doubles: result), to: output ?? scale.elementType)]
            }
        }
        r["QuantizeLinear"] = { c in
            try c.require(inputs: 2...3)
            let axis = try c.attributes.int("axis", default: 1)
            let block = try c.attributes.int("block_size", default: 0)
            let rounding = MiniFloat.Rounding(saturate: try c.attributes.int("saturate", default: 1) != 0)
            _ = try c.attributes.int("precision")  // divided in the scale's precision, as the reference does
            let outputCode = try c.attributes.int("output_dtype", default: 0)
            try c.attributes.checkAllUsed()
            let output = Int32(exactly: outputCode).flatMap { ElementType(onnx: $0) }
            guard outputCode == 0 || output != nil else { throw c.error("output_dtype \(outputCode) is not supported") }
            guard block >= 0 else { throw c.error("block_size \(block) is negative") }
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "QuantizeLinear")
                let scale = try input(inputs, 1, "QuantizeLinear")
                let zero = inputs.count > 2 ? inputs[2] : nil
                guard let values = doubles(x) else {
                    throw OnnxError("QuantizeLinear takes numbers, got \(x.elementType)")
                }
                let target = zero?.elementType ?? output ?? .uint8
                let p = try QuantizationParameters(
                    x, scale: scale, zero: zero, axis: axis, block: block, op: "QuantizeLinear")
                // In the scale's precision, as the reference divides: FP32 scales divide in FP32.
                let single = scale.storageType == .float
                func ratio(_ i: Int, _ v: Double) -> Double {
                    single ? Double(Float(v) / Float(p.scale(i))) : v / p.scale(i)
                }
                func zeroPoint(_ i: Int) -> Double { p.zero(i) }
                if case .float8(let format) = target {
                    // x / scale + zero point, converted (not rounded to an integer) into the float8 format.
                    let converted = values.enumerated().map { i, v in
                        format.decode(format.encode(Float(ratio(i, v) + zeroPoint(i)), rounding))
                    }
                    return [OnnxTensor(shape: x.shape, storage: .float(converted), narrow: target)]
                }
                let (low, high): (Double, Double)
                switch target {
                case .uint8: (low, high) = (0, 255)
                case .int8: (low, high) = (-128, 127)
                case .uint16: (low, high) = (0, 65535)
                case .int16: (low, high) = (-32768, 32767)
                case .int32: (low, high) = (Double(Int32.min), Double(Int32.max))
                case .subByte:
                    (low, high) = (Double(target.subByteRange!.lowerBound), Double(target.subByteRange!.upperBound))
                default: throw OnnxError("QuantizeLinear to \(target) is not supported")
                }
                let quantized = values.enumerated().map { i, v -> Int32 in
                    let q = ratio(i, v).rounded(.toNearestOrEven) + zeroPoint(i)
                    return Int32(Swift.min(Swift.max(q.isNaN ? 0 : q, low), high))
                }
                return [OnnxTensor(shape: x.shape, storage: .int32(quantized), narrow: target == .int32 ? nil : target)]
            }
        }
    }
}

/// Doubles back in `like`'s float type (FP16 and BF16 rounded by the plan afterwards).
func asType(_ values: [Double], like x: OnnxTensor) throws -> OnnxTensor {
    switch x.storage {
    case .float: OnnxTensor(shape: x.shape, floats: values.map { Float($0) })
    case .double: OnnxTensor(shape: x.shape, doubles: values)
    case .int64: OnnxTensor(shape: x.shape, int64s: values.map { Int64($0) })
    case .int32: OnnxTensor(shape: x.shape, storage: .int32(values.map { Int32($0) }))
    default: throw OnnxError("expected numbers, got \(x.elementType)")
    }
}

/// QuantizeLinear's and DequantizeLinear's scales and zero points, looked up per element.
struct QuantizationParameters {
    let scales: [Double]
    let zeros: [Double]
    let index: (Int) -> Int

    init(_ x: OnnxTensor, scale: OnnxTensor, zero: OnnxTensor?, axis: Int, block: Int, op: String) throws {
        guard let scales = doubles(scale) else {
            throw OnnxError("\(op) takes a float scale, got \(scale.elementType)")
        }
        self.scales = scales
        self.zeros = zero.flatMap(doubles) ?? [0]
        guard self.zeros.count == 1 || self.zeros.count == scales.count else {
            throw OnnxError("\(op): \(self.zeros.count) zero points for \(scales.count) scales")
        }
        self.index = try quantizationIndex(x.shape, scale: scale.shape, axis: axis, block: block)
    }

    func scale(_ i: Int) -> Double { self.scales[self.scales.count == 1 ? 0 : self.index(i)] }
    func zero(_ i: Int) -> Double { self.zeros[self.zeros.count == 1 ? 0 : self.index(i)] }
}

/// The scale (and zero point) index of each element: always 0 per tensor; its coordinate along
/// `axis` per axis (a 1-D scale); with `block` > 0, the scale of its block of `block` elements
/// along `axis` (a scale of x's rank).
func quantizationIndex(_ shape: [Int], scale: [Int], axis: Int, block: Int) throws -> (Int) -> Int {
    let parameters = scale.reduce(1, *)
    if block == 0 {
        guard parameters > 1 else { return { _ in 0 } }
        let a = try normalizeAxis(axis, rank: shape.count)
        guard scale.count == 1, shape[a] == parameters else {
            throw OnnxError("per-axis quantization needs \(shape[a]) scales along axis \(axis), got \(scale)")
        }
        let inner = shape[(a + 1)...].reduce(1, *)
        return { ($0 / inner) % parameters }
    }
    let a = try normalizeAxis(axis, rank: shape.count)
    let blocks = (shape[a] + block - 1) / block
    guard scale.count == shape.count, scale[a] == blocks,
        scale.indices.allSatisfy({ $0 == a || scale[$0] == shape[$0] })
    else {
        throw OnnxError(
            "blocked quantization of \(shape) by \(block) along axis \(axis) needs scales shaped like the input with \(blocks) along the axis, got \(scale)"
        )
    }
    let inner = shape[(a + 1)...].reduce(1, *)
    let length = shape[a]
    return { i in
        let outer = i / (inner * length)
        let along = i / inner % length
        return (outer * blocks + along / block) * inner + i % inner
    }
}

/// For GatherElements and ScatterElements: the flat index into `data` each index names.
func elementIndices(_ indices: OnnxTensor, axis: Int, data: [Int], what: String) throws -> [Int] {
    guard indices.rank == data.count else {
        throw OnnxError("\(what)'s indices have rank \(indices.rank); the data has rank \(data.count)")
    }
    let values = try indices.integers("\(what)'s indices")
    var result: [Int] = []
    result.reserveCapacity(values.count)
    var position = 0
    var failure: OnnxError?
    forEachIndex(indices.shape) { index in
        var i = values[position]
        position += 1
        if i < 0 { i += data[axis] }
        guard i >= 0, i < data[axis], failure == nil else {
            failure = failure ?? OnnxError("\(what): index \(values[position - 1]) is out of range for \(data[axis])")
            return
        }
        var target = index
        target[axis] = i
        for d in 0..<data.count where d != axis && target[d] >= data[d] {
            failure = OnnxError("\(what): indices \(indices.shape) exceed the data \(data)")
            return
        }
        result.append(flatIndex(target, shape: data))
    }
    if let failure { throw failure }
    return result
}

func scatter(_ x: OnnxTensor, at positions: [Int], updates: OnnxTensor, reduction: String) throws -> OnnxTensor {
    func run<T>(_ data: [T], _ values: [T], _ combine: (T, T) -> T) -> [T] {
        var out = data
        for (p, v) in zip(positions, values) { out[p] = reduction == "none" ? v : combine(out[p], v) }
        return out
    }
    func numeric<T: Comparable & Numeric>(_ data: [T], _ values: [T]) -> [T] {
        run(data, values) { a, b in
            switch reduction {
            case "add": a + b
            case "mul": a * b
            case "max": Swift.max(a, b)
            default: Swift.min(a, b)
            }
        }
    }
    switch (x.storage, updates.storage) {
    case (.float(let d), .float(let u)): return OnnxTensor(shape: x.shape, storage: .float(numeric(d, u)))
    case (.double(let d), .double(let u)): return OnnxTensor(shape: x.shape, storage: .double(numeric(d, u)))
    case (.int64(let d), .int64(let u)): return OnnxTensor(shape: x.shape, storage: .int64(numeric(d, u)))
    case (.int32(let d), .int32(let u)): return OnnxTensor(shape: x.shape, storage: .int32(numeric(d, u)))
    case (.bool(let d), .bool(let u)) where reduction == "none":
        return OnnxTensor(shape: x.shape, storage: .bool(run(d, u) { $1 }))
    case (.string(let d), .string(let u)) where reduction == "none":
        return OnnxTensor(shape: x.shape, storage: .string(run(d, u) { $1 }))
    default:
        throw OnnxError(
            "ScatterElements needs data and updates of one type, got \(x.elementType) and \(updates.elementType)")
    }
}

/// TopK along `axis`: values and int64 indices; ties keep the lower index first.
func topK(_ x: OnnxTensor, k: Int, axis: Int, largest: Bool, sorted: Bool) throws -> [OnnxTensor] {
    let a = try normalizeAxis(axis, rank: x.rank)
    let n = x.shape[a]
    guard k >= 0, k <= n else { throw OnnxError("TopK's k \(k) is out of range for \(n) elements") }
    guard let values = doubles(x) else { throw OnnxError("TopK takes numbers, got \(x.elementType)") }
    let outer = x.shape[..<a].reduce(1, *)
    let inner = x.shape[(a + 1)...].reduce(1, *)
    var shape = x.shape
    shape[a] = k
    var picked = [Int](repeating: 0, count: outer * k * inner)
    var indices = [Int64](repeating: 0, count: outer * k * inner)
    for o in 0..<outer {
        for i in 0..<inner {
            let order = (0..<n).sorted { p, q in
                let (u, v) = (values[(o * n + p) * inner + i], values[(o * n + q) * inner + i])
                if u == v || (u.isNaN && v.isNaN) { return p < q }
                // NaN ranks above every number, as onnxruntime orders it.
                if u.isNaN { return largest }
                if v.isNaN { return !largest }
                return largest ? u > v : u < v
            }
            for (j, p) in order.prefix(k).enumerated() {
                picked[(o * k + j) * inner + i] = (o * n + p) * inner + i
                indices[(o * k + j) * inner + i] = Int64(p)
            }
        }
    }
    _ = sorted  // results are always sorted, which "unsorted" allows
    return [
        try GatherIndices(indices: picked).tensor(from: x, shape: shape), OnnxTensor(shape: shape, int64s: indices),
    ]
}

func oneHot(_ indices: OnnxTensor, depth: Int, values: OnnxTensor, axis: Int) throws -> OnnxTensor {
    guard values.count == 2 else { throw OnnxError("OneHot's values must hold [off, on]") }
    guard let raw = doubles(indices) else { throw OnnxError("OneHot's indices must be numbers") }
    let rank = indices.rank + 1
    let a = try normalizeAxis(axis, rank: rank)
    var shape = indices.shape
    shape.insert(depth, at: a)
    let count = try checkedCount(shape, "OneHot's output")
    let outer = indices.shape[..<a].reduce(1, *)
    let inner = indices.shape[a...].reduce(1, *)
    var select = [Int](repeating: 0, count: count)
    for o in 0..<outer {
        for i in 0..<inner {
            var index = Int(raw[o * inner + i])
            if index < 0 { index += depth }
            if index >= 0 && index < depth { select[(o * depth + index) * inner + i] = 1 }
        }
    }
    return try GatherIndices(indices: select).tensor(from: values, shape: shape)
}

/// Pad with a constant, or by reflecting, repeating the edge, or wrapping around.
func pad(_ x: OnnxTensor, pads given: [Int], axes: [Int]?, mode: String, value: Double) throws -> OnnxTensor {
    let rank = x.rank
    var pads = [Int](repeating: 0, count: 2 * rank)
    let axisList = try (axes ?? Array(0..<rank)).map { a throws(OnnxError) in try normalizeAxis(a, rank: rank) }
    guard given.count == 2 * axisList.count else {
        throw OnnxError("Pad's pads has \(given.count) values; \(axisList.count) axes need \(2 * axisList.count)")
    }
    for (j, a) in axisList.enumerated() {
        pads[a] = given[j]
        pads[a + rank] = given[j + axisList.count]
    }
    let shape = (0..<rank).map { x.shape[$0] + pads[$0] + pads[$0 + rank] }
    guard shape.allSatisfy({ $0 >= 0 }) else { throw OnnxError("Pad's pads \(given) remove more than \(x.shape)") }
    let count = try checkedCount(shape, "Pad's output")
    if mode != "constant", x.count == 0, count > 0 { throw OnnxError("Pad mode \(mode) of an empty tensor") }
    // Source index per output element; -1 for the constant.
    var sources: [Int] = []
    sources.reserveCapacity(count)
    forEachIndex(shape) { index in
        var flat = 0
        for d in 0..<rank {
            let n = x.shape[d]
            var i = index[d] - pads[d]
            if i < 0 || i >= n {
                switch mode {
                case "edge": i = Swift.min(Swift.max(i, 0), n - 1)
                case "wrap": i = ((i % n) + n) % n
                case "reflect":
                    if n == 1 {
                        i = 0
                    } else {
                        let period = 2 * (n - 1)
                        i = ((i % period) + period) % period
                        if i >= n { i = period - i }
                    }
                default:
                    flat = -1
                }
            }
            if flat < 0 { break }
            flat = flat * n + i
        }
        sources.append(flat)
    }
    func fill<T>(_ v: [T], _ constant: T) -> [T] { sources.map { $0 < 0 ? constant : v[$0] } }
    switch x.storage {
    case .float(let v): return OnnxTensor(shape: shape, storage: .float(fill(v, Float(value))))
    case .double(let v): return OnnxTensor(shape: shape, storage: .double(fill(v, value)))
    case .int64(let v): return OnnxTensor(shape: shape, storage: .int64(fill(v, Int64(value))))
    case .int32(let v): return OnnxTensor(shape: shape, storage: .int32(fill(v, Int32(value))))
    case .bool(let v): return OnnxTensor(shape: shape, storage: .bool(fill(v, value != 0)))
    case .string(let v): return OnnxTensor(shape: shape, storage: .string(fill(v, "")))
    }
}
