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
        LogicalOps.register(&r)
        MathOps.register(&r)
        TensorOps.register(&r)
        IndexingOps.register(&r)
        ControlFlowOps.register(&r)
        QuantizedOps.register(&r)
        ConvTransposeOps.register(&r)
        EinsumOps.register(&r)
        TextOps.register(&r)
        return r
    }()

    /// Operators (ML ones as `ai.onnx.ml.<name>`) whose kernels know versions after
    /// ``OpsetSupport/kernelsWrittenFor``, by the opset through which they do.
    static let implementedThrough: [String: Int] = [
        // Written against the newest versions (Cast-24's round_mode only affects float8 targets).
        "Cast": 28, "CastLike": 28, "Mod": 28, "Range": 28, "QuantizeLinear": 28, "DequantizeLinear": 28,
        // LabelEncoder-4 (keys_tensor, values_tensor, default_tensor, double keys) is the newest.
        "ai.onnx.ml.LabelEncoder": 5,
    ]

    /// The "ai.onnx.ml" domain.
    static let mlDomain: [String: KernelFactory] = {
        var r: [String: KernelFactory] = [:]
        MLOps.register(&r)
        MLEncodingOps.register(&r)
        return r
    }()

    /// onnxruntime's "com.microsoft" domain (contrib operators, opset 1).
    static let microsoftDomain: [String: KernelFactory] = {
        var r: [String: KernelFactory] = [:]
        TextOps.registerMicrosoft(&r)
        MicrosoftQuantizedOps.register(&r)
        return r
    }()

}

/// What the runtime implements, for tools.
package enum OnnxRuntimeOperators {
    /// Every operator the runtime implements: default-domain names, `ai.onnx.ml.<name>` and
    /// `com.microsoft.<name>`.
    package static var implemented: Set<String> {
        Set(Operators.defaultDomain.keys).union(Operators.mlDomain.keys.map { "ai.onnx.ml." + $0 })
            .union(Operators.microsoftDomain.keys.map { "com.microsoft." + $0 })
    }
}
