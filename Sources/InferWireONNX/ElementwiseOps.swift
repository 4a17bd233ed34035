import Foundation

/// Unary float maps applied to FP32 and FP64 tensors alike.
func unaryFloatKernel(
    _ name: String, float: @escaping @Sendable (Float) -> Float, double: @escaping @Sendable (Double) -> Double
) -> any Kernel {
    FunctionKernel { inputs in
        let x = try input(inputs, 0, name)
        switch x.storage {
        case .float(let v): return [OnnxTensor(shape: x.shape, storage: .float(v.map(float)))]
        case .double(let v): return [OnnxTensor(shape: x.shape, storage: .double(v.map(double)))]
        default: throw OnnxError("\(name) takes float or double, got \(x.elementType)")
        }
    }
}

/// Unary maps over every numeric type.
func unaryNumericKernel(
    _ name: String,
    float: @escaping @Sendable (Float) -> Float, double: @escaping @Sendable (Double) -> Double,
    int64: @escaping @Sendable (Int64) -> Int64, int32: @escaping @Sendable (Int32) -> Int32
) -> any Kernel {
    FunctionKernel { inputs in
        let x = try input(inputs, 0, name)
        switch x.storage {
        case .float(let v): return [OnnxTensor(shape: x.shape, storage: .float(v.map(float)))]
        case .double(let v): return [OnnxTensor(shape: x.shape, storage: .double(v.map(double)))]
        case .int64(let v): return [OnnxTensor(shape: x.shape, storage: .int64(v.map(int64)))]
        case .int32(let v): return [OnnxTensor(shape: x.shape, storage: .int32(v.map(int32)))]
        default: throw OnnxError("\(name) takes a numeric tensor, got \(x.elementType)")
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
            case .add: (r, s) = try broadcastBinary(x, a.shape, y, b.shape, +)
            case .sub: (r, s) = try broadcastBinary(x, a.shape, y, b.shape, -)
            case .mul: (r, s) = try broadcastBinary(x, a.shape, y, b.shape, *)
            case .div: (r, s) = try broadcastBinary(x, a.shape, y, b.shape, /)
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
            case .div: (r, s) = try broadcastBinary(x, a.shape, y, b.shape) { $0.dividedReportingOverflow(by: $1).partialValue }
            }
            return [OnnxTensor(shape: s, storage: .int64(r))]
        case (.int32(let x), .int32(let y)):
            if op == .div, y.contains(0) { throw OnnxError("\(name): integer division by zero") }
            let (r, s): ([Int32], [Int])
            switch op {
            case .add: (r, s) = try broadcastBinary(x, a.shape, y, b.shape, &+)
            case .sub: (r, s) = try broadcastBinary(x, a.shape, y, b.shape, &-)
            case .mul: (r, s) = try broadcastBinary(x, a.shape, y, b.shape, &*)
            case .div: (r, s) = try broadcastBinary(x, a.shape, y, b.shape) { $0.dividedReportingOverflow(by: $1).partialValue }
            }
            return [OnnxTensor(shape: s, storage: .int32(r))]
        default:
            throw OnnxError("\(name) needs two inputs of one numeric type, got \(a.elementType) and \(b.elementType)")
        }
    }
}

@inline(__always) func sigmoid(_ x: Float) -> Float { x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x)) }
@inline(__always) func sigmoid(_ x: Double) -> Double { x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x)) }

