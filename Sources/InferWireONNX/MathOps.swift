import Foundation

/// Elementwise math beyond the arithmetic operators: unary functions of floats, Pow, Mod,
/// and the variadic Min, Max, Sum and Mean.
enum MathOps {
    /// A float function with its attributes applied; computed in Double, stored in the input's type.
    typealias Function = @Sendable (Double) -> Double

    static func register(_ r: inout [String: KernelFactory]) {
        let plain: [(String, Function)] = [
            ("Reciprocal", { 1 / $0 }), ("Floor", { $0.rounded(.down) }), ("Ceil", { $0.rounded(.up) }),
            ("Round", { $0.rounded(.toNearestOrEven) }), ("Sin", Foundation.sin), ("Cos", Foundation.cos),
            ("Tan", Foundation.tan), ("Asin", Foundation.asin), ("Acos", Foundation.acos), ("Atan", Foundation.atan),
            ("Sinh", Foundation.sinh), ("Cosh", Foundation.cosh), ("Asinh", Foundation.asinh),
            ("Acosh", Foundation.acosh), ("Atanh", Foundation.atanh), ("Softsign", { $0 / (1 + Swift.abs($0)) }),
            ("Softplus", { $0 > 30 ? $0 : Foundation.log1p(Foundation.exp($0)) }),
            ("Mish", { $0 * Foundation.tanh($0 > 30 ? $0 : Foundation.log1p(Foundation.exp($0))) }),
            ("HardSwish", { $0 * Swift.max(0, Swift.min(1, $0 / 6 + 0.5)) }),
        ]
        for (name, f) in plain {
            r[name] = { c in
                try c.require(inputs: 1...1)
                try c.attributes.checkAllUsed()
                return floatFunction(name, f)
            }
        }
        r["Sign"] = { c in
            try c.require(inputs: 1...1)
            return FunctionKernel { inputs in
                let x = try input(inputs, 0, "Sign")
                switch x.storage {
                case .int64(let v): return [OnnxTensor(shape: x.shape, storage: .int64(v.map { $0.signum() }))]
                case .int32(let v): return [OnnxTensor(shape: x.shape, storage: .int32(v.map { $0.signum() }))]
                default: return [try mapFloats(x, "Sign") { $0 > 0 ? 1 : ($0 < 0 ? -1 : $0) }]
                }
            }
        }
        r["HardSigmoid"] = { c in
            try c.require(inputs: 1...1)
            let alpha = Double(try c.attributes.float("alpha", default: 0.2))
            let beta = Double(try c.attributes.float("beta", default: 0.5))
            try c.attributes.checkAllUsed()
            return floatFunction("HardSigmoid") { Swift.max(0, Swift.min(1, alpha * $0 + beta)) }
        }
        r["Elu"] = { c in
            try c.require(inputs: 1...1)
            let alpha = Double(try c.attributes.float("alpha", default: 1))
            try c.attributes.checkAllUsed()
            return floatFunction("Elu") { $0 >= 0 ? $0 : alpha * Foundation.expm1($0) }
        }
        r["Celu"] = { c in
            try c.require(inputs: 1...1)
            let alpha = Double(try c.attributes.float("alpha", default: 1))
            try c.attributes.checkAllUsed()
            return floatFunction("Celu") { Swift.max(0, $0) + Swift.min(0, alpha * Foundation.expm1($0 / alpha)) }
        }
        r["Selu"] = { c in
            try c.require(inputs: 1...1)
            let alpha = Double(try c.attributes.float("alpha", default: 1.67326319217681884765625))
            let gamma = Double(try c.attributes.float("gamma", default: 1.05070102214813232421875))
            try c.attributes.checkAllUsed()
            return floatFunction("Selu") { $0 > 0 ? gamma * $0 : gamma * alpha * Foundation.expm1($0) }
        }
        r["ThresholdedRelu"] = { c in
            try c.require(inputs: 1...1)
            let alpha = Double(try c.attributes.float("alpha", default: 1))
            try c.attributes.checkAllUsed()
            return floatFunction("ThresholdedRelu") { $0 > alpha ? $0 : 0 }
        }
        r["Gelu"] = { c in
            try c.require(inputs: 1...1)
            let approximate = try c.attributes.string("approximate", default: "none")
            try c.attributes.checkAllUsed()
            switch approximate {
            case "none":
                return floatFunction("Gelu") { 0.5 * $0 * (1 + Foundation.erf($0 / 2.0.squareRoot())) }
            case "tanh":
                let k = (2 / Double.pi).squareRoot()
                return floatFunction("Gelu") { 0.5 * $0 * (1 + Foundation.tanh(k * ($0 + 0.044715 * $0 * $0 * $0))) }
            default:
                throw c.error("approximate '\(approximate)' is not supported (none, tanh)")
            }
        }
        r["Pow"] = { c in
            try c.require(inputs: 2...2)
            return FunctionKernel { inputs in
                [try power(try input(inputs, 0, "Pow"), try input(inputs, 1, "Pow"))]
            }
        }
        r["Mod"] = { c in
            try c.require(inputs: 2...2)
            let fmod = try c.attributes.int("fmod", default: 0) != 0
            try c.attributes.checkAllUsed()
            return FunctionKernel { inputs in
                [try modulo(try input(inputs, 0, "Mod"), try input(inputs, 1, "Mod"), fmod: fmod)]
            }
        }
        for (name, op) in [("Min", VariadicOp.min), ("Max", .max), ("Sum", .sum), ("Mean", .mean)] {
            r[name] = { c in
                guard c.inputCount >= 1 else { throw c.error("takes at least one input") }
                try c.require(inputs: 1...Int.max)
                return FunctionKernel { inputs in
                    let values = try inputs.indices.map { try input(inputs, $0, name) }
                    return [try variadic(values, op, name: name)]
                }
            }
        }
    }

