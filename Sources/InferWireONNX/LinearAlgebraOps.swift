/// C = A·B for row-major A [m×k], B [k×n] (with optional transposes), through the loaded BLAS (``BLAS``).
@inline(__always)
func sgemm(
    _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafeMutablePointer<Float>,
    m: Int, n: Int, k: Int, transA: Bool = false, transB: Bool = false, alpha: Float = 1, beta: Float = 0
) {
    guard m > 0, n > 0 else { return }
    BLAS.functions.sgemm(
        BLAS.rowMajor, transA ? BLAS.trans : BLAS.noTrans, transB ? BLAS.trans : BLAS.noTrans,
        Int32(m), Int32(n), Int32(k), alpha, a, Int32(transA ? m : k), b, Int32(transB ? k : n), beta, c, Int32(n))
}

@inline(__always)
func dgemm(
    _ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>, _ c: UnsafeMutablePointer<Double>,
    m: Int, n: Int, k: Int, transA: Bool = false, transB: Bool = false, alpha: Double = 1, beta: Double = 0
) {
    guard m > 0, n > 0 else { return }
    BLAS.functions.dgemm(
        BLAS.rowMajor, transA ? BLAS.trans : BLAS.noTrans, transB ? BLAS.trans : BLAS.noTrans,
        Int32(m), Int32(n), Int32(k), alpha, a, Int32(transA ? m : k), b, Int32(transB ? k : n), beta, c, Int32(n))
}

/// The element types BLAS multiplies: FP32 through `sgemm`, FP64 through `dgemm`.
protocol BLASScalar: FloatingPoint {
    static func gemm(
        _ a: UnsafePointer<Self>, _ b: UnsafePointer<Self>, _ c: UnsafeMutablePointer<Self>, m: Int, n: Int, k: Int)
}

extension Float: BLASScalar {
    static func gemm(
        _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafeMutablePointer<Float>, m: Int, n: Int, k: Int
    ) {
        sgemm(a, b, c, m: m, n: n, k: k)
    }
}

extension Double: BLASScalar {
    static func gemm(
        _ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>, _ c: UnsafeMutablePointer<Double>, m: Int, n: Int,
        k: Int
    ) {
        dgemm(a, b, c, m: m, n: n, k: k)
    }
}

/// numpy matmul semantics: 1-D operands are promoted and the added dimension removed;
/// leading (batch) dimensions broadcast.
func matMul(_ a: OnnxTensor, _ b: OnnxTensor) throws -> OnnxTensor {
    guard a.rank >= 1, b.rank >= 1 else { throw OnnxError("MatMul needs operands of rank ≥ 1") }
    let aShape = a.rank == 1 ? [1, a.shape[0]] : a.shape
    let bShape = b.rank == 1 ? [b.shape[0], 1] : b.shape
    let m = aShape[aShape.count - 2]
    let k = aShape[aShape.count - 1]
    let k2 = bShape[bShape.count - 2]
    let n = bShape[bShape.count - 1]
    guard k == k2 else { throw OnnxError("MatMul: inner dimensions differ, \(a.shape) × \(b.shape)") }
    let aBatch = Array(aShape.dropLast(2))
    let bBatch = Array(bShape.dropLast(2))
    let batch = try broadcastShape(aBatch, bBatch)
    let batchCount = batch.reduce(1, *)
    var outShape = batch + [m, n]
    _ = try checkedCount(outShape, "MatMul output")
    // Flat batch offsets of each operand, honouring broadcasting.
    let aStrides = broadcastStrides(aBatch, to: batch)
    let bStrides = broadcastStrides(bBatch, to: batch)
    func offsets(_ strides: [Int], matrix: Int) -> [Int] {
        var result: [Int] = []
        result.reserveCapacity(batchCount)
        var index = [Int](repeating: 0, count: batch.count)
        for _ in 0..<batchCount {
            result.append(zip(index, strides).reduce(0) { $0 + $1.0 * $1.1 } * matrix)
            var d = batch.count - 1
            while d >= 0 {
                index[d] += 1
                if index[d] < batch[d] { break }
                index[d] = 0
                d -= 1
            }
        }
        return result
    }
    let aOffsets = offsets(aStrides, matrix: m * k)
    let bOffsets = offsets(bStrides, matrix: k * n)
    if a.rank == 1 { outShape.remove(at: outShape.count - 2) }
    if b.rank == 1 { outShape.removeLast() }
    let total = batchCount * m * n
    /// One BLAS GEMM per batch entry into a fresh array (zeros when k is 0).
    func batched<T: BLASScalar>(_ x: [T], _ y: [T]) -> [T] {
        [T](unsafeUninitializedCapacity: total) { c, count in
            x.withUnsafeBufferPointer { pa in
                y.withUnsafeBufferPointer { pb in
                    for i in 0..<batchCount where k > 0 {
                        T.gemm(
                            pa.baseAddress! + aOffsets[i], pb.baseAddress! + bOffsets[i], c.baseAddress! + i * m * n,
                            m: m, n: n, k: k)
                    }
                    if k == 0 { for i in 0..<total { c[i] = .zero } }
                }
            }
            count = total
        }
    }
    switch (a.storage, b.storage) {
    case (.float(let x), .float(let y)):
        return OnnxTensor(shape: outShape, storage: .float(batched(x, y)))
    case (.double(let x), .double(let y)):
        return OnnxTensor(shape: outShape, storage: .double(batched(x, y)))
    case (.int64(let x), .int64(let y)):
        var out = [Int64](repeating: 0, count: total)
        for i in 0..<batchCount {
            for r in 0..<m {
                for cc in 0..<n {
                    var s: Int64 = 0
                    for j in 0..<k { s &+= x[aOffsets[i] + r * k + j] &* y[bOffsets[i] + j * n + cc] }
                    out[i * m * n + r * n + cc] = s
                }
            }
        }
        return OnnxTensor(shape: outShape, storage: .int64(out))
    default:
        throw OnnxError(
            "MatMul needs two inputs of one type (float, double, int64), got \(a.elementType) and \(b.elementType)")
    }
}

