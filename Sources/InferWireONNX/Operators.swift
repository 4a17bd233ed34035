/// The operators InferWire's runtime implements, by domain and op type.
enum Operators {
    /// The default ONNX domain ("" or "ai.onnx").
    static let defaultDomain: [String: KernelFactory] = {
        var r: [String: KernelFactory] = [:]
        ElementwiseOps.register(&r)
        ShapeOps.register(&r)
        ReductionOps.register(&r)
        LinearAlgebraOps.register(&r)
        ConvolutionOps.register(&r)
        return r
    }()

    /// The "ai.onnx.ml" domain.
    static let mlDomain: [String: KernelFactory] = {
        var r: [String: KernelFactory] = [:]
        MLOps.register(&r)
        return r
    }()
}
