import Foundation

/// The elementwise unary operators. Each FP32 case is a plain loop over contiguous
/// memory with the operation known at compile time, so the compiler vectorises the
/// arithmetic ones (Relu, Abs, Neg, LeakyRelu, Clip-like maps) with SIMD instructions.
enum UnaryOp: Sendable {
    case relu
    case leakyRelu(Float)
    case sigmoid, tanh, exp, log, sqrt, erf, abs, neg

    var name: String {
        switch self {
        case .relu: "Relu"
        case .leakyRelu: "LeakyRelu"
        case .sigmoid: "Sigmoid"
        case .tanh: "Tanh"
        case .exp: "Exp"
        case .log: "Log"
        case .sqrt: "Sqrt"
        case .erf: "Erf"
        case .abs: "Abs"
        case .neg: "Neg"
        }
    }

    @inline(__always)
    static func loop(_ x: [Float], _ body: (Float) -> Float) -> [Float] {
        [Float](unsafeUninitializedCapacity: x.count) { out, n in
            x.withUnsafeBufferPointer { p in
                for i in 0..<p.count { out[i] = body(p[i]) }
            }
            n = x.count
        }
    }

    func apply(_ x: [Float]) -> [Float] {
        switch self {
        case .relu: SIMDLoops.map(x, { $0.replacing(with: 0, where: $0 .< 0) }, { $0 < 0 ? 0 : $0 })
        case .leakyRelu(let a):
            SIMDLoops.map(x, { $0.replacing(with: $0 * a, where: $0 .< 0) }, { $0 >= 0 ? $0 : $0 * a })
        case .sigmoid: Self.loop(x) { InferWireONNX.sigmoid($0) }
        case .tanh: Self.loop(x) { tanhf($0) }
        case .exp: Self.loop(x) { expf($0) }
        case .log: Self.loop(x) { logf($0) }
        case .sqrt: Self.loop(x) { $0.squareRoot() }
        case .erf: Self.loop(x) { erff($0) }
        case .abs: SIMDLoops.map(x, { $0.replacing(with: -$0, where: $0 .< 0) }, { Swift.abs($0) })
        case .neg: SIMDLoops.map(x, { -$0 }, { -$0 })
        }
    }

    func apply(_ x: [Double]) -> [Double] {
        switch self {
        case .relu: x.map { Swift.max($0, 0) }
        case .leakyRelu(let a): x.map { $0 >= 0 ? $0 : $0 * Double(a) }
        case .sigmoid: x.map { InferWireONNX.sigmoid($0) }
        case .tanh: x.map { Foundation.tanh($0) }
        case .exp: x.map { Foundation.exp($0) }
        case .log: x.map { Foundation.log($0) }
        case .sqrt: x.map { $0.squareRoot() }
        case .erf: x.map { Foundation.erf($0) }
        case .abs: x.map { Swift.abs($0) }
        case .neg: x.map { -$0 }
        }
    }

    /// Integer forms exist for Relu, Abs and Neg.
    func apply<T: FixedWidthInteger & SignedInteger>(_ x: [T]) -> [T]? {
        switch self {
        case .relu: x.map { Swift.max($0, 0) }
        case .abs: x.map { $0 == .min ? $0 : Swift.abs($0) }
        case .neg: x.map { 0 &- $0 }
        default: nil
        }
    }

    var kernel: any Kernel {
        let op = self
        return FunctionKernel { inputs in
            let x = try input(inputs, 0, op.name)
            switch x.storage {
            case .float(let v): return [OnnxTensor(shape: x.shape, storage: .float(op.apply(v)))]
            case .double(let v): return [OnnxTensor(shape: x.shape, storage: .double(op.apply(v)))]
            case .int64(let v):
                if let r = op.apply(v) { return [OnnxTensor(shape: x.shape, storage: .int64(r))] }
            case .int32(let v):
                if let r = op.apply(v) { return [OnnxTensor(shape: x.shape, storage: .int32(r))] }
            default: break
            }
            throw OnnxError("\(op.name) does not take \(x.elementType)")
        }
    }
}

enum ArithmeticOp: Sendable { case add, sub, mul, div }