enum LinearAlgebraOps {
    static func register(_ r: inout [String: KernelFactory]) {
        r["MatMul"] = { c in
            try c.require(inputs: 2...2)
            return FunctionKernel { inputs in
                [try matMul(try input(inputs, 0, "MatMul"), try input(inputs, 1, "MatMul"))]
            }
        }
        r["Gemm"] = { c in
            try c.require(inputs: 2...3)
            let alpha = try c.attributes.float("alpha", default: 1)
            let beta = try c.attributes.float("beta", default: 1)
            let transA = try c.attributes.int("transA", default: 0) != 0
            let transB = try c.attributes.int("transB", default: 0) != 0
            _ = try c.attributes.int("broadcast")  // opset < 7; broadcasting is always on here
            try c.attributes.checkAllUsed()
            return FunctionKernel { inputs in
                let a = try input(inputs, 0, "Gemm")
                let b = try input(inputs, 1, "Gemm")
                guard a.rank == 2, b.rank == 2 else {
                    throw OnnxError("Gemm needs 2-D A and B, got \(a.shape) and \(b.shape)")
                }
                let m = transA ? a.shape[1] : a.shape[0]
                let k = transA ? a.shape[0] : a.shape[1]
                let kb = transB ? b.shape[1] : b.shape[0]
                let n = transB ? b.shape[0] : b.shape[1]
                guard k == kb else { throw OnnxError("Gemm: inner dimensions differ, \(a.shape) × \(b.shape)") }
                guard let x = a.floats, let y = b.floats else {
                    throw OnnxError("Gemm supports float tensors, got \(a.elementType)")
                }
                _ = try checkedCount([m, n], "Gemm output")
                var out = [Float](repeating: 0, count: m * n)
                var useBeta: Float = 0
                if inputs.count > 2, let cTensor = inputs[2], beta != 0 {
                    guard let cv = cTensor.floats else { throw OnnxError("Gemm: C must be float") }
                    let (broadcast, shape) = try broadcastBinary(out, [m, n], cv, cTensor.shape) { _, c in c }
                    guard shape == [m, n] else {
                        throw OnnxError("Gemm: C of shape \(cTensor.shape) does not broadcast to [\(m), \(n)]")
                    }
                    out = broadcast
                    useBeta = beta
                }
                x.withUnsafeBufferPointer { pa in
                    y.withUnsafeBufferPointer { pb in
                        out.withUnsafeMutableBufferPointer { pc in
                            if k > 0 {
                                sgemm(
                                    pa.baseAddress!, pb.baseAddress!, pc.baseAddress!, m: m, n: n, k: k,
                                    transA: transA, transB: transB, alpha: alpha, beta: useBeta)
                            } else {
                                for i in 0..<pc.count { pc[i] *= useBeta }
                            }
                        }
                    }
                }
                return [OnnxTensor(shape: [m, n], floats: out)]
            }
        }
    }
}
