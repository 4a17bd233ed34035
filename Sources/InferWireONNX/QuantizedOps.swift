import Foundation
import InferWireCore

/// The integer and quantized-linear operators onnxruntime's quantization tool writes:
/// DynamicQuantizeLinear, MatMulInteger, QLinearMatMul, ConvInteger and QLinearConv.
///
/// Integer products are exact: the 8-bit operands less their zero points are multiplied in
/// FP32 (through the BLAS GEMM, or the Conv kernel) when every partial sum stays below 2^24,
/// and in FP64 otherwise, so the INT32 accumulations equal onnxruntime's. Requantization
/// follows onnxruntime's MLAS: the accumulation (plus bias) converted to FP32, multiplied by
/// the FP32 scale `x_scale · w_scale / y_scale`, saturated, rounded half to even and shifted
/// by the output's zero point.
///
/// The kernels set their output types themselves (``NarrowTyping/follows`` is false): they
/// see INT8 and UINT8 inputs as the tagged INT32 storage they are.
enum QuantizedOps {
    static func register(_ r: inout [String: KernelFactory]) {
        r["DynamicQuantizeLinear"] = { c in
            try c.require(inputs: 1...1, outputs: 1...3)
            try c.attributes.checkAllUsed()
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "DynamicQuantizeLinear")
                guard x.elementType == .float, let values = x.floats else {
                    throw OnnxError("DynamicQuantizeLinear takes float, got \(x.elementType)")
                }
                let (q, scale, zero) = dynamicallyQuantized(values)
                return [
                    OnnxTensor(shape: x.shape, storage: .int32(q), narrow: .uint8),
                    OnnxTensor(shape: [], floats: [scale]),
                    OnnxTensor(shape: [], storage: .int32([zero]), narrow: .uint8),
                ]
            }
        }
        r["MatMulInteger"] = { c in
            try c.require(inputs: 2...4)
            try c.attributes.checkAllUsed()
            let prepared = preparedMatrix(c, b: 1, zero: 3, op: "MatMulInteger")
            return FunctionKernel { inputs in
                let op = "MatMulInteger"
                let b = try prepared ?? ShiftedMatrix(try input(inputs, 1, op), zero: optionalInput(inputs, 3), op: op)
                let product = try integerMatMul(
                    try input(inputs, 0, op), b, aZero: optionalInput(inputs, 2), op: op)
                return [OnnxTensor(shape: product.shape, storage: .int32(product.values))]
            }
        }
        r["QLinearMatMul"] = { c in
            try c.require(inputs: 8...8)
            try c.attributes.checkAllUsed()
            let prepared = preparedMatrix(c, b: 3, zero: 5, op: "QLinearMatMul")
            return FunctionKernel { inputs in
                let op = "QLinearMatMul"
                let a = try input(inputs, 0, op)
                let b = try prepared ?? ShiftedMatrix(try input(inputs, 3, op), zero: optionalInput(inputs, 5), op: op)
                let product = try integerMatMul(a, b, aZero: optionalInput(inputs, 2), op: op)
                let full = product.fullShape
                let scales = try QuantizationScales(
                    a: try input(inputs, 1, op),
                    aIndices: { s in
                        try parameterIndices(s, onto: full, axis: full.count - 2, what: "\(op)'s a_scale")
                    },
                    b: try input(inputs, 4, op),
                    bIndices: { s in
                        try parameterIndices(s, onto: full, axis: full.count - 1, what: "\(op)'s b_scale")
                    },
                    y: try input(inputs, 6, op), op: op)
                let output = try OutputQuantization(zero: optionalInput(inputs, 7), default: a.elementType, op: op)
                let values = scales.requantize(product.values, output)
                return [OnnxTensor(shape: product.shape, storage: .int32(values), narrow: output.type)]
            }
        }
        r["ConvInteger"] = { c in
            try c.require(inputs: 2...4)
            let convolution = try IntegerConvolution(&c, weights: 1)
            return FunctionKernel { inputs in
                let op = "ConvInteger"
                let result = try convolution.run(
                    x: try input(inputs, 0, op), w: try input(inputs, 1, op), xZero: optionalInput(inputs, 2),
                    wZero: optionalInput(inputs, 3), op: op)
                return [OnnxTensor(shape: result.shape, storage: .int32(result.values))]
            }
        }
        r["QLinearConv"] = { c in
            try c.require(inputs: 8...9)
            let convolution = try IntegerConvolution(&c, weights: 3)
            return FunctionKernel { inputs in
                let op = "QLinearConv"
                let x = try input(inputs, 0, op)
                let w = try input(inputs, 3, op)
                var result = try convolution.run(
                    x: x, w: w, xZero: optionalInput(inputs, 2), wZero: optionalInput(inputs, 5), op: op)
                let channels = w.shape[0]
                let plane = result.shape.count > 2 ? result.shape[2...].reduce(1, *) : 1
                if let bias = optionalInput(inputs, 8) {
                    guard bias.elementType == .int32, case .int32(let bv) = bias.storage, bv.count == channels else {
                        throw OnnxError(
                            "\(op)'s bias must be int32 [\(channels)], got \(bias.elementType) \(bias.shape)")
                    }
                    for i in 0..<result.values.count { result.values[i] &+= bv[(i / plane) % channels] }
                }
                let full = result.shape
                let scales = try QuantizationScales(
                    a: try input(inputs, 1, op),
                    aIndices: { s in
                        guard s.count == 1 else { throw OnnxError("\(op)'s x_scale must be a scalar, got \(s.shape)") }
                        return nil
                    },
                    b: try input(inputs, 4, op),
                    bIndices: { s in
                        guard s.count > 1 else { return nil }
                        guard s.rank == 1, s.count == channels else {
                            throw OnnxError("\(op)'s w_scale must be a scalar or [\(channels)], got \(s.shape)")
                        }
                        return try broadcastIndices(
                            from: [channels] + [Int](repeating: 1, count: full.count - 2), to: full)
                    },
                    y: try input(inputs, 6, op), op: op)
                let output = try OutputQuantization(zero: optionalInput(inputs, 7), default: x.elementType, op: op)
                let values = scales.requantize(result.values, output)
                return [OnnxTensor(shape: result.shape, storage: .int32(values), narrow: output.type)]
            }
        }
    }
}