/// Add, Sub, Mul, Div with broadcasting, on FP32, FP64, INT64 and INT32.
func arithmeticKernel(_ op: ArithmeticOp, name: String) -> any Kernel {
    FunctionKernel { inputs in
        let a = try input(inputs, 0, name)
        let b = try input(inputs, 1, name)
        switch (a.storage, b.storage) {
        case (.float(let x), .float(let y)):
            let (r, s): ([Float], [Int])
            switch op {
            case .add: (r, s) = try floatBinary(x, a.shape, y, b.shape, { $0 + $1 }, { $0 + $1 })
            case .sub: (r, s) = try floatBinary(x, a.shape, y, b.shape, { $0 - $1 }, { $0 - $1 })
            case .mul: (r, s) = try floatBinary(x, a.shape, y, b.shape, { $0 * $1 }, { $0 * $1 })
            case .div: (r, s) = try floatBinary(x, a.shape, y, b.shape, { $0 / $1 }, { $0 / $1 })
            }
            return [OnnxTensor(shape: s, storage: .float(r))]
        case (.double(let x), .double(let y)):
            let (r, s): ([Double], [Int])
            switch op {
            case .add: (r, s) = try broadcastBinary(x, a.shape, y, b.shape, +)
            case .sub: (r, s) = try broadcastBinary(x, a.shape, y, b.shape, -)
            case .mul: (r, s) = try broadcastBinary(x, a.shape, y, b.shape, *)
            case .div: (r, s) = try broadcastBinary(x, a.shape, y, b.shape, /)
            }
            return [OnnxTensor(shape: s, storage: .double(r))]
        case (.int64(let x), .int64(let y)):
            if op == .div, y.contains(0) { throw OnnxError("\(name): integer division by zero") }
            let (r, s): ([Int64], [Int])
            switch op {
            case .add: (r, s) = try broadcastBinary(x, a.shape, y, b.shape, &+)
            case .sub: (r, s) = try broadcastBinary(x, a.shape, y, b.shape, &-)
            case .mul: (r, s) = try broadcastBinary(x, a.shape, y, b.shape, &*)
            case .div:
                (r, s) = try broadcastBinary(x, a.shape, y, b.shape) {
                    $0.dividedReportingOverflow(by: $1).partialValue
                }
            }
            return [OnnxTensor(shape: s, storage: .int64(r))]
        case (.int32(let x), .int32(let y)):
            if op == .div, y.contains(0) { throw OnnxError("\(name): integer division by zero") }
            let (r, s): ([Int32], [Int])
            switch op {
            case .add: (r, s) = try broadcastBinary(x, a.shape, y, b.shape, &+)
            case .sub: (r, s) = try broadcastBinary(x, a.shape, y, b.shape, &-)
            case .mul: (r, s) = try broadcastBinary(x, a.shape, y, b.shape, &*)
            case .div:
                (r, s) = try broadcastBinary(x, a.shape, y, b.shape) {
                    $0.dividedReportingOverflow(by: $1).partialValue
                }
            }
            return [OnnxTensor(shape: s, storage: .int32(r))]
        default:
            throw OnnxError("\(name) needs two inputs of one numeric type, got \(a.elementType) and \(b.elementType)")
        }
    }
}

/// FP32 broadcasting with SIMD loops for the shapes models use most: equal shapes, a
/// scalar on either side, and a trailing-row operand (a bias added to every row); other
/// shapes take the general path.
@inline(__always)
func floatBinary(
    _ a: [Float], _ aShape: [Int], _ b: [Float], _ bShape: [Int],
    _ vector: (SIMD8<Float>, SIMD8<Float>) -> SIMD8<Float>, _ op: (Float, Float) -> Float
) throws(OnnxError) -> ([Float], [Int]) {
    if aShape == bShape {
        return (SIMDLoops.zip(a, b, width: a.count, swapped: false, vector, op), aShape)
    }
    let shape = try broadcastShape(aShape, bShape)
    let total = shape.reduce(1, *)
    // b repeats along the leading dimensions of a (e.g. [N, C] + [C]), or the reverse.
    let bCore = Array(bShape.drop(while: { $0 == 1 }))
    let aCore = Array(aShape.drop(while: { $0 == 1 }))
    if shape == aShape, b.count > 0, total % b.count == 0, Array(aShape.suffix(bCore.count)) == bCore {
        if b.count == 1 {
            let y = b[0]
            return (SIMDLoops.map(a, { vector($0, SIMD8(repeating: y)) }, { op($0, y) }), shape)
        }
        return (SIMDLoops.zip(a, b, width: b.count, swapped: false, vector, op), shape)
    }
    if shape == bShape, a.count > 0, total % a.count == 0, Array(bShape.suffix(aCore.count)) == aCore {
        if a.count == 1 {
            let x = a[0]
            return (SIMDLoops.map(b, { vector(SIMD8(repeating: x), $0) }, { op(x, $0) }), shape)
        }
        return (SIMDLoops.zip(b, a, width: a.count, swapped: true, vector, op), shape)
    }
    return try broadcastBinary(a, aShape, b, bShape, op)
}