    static func floatFunction(_ name: String, _ f: @escaping Function) -> any Kernel {
        FunctionKernel { inputs in [try mapFloats(try input(inputs, 0, name), name, f)] }
    }
}

/// Applies `f` to every element of a float or double tensor.
func mapFloats(_ x: OnnxTensor, _ name: String, _ f: (Double) -> Double) throws -> OnnxTensor {
    switch x.storage {
    case .float(let v): return OnnxTensor(shape: x.shape, storage: .float(v.map { Float(f(Double($0))) }))
    case .double(let v): return OnnxTensor(shape: x.shape, storage: .double(v.map(f)))
    default: throw OnnxError("\(name) takes float or double, got \(x.elementType)")
    }
}

/// The elements of a numeric tensor as doubles (for exponents and bounds).
func doubles(_ x: OnnxTensor) -> [Double]? {
    switch x.storage {
    case .float(let v): v.map(Double.init)
    case .double(let v): v
    case .int64(let v): v.map(Double.init)
    case .int32(let v): v.map(Double.init)
    default: nil
    }
}

/// Pow: the base's type out; the exponent may be of any numeric type (opset 12 and later).
func power(_ base: OnnxTensor, _ exponent: OnnxTensor) throws -> OnnxTensor {
    guard let e = doubles(exponent) else {
        throw OnnxError("Pow's exponent must be numeric, got \(exponent.elementType)")
    }
    switch base.storage {
    case .float(let v):
        let (r, shape) = try broadcastBinary(v, base.shape, e, exponent.shape) { Float(Foundation.pow(Double($0), $1)) }
        return OnnxTensor(shape: shape, storage: .float(r))
    case .double(let v):
        let (r, shape) = try broadcastBinary(v, base.shape, e, exponent.shape) { Foundation.pow($0, $1) }
        return OnnxTensor(shape: shape, storage: .double(r))
    case .int64(let v):
        let (r, shape) = try broadcastBinary(v, base.shape, e, exponent.shape) { integerPower($0, $1) }
        return OnnxTensor(shape: shape, storage: .int64(r))
    case .int32(let v):
        let (r, shape) = try broadcastBinary(v, base.shape, e, exponent.shape) { integerPower($0, $1) }
        return OnnxTensor(shape: shape, storage: .int32(r))
    default: throw OnnxError("Pow's base must be numeric, got \(base.elementType)")
    }
}

/// An integer raised to a power, wrapping like onnxruntime's integer Pow; a negative
/// exponent truncates toward zero (so it is 0 unless the base is ±1).
func integerPower<T: FixedWidthInteger>(_ base: T, _ exponent: Double) -> T {
    guard exponent.isFinite else { return 0 }
    let e = Int64(exponent.rounded(.towardZero))
    if e < 0 {
        if base == 1 { return 1 }
        if base == -1 { return e % 2 == 0 ? 1 : -1 }
        return 0
    }
    var result: T = 1
    var b = base
    var n = e
    while n > 0 {
        if n & 1 == 1 { result = result &* b }
        b = b &* b
        n >>= 1
    }
    return result
}