/// An optional input: nil when omitted or past the node's inputs.
@inline(__always)
func optionalInput(_ inputs: [OnnxTensor?], _ index: Int) -> OnnxTensor? {
    index < inputs.count ? inputs[index] : nil
}

/// DynamicQuantizeLinear as onnxruntime computes it (`GetQuantizationParameter`, then
/// `MlasQuantizeLinear`): the range widened to include 0, scale (max − min) / 255 (1 when the
/// range is empty), the zero point −min / scale saturated and rounded half to even, and each
/// value x / scale rounded half to even plus the zero point, saturated to 0…255.
func dynamicallyQuantized(_ values: [Float]) -> (values: [Int32], scale: Float, zero: Int32) {
    var low: Float = 0
    var high: Float = 0
    for v in values {
        if v < low { low = v }
        if v > high { high = v }
    }
    let scale: Float = high == low ? 1 : (high - low) / 255
    let initial = 0 - low / scale
    let zero = Int32(Swift.max(0, Swift.min(255, initial)).rounded(.toNearestOrEven))
    let lowest = Float(0 - zero)
    let highest = Float(255 - zero)
    let quantized = values.map { v -> Int32 in
        var q = v / scale
        // As MLAS's MAXPS/MINPS: NaN saturates to the lowest value.
        if !(q >= lowest) { q = lowest }
        if q > highest { q = highest }
        return Int32(q.rounded(.toNearestOrEven)) + zero
    }
    return (quantized, scale, zero)
}

/// The elements of an INT8 or UINT8 tensor (held as INT32).
func quantizedValues(_ t: OnnxTensor, _ what: @autoclosure () -> String) throws -> [Int32] {
    guard t.elementType == .uint8 || t.elementType == .int8, case .int32(let v) = t.storage else {
        throw OnnxError("\(what()) must be uint8 or int8, got \(t.elementType)")
    }
    return v
}

/// Where each element of `shape` finds its quantization parameter in `p`: nil when `p` has
/// one value (per tensor). A 1-D parameter of `shape[axis]` values applies along `axis` (rows:
/// rank − 2, columns: rank − 1, channels: 1); any other must broadcast to `shape` (as
/// `[…, M, 1]` row and `[…, 1, N]` column parameters do).
func parameterIndices(_ p: OnnxTensor, onto shape: [Int], axis: Int, what: String) throws -> [Int]? {
    if p.count == 1 { return nil }
    var parameterShape = p.shape
    if p.rank == 1 {
        guard axis >= 0, axis < shape.count, p.shape[0] == shape[axis] else {
            throw OnnxError(
                "\(what) has \(p.count) values; \(shape) needs 1 or \(axis >= 0 && axis < shape.count ? shape[axis] : 1)"
            )
        }
        parameterShape = [p.shape[0]] + [Int](repeating: 1, count: shape.count - 1 - axis)
    }
    guard parameterShape.count <= shape.count, (try? broadcastShape(parameterShape, shape)) == shape else {
        throw OnnxError("\(what) of shape \(p.shape) does not fit \(shape)")
    }
    return try broadcastIndices(from: parameterShape, to: shape)
}