@inline(__always) func sigmoid(_ x: Float) -> Float { x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x)) }
@inline(__always) func sigmoid(_ x: Double) -> Double { x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x)) }

enum ElementwiseOps {
    static func register(_ r: inout [String: KernelFactory]) {
        let simple: [(String, UnaryOp)] = [
            ("Relu", .relu), ("Sigmoid", .sigmoid), ("Tanh", .tanh), ("Exp", .exp), ("Log", .log),
            ("Sqrt", .sqrt), ("Erf", .erf), ("Abs", .abs), ("Neg", .neg),
        ]
        for (name, op) in simple {
            r[name] = { c in
                try c.require(inputs: 1...1)
                return op.kernel
            }
        }
        r["LeakyRelu"] = { c in
            try c.require(inputs: 1...1)
            return UnaryOp.leakyRelu(try c.attributes.float("alpha", default: 0.01)).kernel
        }
        r["Identity"] = { c in
            try c.require(inputs: 1...1)
            return FunctionKernel { inputs in [try input(inputs, 0, "Identity")] }
        }
        r["Add"] = { c in
            try c.require(inputs: 2...2)
            return arithmeticKernel(.add, name: "Add")
        }
        r["Sub"] = { c in
            try c.require(inputs: 2...2)
            return arithmeticKernel(.sub, name: "Sub")
        }
        r["Mul"] = { c in
            try c.require(inputs: 2...2)
            return arithmeticKernel(.mul, name: "Mul")
        }
        r["Div"] = { c in
            try c.require(inputs: 2...2)
            return arithmeticKernel(.div, name: "Div")
        }
        r["Clip"] = { c in
            try c.require(inputs: 1...3)
            // Before opset 11 the bounds are attributes; from 11 they are optional inputs.
            let attrMin = try c.attributes.float("min")
            let attrMax = try c.attributes.float("max")
            try c.attributes.checkAllUsed()
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "Clip")
                func bound(_ i: Int) -> Double? {
                    guard i < inputs.count, let t = inputs[i] else { return nil }
                    switch t.storage {
                    case .float(let v): return v.first.map(Double.init)
                    case .double(let v): return v.first
                    case .int64(let v): return v.first.map(Double.init)
                    case .int32(let v): return v.first.map(Double.init)
                    default: return nil
                    }
                }
                let lo = bound(1) ?? attrMin.map(Double.init)
                let hi = bound(2) ?? attrMax.map(Double.init)
                switch x.storage {
                case .float(let v):
                    let l = lo.map(Float.init) ?? -.infinity
                    let h = hi.map(Float.init) ?? .infinity
                    return [OnnxTensor(shape: x.shape, storage: .float(v.map { min(max($0, l), h) }))]
                case .double(let v):
                    let l = lo ?? -.infinity
                    let h = hi ?? .infinity
                    return [OnnxTensor(shape: x.shape, storage: .double(v.map { min(max($0, l), h) }))]
                case .int64(let v):
                    func bound(_ d: Double?, _ fallback: Int64) -> Int64 {
                        d.flatMap { $0.isNaN ? nil : Int64(exactly: $0.rounded(.towardZero)) ?? ($0 < 0 ? .min : .max) }
                            ?? fallback
                    }
                    let l = bound(lo, .min)
                    let h = bound(hi, .max)
                    return [OnnxTensor(shape: x.shape, storage: .int64(v.map { min(max($0, l), h) }))]
                case .int32(let v):
                    func bound(_ d: Double?, _ fallback: Int32) -> Int32 {
                        d.flatMap { $0.isNaN ? nil : Int32(exactly: $0.rounded(.towardZero)) ?? ($0 < 0 ? .min : .max) }
                            ?? fallback
                    }
                    let l = bound(lo, .min)
                    let h = bound(hi, .max)
                    return [OnnxTensor(shape: x.shape, storage: .int32(v.map { min(max($0, l), h) }))]
                default: throw OnnxError("Clip takes a numeric tensor, got \(x.elementType)")
                }
            }
        }
        r["Cast"] = { c in
            try c.require(inputs: 1...1)
            guard let code = try c.attributes.int("to") else { throw c.error("attribute 'to' is required") }
            guard let code32 = Int32(exactly: code), let target = ElementType(onnx: code32) else {
                throw c.error("casting to type \(code) is not supported")
            }
            let rounding = try MiniFloat.Rounding(&c)
            try c.attributes.checkAllUsed()
            return FunctionKernel { inputs in [try cast(try input(inputs, 0, "Cast"), to: target, rounding)] }
        }
        r["CastLike"] = { c in
            try c.require(inputs: 2...2)
            let rounding = try MiniFloat.Rounding(&c)
            try c.attributes.checkAllUsed()
            return FunctionKernel { inputs in
                [
                    try cast(
                        try input(inputs, 0, "CastLike"), to: try input(inputs, 1, "CastLike").elementType, rounding)
                ]
            }
        }
    }
}