enum ElementwiseOps {
    static func register(_ r: inout [String: KernelFactory]) {
        r["Relu"] = { c in try c.require(inputs: 1...1)
            return unaryNumericKernel("Relu", float: { max($0, 0) }, double: { max($0, 0) }, int64: { max($0, 0) }, int32: { max($0, 0) })
        }
        r["LeakyRelu"] = { c in
            try c.require(inputs: 1...1)
            let alpha = try c.attributes.float("alpha", default: 0.01)
            try c.attributes.checkAllUsed()
            let a = Double(alpha)
            return unaryFloatKernel("LeakyRelu", float: { $0 >= 0 ? $0 : $0 * alpha }, double: { $0 >= 0 ? $0 : $0 * a })
        }
        r["Sigmoid"] = { c in try c.require(inputs: 1...1); return unaryFloatKernel("Sigmoid", float: sigmoid, double: sigmoid) }
        r["Tanh"] = { c in try c.require(inputs: 1...1); return unaryFloatKernel("Tanh", float: tanhf, double: tanh) }
        r["Exp"] = { c in try c.require(inputs: 1...1); return unaryFloatKernel("Exp", float: expf, double: exp) }
        r["Log"] = { c in try c.require(inputs: 1...1); return unaryFloatKernel("Log", float: logf, double: log) }
        r["Sqrt"] = { c in try c.require(inputs: 1...1); return unaryFloatKernel("Sqrt", float: sqrtf, double: sqrt) }
        r["Erf"] = { c in try c.require(inputs: 1...1); return unaryFloatKernel("Erf", float: erff, double: erf) }
        r["Abs"] = { c in try c.require(inputs: 1...1)
            return unaryNumericKernel("Abs", float: { abs($0) }, double: { abs($0) }, int64: { $0 == .min ? $0 : abs($0) }, int32: { $0 == .min ? $0 : abs($0) })
        }
        r["Neg"] = { c in try c.require(inputs: 1...1)
            return unaryNumericKernel("Neg", float: { -$0 }, double: { -$0 }, int64: { 0 &- $0 }, int32: { 0 &- $0 })
        }
        r["Identity"] = { c in
            try c.require(inputs: 1...1)
            return FunctionKernel { inputs in [try input(inputs, 0, "Identity")] }
        }
        r["Add"] = { c in try c.require(inputs: 2...2); return arithmeticKernel(.add, name: "Add") }
        r["Sub"] = { c in try c.require(inputs: 2...2); return arithmeticKernel(.sub, name: "Sub") }
        r["Mul"] = { c in try c.require(inputs: 2...2); return arithmeticKernel(.mul, name: "Mul") }
        r["Div"] = { c in try c.require(inputs: 2...2); return arithmeticKernel(.div, name: "Div") }
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
                    let l = lo.map(Float.init) ?? -.infinity, h = hi.map(Float.init) ?? .infinity
                    return [OnnxTensor(shape: x.shape, storage: .float(v.map { min(max($0, l), h) }))]
                case .double(let v):
                    let l = lo ?? -.infinity, h = hi ?? .infinity
                    return [OnnxTensor(shape: x.shape, storage: .double(v.map { min(max($0, l), h) }))]
                case .int64(let v):
                    let l = lo.map { Int64($0) } ?? .min, h = hi.map { Int64($0) } ?? .max
                    return [OnnxTensor(shape: x.shape, storage: .int64(v.map { min(max($0, l), h) }))]
                case .int32(let v):
                    let l = lo.map { Int32($0) } ?? .min, h = hi.map { Int32($0) } ?? .max
                    return [OnnxTensor(shape: x.shape, storage: .int32(v.map { min(max($0, l), h) }))]
                default: throw OnnxError("Clip takes a numeric tensor, got \(x.elementType)")
                }
            }
        }
        r["Cast"] = { c in
            try c.require(inputs: 1...1)
            guard let code = try c.attributes.int("to") else { throw c.error("attribute 'to' is required") }
            guard let target = ElementType(onnx: Int32(code)) else {
                throw c.error("casting to \(ElementType.name(ofONNX: Int32(code))) is not supported")
            }
            _ = try c.attributes.int("saturate")  // only meaningful for float8 targets
            try c.attributes.checkAllUsed()
            return FunctionKernel { inputs in [try cast(try input(inputs, 0, "Cast"), to: target)] }
        }
    }
}

/// Converts a tensor's elements, as ONNX Cast does (float to integer truncates toward zero).
func cast(_ x: OnnxTensor, to target: ElementType) throws -> OnnxTensor {
    if x.elementType == target { return x }
    // Route through Double for numbers; strings parse and print.
    let doubles: [Double]
    switch x.storage {
    case .float(let v): doubles = v.map(Double.init)
    case .double(let v): doubles = v
    case .int64(let v):
        if target == .string { return OnnxTensor(shape: x.shape, storage: .string(v.map { String($0) })) }
        if target == .int32 { return OnnxTensor(shape: x.shape, storage: .int32(v.map { Int32(truncatingIfNeeded: $0) })) }
        doubles = v.map(Double.init)
    case .int32(let v):
        if target == .int64 { return OnnxTensor(shape: x.shape, storage: .int64(v.map(Int64.init))) }
        doubles = v.map(Double.init)
    case .bool(let v): doubles = v.map { $0 ? 1 : 0 }
    case .string(let v):
        doubles = try v.map { s in
            guard let d = Double(s) ?? (s.lowercased() == "nan" ? .nan : nil) else { throw OnnxError("Cast: '\(s)' is not a number") }
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
    }
}