/// Quantized values less their zero points, and the largest magnitude among them.
func shifted(_ values: [Int32], zero: OnnxTensor?, indices: [Int]?, type: ElementType, what: String) throws -> (
    [Int32], Int32
) {
    guard let zero else { return (values, values.lazy.map { abs($0) }.max() ?? 0) }
    guard zero.elementType == type, case .int32(let z) = zero.storage, !z.isEmpty else {
        throw OnnxError("\(what) must be \(type) like its operand, got \(zero.elementType)")
    }
    var result = values
    var largest: Int32 = 0
    if let indices {
        for i in 0..<result.count {
            result[i] -= z[indices[i]]
            largest = max(largest, abs(result[i]))
        }
    } else {
        let offset = z[0]
        for i in 0..<result.count {
            result[i] -= offset
            largest = max(largest, abs(result[i]))
        }
    }
    return (result, largest)
}

/// Integers as FP32 (`single`) or FP64 storage, for BLAS or the Conv kernel to multiply.
func exactStorage(_ values: [Int32], single: Bool) -> OnnxTensor.Storage {
    single ? .float(values.map { Float($0) }) : .double(values.map { Double($0) })
}

/// Whether sums of `terms` products of integers of magnitude at most `a` and `b` are exact in
/// FP32 (every partial sum below 2^24); FP64 is exact below 2^53, past any tensor's reach.
func exactInSingle(terms: Int, _ a: Int32, _ b: Int32) -> Bool {
    Double(terms) * Double(a) * Double(b) < 16_777_216
}

/// Exact integers computed in FP32 or FP64 back to INT32 (wrapping, as INT32 accumulation does).
func integers(_ t: OnnxTensor) throws -> [Int32] {
    switch t.storage {
    case .float(let v): return v.map { Int32(truncatingIfNeeded: Int64($0)) }
    case .double(let v): return v.map { Int32(truncatingIfNeeded: Int64($0)) }
    default: throw OnnxError("integer product went astray (\(t.elementType))")
    }
}

/// B of MatMulInteger or QLinearMatMul less its zero points (per tensor, or per column: `[N]`
/// or `[…, 1, N]`), 1-D promoted to a column; prepared once when both are initializers.
struct ShiftedMatrix: Sendable {
    var shape: [Int]
    var wasVector: Bool
    var values: [Int32]
    var largest: Int32
    /// The values as FP32 (exact), ready for `sgemm`.
    var single: [Float]

    init(_ b: OnnxTensor, zero: OnnxTensor?, op: String) throws {
        guard b.rank >= 1 else { throw OnnxError("\(op) needs operands of rank ≥ 1") }
        self.wasVector = b.rank == 1
        self.shape = b.rank == 1 ? [b.shape[0], 1] : b.shape
        let shape = self.shape
        (self.values, self.largest) = try shifted(
            try quantizedValues(b, "\(op)'s B"), zero: zero,
            indices: try zero.flatMap {
                try parameterIndices($0, onto: shape, axis: shape.count - 1, what: "\(op)'s B zero point")
            }, type: b.elementType, what: "\(op)'s B zero point")
        self.single = self.values.map { Float($0) }
    }
}

/// A B operand and zero point that are both initializers, shifted at load time (nil when
/// they are not, or do not fit: the run then reports why).
func preparedMatrix(_ c: NodeContext, b: Int, zero: Int, op: String) -> ShiftedMatrix? {
    guard let matrix = c.constantInputs[b], zero >= c.inputCount || c.constantInputs[zero] != nil else { return nil }
    return try? ShiftedMatrix(matrix, zero: c.constantInputs[zero], op: op)
}