extension MiniFloat.Rounding {
    /// Cast's `saturate` and `round_mode` attributes (they only change float8 targets).
    init(_ c: inout NodeContext) throws {
        self.init(saturate: try c.attributes.int("saturate", default: 1) != 0)
        self.e8m0Mode = try c.attributes.string("round_mode", default: "up")
        guard ["up", "down", "nearest"].contains(self.e8m0Mode) else {
            throw c.error("round_mode '\(self.e8m0Mode)' is not one of up, down, nearest")
        }
    }
}

/// Converts a tensor's elements, as ONNX Cast does (float to integer truncates toward zero;
/// `rounding` says how floats become float8).
func cast(_ x: OnnxTensor, to target: ElementType, _ rounding: MiniFloat.Rounding = .standard) throws -> OnnxTensor {
    if x.elementType == target { return x }
    if case .float8(let format) = target {
        let floats = try cast(x.widened, to: .float)
        guard case .float(let v) = floats.storage else { throw OnnxError("Cast to \(target) went astray") }
        return OnnxTensor(
            shape: x.shape, storage: .float(v.map { format.decode(format.encode($0, rounding)) }), narrow: target)
    }
    if let range = target.subByteRange, x.storageType == .float || x.storageType == .double {
        // As ONNX's reference: truncated, and 0 where that leaves the range (or for NaN).
        let doubles = try cast(x.widened, to: .double)
        guard case .double(let v) = doubles.storage else { throw OnnxError("Cast to \(target) went astray") }
        let values = v.map { d -> Int32 in
            let t = d.rounded(.towardZero)
            return t.isFinite && Double(range.lowerBound) <= t && t <= Double(range.upperBound) ? Int32(t) : 0
        }
        return OnnxTensor(shape: x.shape, storage: .int32(values), narrow: target)
    }
    if target.isNarrow {
        // Into the wide type, then wrapped (integers) or rounded (floats) into the narrow one.
        let wide = try cast(x.widened, to: target.wide)
        return OnnxTensor(shape: x.shape, storage: target.narrowed(wide.storage), narrow: target)
    }
    // Route through Double for numbers; strings parse and print.
    let doubles: [Double]
    switch x.storage {
    case .float(let v): doubles = v.map(Double.init)
    case .double(let v): doubles = v
    case .int64(let v):
        if target == .string { return OnnxTensor(shape: x.shape, storage: .string(v.map { String($0) })) }
        if target == .int32 {
            return OnnxTensor(shape: x.shape, storage: .int32(v.map { Int32(truncatingIfNeeded: $0) }))
        }
        doubles = v.map(Double.init)
    case .int32(let v):
        if target == .int64 { return OnnxTensor(shape: x.shape, storage: .int64(v.map(Int64.init))) }
        doubles = v.map(Double.init)
    case .bool(let v): doubles = v.map { $0 ? 1 : 0 }
    case .string(let v):
        doubles = try v.map { s in
            guard let d = Double(s) ?? (s.lowercased() == "nan" ? .nan : nil) else {
                throw OnnxError("Cast: '\(s)' is not a number")
            }
            return d
        }
    }
    func integer<T: FixedWidthInteger>(_ d: Double) -> T {
        guard d.isFinite else { return 0 }
        return T(exactly: d.rounded(.towardZero)) ?? (d < 0 ? T.min : T.max)
    }
    switch target {
    case .float: return OnnxTensor(shape: x.shape, storage: .float(doubles.map { Float($0) }))
    case .double: return OnnxTensor(shape: x.shape, storage: .double(doubles))
    case .int64: return OnnxTensor(shape: x.shape, storage: .int64(doubles.map { integer($0) }))
    case .int32: return OnnxTensor(shape: x.shape, storage: .int32(doubles.map { integer($0) }))
    case .bool: return OnnxTensor(shape: x.shape, storage: .bool(doubles.map { $0 != 0 }))
    case .string:
        if case .float(let v) = x.storage { return OnnxTensor(shape: x.shape, storage: .string(v.map { "\($0)" })) }
        return OnnxTensor(shape: x.shape, storage: .string(doubles.map { "\($0)" }))
    case .int8, .uint8, .int16, .uint16, .uint32, .uint64, .float16, .bfloat16, .float8, .subByte:
        throw OnnxError("Cast to \(target) went astray")  // handled above
    }
}