/// Mod: the remainder takes the divisor's sign (fmod 0, as Python's %) or the dividend's
/// (fmod 1, as C's fmod).
func modulo(_ a: OnnxTensor, _ b: OnnxTensor, fmod: Bool) throws -> OnnxTensor {
    func integer<T: FixedWidthInteger & SignedInteger>(_ x: [T], _ y: [T]) throws -> ([T], [Int]) {
        if y.contains(0) { throw OnnxError("Mod: integer division by zero") }
        return try broadcastBinary(x, a.shape, y, b.shape) { p, q in
            let r = p.remainderReportingOverflow(dividingBy: q).partialValue
            if fmod || r == 0 || (r < 0) == (q < 0) { return r }
            return r &+ q
        }
    }
    switch (a.storage, b.storage) {
    case (.int64(let x), .int64(let y)):
        let (r, shape) = try integer(x, y)
        return OnnxTensor(shape: shape, storage: .int64(r))
    case (.int32(let x), .int32(let y)):
        let (r, shape) = try integer(x, y)
        return OnnxTensor(shape: shape, storage: .int32(r))
    case (.float(let x), .float(let y)):
        let (r, shape) = try broadcastBinary(x, a.shape, y, b.shape) {
            Float(floatModulo(Double($0), Double($1), fmod))
        }
        return OnnxTensor(shape: shape, storage: .float(r))
    case (.double(let x), .double(let y)):
        let (r, shape) = try broadcastBinary(x, a.shape, y, b.shape) { floatModulo($0, $1, fmod) }
        return OnnxTensor(shape: shape, storage: .double(r))
    default: throw OnnxError("Mod needs two inputs of one numeric type, got \(a.elementType) and \(b.elementType)")
    }
}

enum VariadicOp: Sendable { case min, max, sum, mean }

/// Min, Max, Sum or Mean of one or more tensors of one type, with broadcasting.
func variadic(_ values: [OnnxTensor], _ op: VariadicOp, name: String) throws -> OnnxTensor {
    func fold<T>(_ arrays: [[T]], _ combine: (T, T) -> T) throws -> ([T], [Int]) {
        var (acc, shape) = (arrays[0], values[0].shape)
        for (next, tensor) in zip(arrays.dropFirst(), values.dropFirst()) {
            (acc, shape) = try broadcastBinary(acc, shape, next, tensor.shape, combine)
        }
        return (acc, shape)
    }
    func floating<T: BinaryFloatingPoint>(_ arrays: [[T]]) throws -> ([T], [Int]) {
        switch op {
        case .min: return try fold(arrays) { $0.isNaN || $1.isNaN ? .nan : Swift.min($0, $1) }
        case .max: return try fold(arrays) { $0.isNaN || $1.isNaN ? .nan : Swift.max($0, $1) }
        case .sum: return try fold(arrays, +)
        case .mean:
            let (sum, shape) = try fold(arrays, +)
            return (sum.map { $0 / T(arrays.count) }, shape)
        }
    }
    func integer<T: FixedWidthInteger>(_ arrays: [[T]]) throws -> ([T], [Int]) {
        switch op {
        case .min: return try fold(arrays, Swift.min)
        case .max: return try fold(arrays, Swift.max)
        case .sum: return try fold(arrays, &+)
        case .mean:
            let (sum, shape) = try fold(arrays, &+)
            return (sum.map { $0 / T(arrays.count) }, shape)
        }
    }
    let type = values[0].elementType
    guard values.allSatisfy({ $0.elementType == type }) else {
        throw OnnxError("\(name) needs inputs of one type, got \(values.map(\.elementType))")
    }
    switch values[0].storage {
    case .float:
        let (r, s) = try floating(values.map { $0.floats! })
        return OnnxTensor(shape: s, storage: .float(r))
    case .double:
        let (r, s) = try floating(values.map { if case .double(let v) = $0.storage { v } else { [] } })
        return OnnxTensor(shape: s, storage: .double(r))
    case .int64:
        let (r, s) = try integer(values.map { $0.int64s! })
        return OnnxTensor(shape: s, storage: .int64(r))
    case .int32:
        let (r, s) = try integer(values.map { if case .int32(let v) = $0.storage { v } else { [] } })
        return OnnxTensor(shape: s, storage: .int32(r))
    default: throw OnnxError("\(name) takes numeric inputs, got \(type)")
    }
}

/// C's fmod, or with `fmod` false the remainder with the divisor's sign (Python's %).
func floatModulo(_ a: Double, _ b: Double, _ fmod: Bool) -> Double {
    let r = Foundation.fmod(a, b)
    if fmod || r == 0 || r.isNaN || (r < 0) == (b < 0) {
        if !fmod && b.isInfinite && a.isFinite && r != 0 && (a < 0) != (b < 0) { return b }
        return r
    }
    return r + b
}