/// MatMulInteger's product (numpy matmul shapes) of 8-bit operands less their zero points:
/// per tensor, per row of A (`[M]` or `[…, M, 1]`) and per column of B (`[N]` or `[…, 1, N]`).
/// `fullShape` keeps the dimensions a 1-D operand drops from `shape`.
func integerMatMul(_ a: OnnxTensor, _ b: ShiftedMatrix, aZero: OnnxTensor?, op: String) throws -> (
    values: [Int32], shape: [Int], fullShape: [Int]
) {
    guard a.rank >= 1 else { throw OnnxError("\(op) needs operands of rank ≥ 1") }
    let av = try quantizedValues(a, "\(op)'s A")
    let aShape = a.rank == 1 ? [1, a.shape[0]] : a.shape
    let (sa, largestA) = try shifted(
        av, zero: aZero,
        indices: try aZero.flatMap {
            try parameterIndices($0, onto: aShape, axis: aShape.count - 2, what: "\(op)'s A zero point")
        }, type: a.elementType, what: "\(op)'s A zero point")
    let single = exactInSingle(terms: aShape[aShape.count - 1], largestA, b.largest)
    let product = try matMul(
        OnnxTensor(shape: aShape, storage: exactStorage(sa, single: single)),
        OnnxTensor(shape: b.shape, storage: single ? .float(b.single) : exactStorage(b.values, single: false)))
    var shape = product.shape
    if a.rank == 1 { shape.remove(at: shape.count - 2) }
    if b.wasVector { shape.removeLast() }
    return (try integers(product), shape, product.shape)
}

/// The output type and zero point of a QLinear operator.
struct OutputQuantization {
    var type: ElementType
    var zero: Int32
    var low: Int32
    var high: Int32

    init(zero: OnnxTensor?, default type: ElementType, op: String) throws {
        self.type = zero?.elementType ?? type
        switch self.type {
        case .uint8: (self.low, self.high) = (0, 255)
        case .int8: (self.low, self.high) = (-128, 127)
        default: throw OnnxError("\(op)'s output must be uint8 or int8, got \(self.type)")
        }
        if let zero {
            guard zero.count == 1, case .int32(let z) = zero.storage else {
                throw OnnxError("\(op)'s output zero point must be a scalar, got \(zero.shape)")
            }
            self.zero = z[0]
        } else {
            self.zero = 0
        }
    }
}

/// The requantization multipliers `a_scale · b_scale / y_scale` of each output element,
/// computed (as onnxruntime and ONNX's reference do) in the scales' own precision.
struct QuantizationScales {
    var a: [Float]
    var aIndices: [Int]?
    var b: [Float]
    var bIndices: [Int]?
    var y: Float
    /// FP16 or BF16 scales: each step rounded to that type, and the product taken in FP64, as
    /// ONNX's reference does (onnxruntime takes only FP32 scales).
    var round: (@Sendable (Float) -> Float)?

    init(
        a: OnnxTensor, aIndices: (OnnxTensor) throws -> [Int]?, b: OnnxTensor, bIndices: (OnnxTensor) throws -> [Int]?,
        y: OnnxTensor, op: String
    ) throws {
        let type = a.elementType
        guard [.float, .float16, .bfloat16].contains(type), b.elementType == type, y.elementType == type,
            let av = a.floats, let bv = b.floats, let yv = y.floats
        else {
            throw OnnxError(
                "\(op)'s scales must share one float type, got \(a.elementType), \(b.elementType), \(y.elementType)")
        }
        guard yv.count == 1 else { throw OnnxError("\(op)'s output scale must be a scalar, got \(y.shape)") }
        self.a = av
        self.b = bv
        self.y = yv[0]
        self.aIndices = try aIndices(a)
        self.bIndices = try bIndices(b)
        switch type {
        case .float16: self.round = { Float(Float16($0)) }
        case .bfloat16: self.round = { bfloat16Value(bfloat16Bits($0)) }
        default: self.round = nil
        }
    }

    func multiplier(_ a: Float, _ b: Float) -> Float {
        guard let round = self.round else { return a * b / self.y }
        return round(round(a * b) / self.y)
    }

    /// The multipliers, and which of them each element takes (nil: the first, per tensor).
    func multipliers(count: Int) -> ([Float], [Int]?) {
        switch (self.aIndices, self.bIndices) {
        case (nil, let indices): return (self.b.map { self.multiplier(self.a[0], $0) }, indices)
        case (let indices, nil): return (self.a.map { self.multiplier($0, self.b[0]) }, indices)
        case (let ai?, let bi?): return ((0..<count).map { self.multiplier(self.a[ai[$0]], self.b[bi[$0]]) }, nil)
        }
    }

