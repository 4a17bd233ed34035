import Foundation

/// onnxruntime's contrib operators (domain "com.microsoft") that its quantization tool writes
/// into QOperator-format models: QLinearAdd and QLinearMul on UINT8 or INT8 tensors with
/// per-tensor scales and zero points.
enum MicrosoftQuantizedOps {
    static func register(_ r: inout [String: KernelFactory]) {
        r["QLinearAdd"] = { c in try QLinearBinaryKernel(&c, op: .add) }
        r["QLinearMul"] = { c in try QLinearBinaryKernel(&c, op: .mul) }
    }
}

/// C = quantize(dequantize(A) op dequantize(B)), broadcasting, saturating to C's type.
struct QLinearBinaryKernel: Kernel {
    enum Op { case add, mul }
    let op: Op
    let name: String

    init(_ c: inout NodeContext, op: Op) throws {
        try c.require(inputs: 7...8)
        try c.attributes.checkAllUsed()
        self.op = op
        self.name = op == .add ? "QLinearAdd" : "QLinearMul"
    }

    func run(_ inputs: [OnnxTensor?]) throws -> [OnnxTensor] {
        let a = try input(inputs, 0, self.name)
        let b = try input(inputs, 3, self.name)
        guard a.elementType == .uint8 || a.elementType == .int8, b.elementType == a.elementType,
            case .int32(let av) = a.storage, case .int32(let bv) = b.storage
        else {
            throw OnnxError(
                "\(self.name) takes two UINT8 or two INT8 tensors, got \(a.elementType) and \(b.elementType)")
        }
        func scalar(_ index: Int, _ what: String, default value: Float? = nil) throws -> Float {
            guard index < inputs.count, let tensor = inputs[index] else {
                if let value { return value }
                throw OnnxError("\(self.name): \(what) is missing")
            }
            guard tensor.count == 1, let v = doubles(tensor)?.first else {
                throw OnnxError(
                    "\(self.name): \(what) must be one value (per-tensor quantization), got \(tensor.shape)")
            }
            return Float(v)
        }
        let (scaleA, zeroA) = (try scalar(1, "A_scale"), try scalar(2, "A_zero_point", default: 0))
        let (scaleB, zeroB) = (try scalar(4, "B_scale"), try scalar(5, "B_zero_point", default: 0))
        let (scaleC, zeroC) = (try scalar(6, "C_scale"), try scalar(7, "C_zero_point", default: 0))
        let (low, high): (Float, Float) = a.elementType == .uint8 ? (0, 255) : (-128, 127)
        let values: [Int32]
        let shape: [Int]
        switch self.op {
        case .add:
            // As onnxruntime computes it: each side scaled into C's scale, the zero points folded
            // into one bias, fused multiply-adds, then rounded half to even.
            let ratioA = scaleA / scaleC
            let ratioB = scaleB / scaleC
            let bias = zeroC - ratioA * zeroA - ratioB * zeroB
            (values, shape) = try broadcastBinary(av, a.shape, bv, b.shape) { x, y in
                let r = bias.addingProduct(Float(y), ratioB).addingProduct(Float(x), ratioA)
                return Int32(min(max(r.rounded(.toNearestOrEven), low), high))
            }
        case .mul:
            (values, shape) = try broadcastBinary(av, a.shape, bv, b.shape) { x, y in
                let product = ((Float(x) - zeroA) * scaleA) * ((Float(y) - zeroB) * scaleB)
                let r = (product / scaleC).rounded(.toNearestOrEven) + zeroC
                return Int32(min(max(r, low), high))
            }
        }
        return [OnnxTensor(shape: shape, storage: .int32(values), narrow: a.elementType)]
    }
}