    /// Each accumulation scaled, saturated, rounded half to even and shifted by the zero point.
    func requantize(_ values: [Int32], _ output: OutputQuantization) -> [Int32] {
        let (table, indices) = self.multipliers(count: values.count)
        let perElement = self.aIndices != nil && self.bIndices != nil
        @inline(__always) func multiplier(_ i: Int) -> Float { table[perElement ? i : indices?[i] ?? 0] }
        let lowest = output.low - output.zero
        let highest = output.high - output.zero
        if self.round != nil {
            return values.indices.map { i in
                let v = Double(values[i]) * Double(multiplier(i))
                let q = v.isNaN ? Double(lowest) : Swift.min(Swift.max(v, Double(lowest)), Double(highest))
                return Int32(q.rounded(.toNearestOrEven)) + output.zero
            }
        }
        return values.indices.map { i in
            var v = Float(values[i]) * multiplier(i)
            // MLAS's MAXPS/MINPS: NaN saturates to the lowest value.
            if !(v >= Float(lowest)) { v = Float(lowest) }
            if v > Float(highest) { v = Float(highest) }
            return Int32(v.rounded(.toNearestOrEven)) + output.zero
        }
    }
}

/// ConvInteger's and QLinearConv's convolution of 8-bit x and w less their zero points (x's per
/// tensor, w's per tensor or per output channel), exact in INT32: through the Conv kernel (2-D
/// by im2col and GEMM) in FP32 when every partial sum stays below 2^24, else directly in FP64.
struct IntegerConvolution: Sendable {
    let conv: any Kernel
    let window: WindowND.Attributes
    let group: Int

    /// The Conv kernel for the node's attributes (`weights`: the weight input's position).
    init(_ c: inout NodeContext, weights: Int) throws {
        var windowContext = c
        self.window = try WindowND.Attributes(&windowContext)
        var convContext = NodeContext(
            label: c.label, attributes: c.attributes, opset: c.opset, inputCount: 2, outputCount: 1,
            constantInputs: c.constantInputs[weights].map { [1: $0] } ?? [:])
        self.conv = try Self.convFactory(&convContext)
        c.attributes = convContext.attributes
        var groupContext = c
        self.group = try groupContext.attributes.int("group", default: 1)
        try c.attributes.checkAllUsed()
    }

    static let convFactory: KernelFactory = {
        var r: [String: KernelFactory] = [:]
        ConvolutionOps.register(&r)
        return r["Conv"]!
    }()

    func run(x: OnnxTensor, w: OnnxTensor, xZero: OnnxTensor?, wZero: OnnxTensor?, op: String) throws -> (
        values: [Int32], shape: [Int]
    ) {
        guard x.rank >= 3, w.rank == x.rank, w.shape[0] > 0 else {
            throw OnnxError("\(op) takes x [N, C, …] and w [M, C/group, …] of one rank, got \(x.shape) and \(w.shape)")
        }
        let xv = try quantizedValues(x, "\(op)'s x")
        let wv = try quantizedValues(w, "\(op)'s w")
        if let xZero, xZero.count != 1 {
            throw OnnxError("\(op)'s x zero point must be a scalar, got \(xZero.shape)")
        }
        let channels = w.shape[0]
        let perChannel = w.count / channels
        var wIndices: [Int]?
        if let wZero, wZero.count != 1 {
            guard wZero.rank == 1, wZero.count == channels else {
                throw OnnxError("\(op)'s w zero point must be a scalar or [\(channels)], got \(wZero.shape)")
            }
            wIndices = (0..<w.count).map { $0 / perChannel }
        }
        let (sx, largestX) = try shifted(
            xv, zero: xZero, indices: nil, type: x.elementType, what: "\(op)'s x zero point")
        let (sw, largestW) = try shifted(
            wv, zero: wZero, indices: wIndices, type: w.elementType, what: "\(op)'s w zero point")
        let result: OnnxTensor
        if exactInSingle(terms: perChannel, largestX, largestW) {
            let xt = OnnxTensor(shape: x.shape, storage: exactStorage(sx, single: true))
            let wt = OnnxTensor(shape: w.shape, storage: exactStorage(sw, single: true))
            guard let y = try self.conv.run([xt, wt]).first else { throw OnnxError("\(op): Conv gave no output") }
            result = y
        } else {
            let window = try WindowND.make(kernel: Array(w.shape.dropFirst(2)), self.window)
            result = try convND(
                OnnxTensor(shape: x.shape, storage: exactStorage(sx, single: false)),
                OnnxTensor(shape: w.shape, storage: exactStorage(sw, single: false)), bias: nil, group: self.group,
                window: window)
        }
        return (try integers(result), result.shape)
    }
}
