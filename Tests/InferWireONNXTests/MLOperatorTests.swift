import Foundation
import InferWireCore
import InferWireProto
import Testing

/// An attribute of one of ONNX's kinds, for models built in code.
func attribute(
    _ name: String, int: Int64? = nil, float: Float? = nil, string: String? = nil, ints: [Int64]? = nil,
    floats: [Float]? = nil, strings: [String]? = nil, tensor: Onnx_TensorProto? = nil
) -> Onnx_AttributeProto {
    var a = Onnx_AttributeProto()
    a.name = name
    if let int { (a.type, a.i) = (.int, int) }
    if let float { (a.type, a.f) = (.float, float) }
    if let string { (a.type, a.s) = (.string, Data(string.utf8)) }
    if let ints { (a.type, a.ints) = (.ints, ints) }
    if let floats { (a.type, a.floats) = (.floats, floats) }
    if let strings { (a.type, a.strings) = (.strings, strings.map { Data($0.utf8) }) }
    if let tensor { (a.type, a.t) = (.tensor, tensor) }
    return a
}

/// ONNX element type numbers.
enum OnnxType {
    static let float: Int32 = 1
    static let int16: Int32 = 5
    static let int64: Int32 = 7
    static let string: Int32 = 8
    static let double: Int32 = 11
}

/// A model of one ai.onnx.ml node, each input of shape [N] or [N, width], or of the shape
/// `shape` gives (nil: a symbolic dimension).
func mlNodeModel(
    _ op: String, inputs: [(name: String, type: Int32, width: Int?)], shape: [Int?]? = nil,
    outputs: [(name: String, type: Int32)],
    attributes: [Onnx_AttributeProto], mlOpset: Int64 = 3
) throws -> Data {
    var model = Onnx_ModelProto()
    model.irVersion = 10
    var onnx = Onnx_OperatorSetIdProto()
    onnx.version = 17
    var ml = Onnx_OperatorSetIdProto()
    ml.domain = "ai.onnx.ml"
    ml.version = mlOpset
    model.opsetImport = [onnx, ml]
    var node = Onnx_NodeProto()
    node.opType = op
    node.domain = "ai.onnx.ml"
    node.name = "the_node"
    node.input = inputs.map(\.name)
    node.output = outputs.map(\.name)
    node.attribute = attributes
    func value(_ name: String, _ type: Int32, _ dims: [Int?]?) -> Onnx_ValueInfoProto {
        var v = Onnx_ValueInfoProto()
        v.name = name
        var t = Onnx_TypeProto.Tensor()
        t.elemType = type
        if let dims {
            t.shape.dim = dims.map { size in
                var d = Onnx_TensorShapeProto.Dimension()
                if let size { d.dimValue = Int64(size) } else { d.dimParam = "N" }
                return d
            }
        }
        v.type.tensorType = t
        return v
    }
    model.graph.input = inputs.map { input in
        value(input.name, input.type, shape ?? [nil] + (input.width.map { [$0] } ?? []))
    }
    model.graph.output = outputs.map { value($0.name, $0.type, nil) }
    model.graph.node = [node]
    return try model.serializedData()
}

func stringTensor(_ name: String, _ values: [String], shape: [Int]? = nil) -> Tensor {
    tensor(name, Fixture.Value(dtype: "BYTES", shape: shape ?? [values.count], data: values.map { .string($0) }))
}

/// The message of the InferWireError `body` throws, or nil.
func runError(_ body: () throws -> Void) -> String? {
    do {
        try body()
        return nil
    } catch let error as InferWireError {
        return error.message
    } catch {
        return "\(error)"
    }
}

@Suite("ai.onnx.ml encoders, imputer, vectorizer and SVMs")
struct MLOperatorTests {
    @Test("LabelEncoder-1 maps strings to their positions in classes_strings and back")
    func labelEncoderVersion1() throws {
        let classes = attribute("classes_strings", strings: ["a", "b", "c"])
        let toIndex = try load(
            mlNodeModel(
                "LabelEncoder", inputs: [("X", OnnxType.string, nil)], outputs: [("Y", OnnxType.int64)],
                attributes: [classes, attribute("default_int64", int: -7)], mlOpset: 1))
        let y = try toIndex.execute([stringTensor("X", ["c", "a", "zz"])])[0]
        #expect(y.values(as: Int64.self) == [2, 0, -7])

        let toString = try load(
            mlNodeModel(
                "LabelEncoder", inputs: [("X", OnnxType.int64, nil)], outputs: [("Y", OnnxType.string)],
                attributes: [classes], mlOpset: 1))
        let s = try toString.execute([Tensor(name: "X", values: [1, 5] as [Int64], shape: [2])])[0]
        #expect(strings(s) == ["b", "_Unused"])
    }

    @Test("LabelEncoder-4: keys_tensor and values_tensor, INT16 values, default_tensor; opset 5 loads")
    func labelEncoderVersion4() throws {
        var keys = Onnx_TensorProto()
        keys.dataType = OnnxType.string
        keys.dims = [3]
        keys.stringData = ["a", "b", "c"].map { Data($0.utf8) }
        var values = Onnx_TensorProto()
        values.dataType = OnnxType.int16
        values.dims = [3]
        values.int32Data = [0, 1, 2]
        var fallback = values
        fallback.dims = [1]
        fallback.int32Data = [42]
        for opset: Int64 in [4, 5] {
            let model = try load(
                mlNodeModel(
                    "LabelEncoder", inputs: [("X", OnnxType.string, nil)], outputs: [("Y", OnnxType.int16)],
                    attributes: [
                        attribute("keys_tensor", tensor: keys), attribute("values_tensor", tensor: values),
                        attribute("default_tensor", tensor: fallback),
                    ], mlOpset: opset))
            let y = try model.execute([stringTensor("X", ["a", "b", "d", "c", "g"])])[0]
            #expect(y.dataType == .int16)
            #expect(y.values(as: Int16.self) == [0, 1, 42, 2, 42])
        }
        // The tensor attributes are LabelEncoder-4's: at opset 2 they are refused.
        let message = loadError(
            try mlNodeModel(
                "LabelEncoder", inputs: [("X", OnnxType.string, nil)], outputs: [("Y", OnnxType.int16)],
                attributes: [attribute("keys_tensor", tensor: keys), attribute("values_tensor", tensor: values)],
                mlOpset: 2))
        #expect(message?.contains("needs keys") == true, "\(message ?? "")")
    }

    @Test("LabelEncoder: double keys, NaN as a key, the first of duplicate keys")
    func labelEncoderDoubles() throws {
        var keys = Onnx_TensorProto()
        keys.dataType = OnnxType.double
        keys.dims = [4]
        keys.doubleData = [0.5, .nan, 2, 0.5]
        let model = try load(
            mlNodeModel(
                "LabelEncoder", inputs: [("X", OnnxType.double, nil)], outputs: [("Y", OnnxType.string)],
                attributes: [
                    attribute("keys_tensor", tensor: keys), attribute("values_strings", strings: ["h", "n", "t", "x"]),
                    attribute("default_string", string: "?"),
                ], mlOpset: 4))
        let y = try model.execute([Tensor(name: "X", values: [2, .nan, 0.5, -0.0, 3] as [Double], shape: [5])])[0]
        #expect(strings(y) == ["t", "n", "h", "?", "?"])
        // A double input to string keys is refused when run.
        #expect(runError { _ = try model.execute([stringTensor("X", ["a"])]) } != nil)
    }

    @Test("CategoryMapper maps cats_strings to cats_int64s and back, with defaults")
    func categoryMapper() throws {
        let attributes = [
            attribute("cats_strings", strings: ["a", "b", "c"]), attribute("cats_int64s", ints: [10, 20, 30]),
            attribute("default_string", string: "none"),
        ]
        let forward = try load(
            mlNodeModel(
                "CategoryMapper", inputs: [("X", OnnxType.string, 2)], outputs: [("Y", OnnxType.int64)],
                attributes: attributes))
        let y = try forward.execute([stringTensor("X", ["a", "c", "q", "b"], shape: [2, 2])])[0]
        #expect(y.shape == [2, 2] && y.values(as: Int64.self) == [10, 30, -1, 20])
        let back = try load(
            mlNodeModel(
                "CategoryMapper", inputs: [("X", OnnxType.int64, nil)], outputs: [("Y", OnnxType.string)],
                attributes: attributes))
        #expect(
            strings(try back.execute([Tensor(name: "X", values: [30, 11] as [Int64], shape: [2])])[0]) == ["c", "none"])
    }

    @Test("OneHotEncoder: shape + [C]; unknown categories give zeros, or fail with zeros = 0 (and such a model loads)")
    func oneHotEncoder() throws {
        let lenient = try load(
            mlNodeModel(
                "OneHotEncoder", inputs: [("X", OnnxType.int64, 2)], outputs: [("Y", OnnxType.float)],
                attributes: [attribute("cats_int64s", ints: [3, 1, 7])]))
        let y = try lenient.execute([Tensor(name: "X", values: [1, 7, 3, 5] as [Int64], shape: [2, 2])])[0]
        #expect(y.shape == [2, 2, 3])
        #expect(y.values(as: Float.self) == [0, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0])

        // Its trial run on "1" would meet an unknown category: the model must load all the same.
        let strict = try load(
            mlNodeModel(
                "OneHotEncoder", inputs: [("X", OnnxType.string, nil)], outputs: [("Y", OnnxType.float)],
                attributes: [attribute("cats_strings", strings: ["a", "b"]), attribute("zeros", int: 0)]))
        let z = try strict.execute([stringTensor("X", ["b", "a"])])[0]
        #expect(z.shape == [2, 2] && z.values(as: Float.self) == [0, 1, 1, 0])
        let message = runError { _ = try strict.execute([stringTensor("X", ["a", "c"])]) }
        #expect(message?.contains("not in the list") == true, "\(message ?? "")")
    }

    @Test("Imputer replaces NaN per feature or with one value, and int64 sentinels")
    func imputer() throws {
        let perFeature = try load(
            mlNodeModel(
                "Imputer", inputs: [("X", OnnxType.float, 3)], outputs: [("Y", OnnxType.float)],
                attributes: [
                    attribute("imputed_value_floats", floats: [1, 2, 3]),
                    attribute("replaced_value_float", float: .nan),
                ]))
        let x = Tensor(name: "X", values: [.nan, 5, .nan, 4, .nan, 6] as [Float], shape: [2, 3])
        #expect(try perFeature.execute([x])[0].values(as: Float.self) == [1, 5, 3, 4, 2, 6])

        let single = try load(
            mlNodeModel(
                "Imputer", inputs: [("X", OnnxType.float, 3)], outputs: [("Y", OnnxType.float)],
                attributes: [
                    attribute("imputed_value_floats", floats: [9]), attribute("replaced_value_float", float: 5),
                ]
            ))
        let y = try single.execute([x])[0].values(as: Float.self)!
        #expect(y[1] == 9 && y[3] == 4 && y[0].isNaN)

        let integers = try load(
            mlNodeModel(
                "Imputer", inputs: [("X", OnnxType.int64, 2)], outputs: [("Y", OnnxType.int64)],
                attributes: [
                    attribute("imputed_value_int64s", ints: [100, 200]), attribute("replaced_value_int64", int: -1),
                ]))
        let i = try integers.execute([Tensor(name: "X", values: [-1, 3, 4, -1] as [Int64], shape: [2, 2])])[0]
        #expect(i.values(as: Int64.self) == [100, 3, 4, 200])

        // Two imputed values for three features fit neither way: when run, or at load when
        // the model's shape says so.
        let wrong = try load(
            mlNodeModel(
                "Imputer", inputs: [("X", OnnxType.float, nil)], shape: [nil, nil], outputs: [("Y", OnnxType.float)],
                attributes: [attribute("imputed_value_floats", floats: [1, 2])]))
        #expect(
            runError { _ = try wrong.execute([Tensor(name: "X", values: [0, 1, 2] as [Float], shape: [1, 3])]) }?
                .contains("2 imputed values for 3 features") == true)
        #expect(
            loadError(
                try mlNodeModel(
                    "Imputer", inputs: [("X", OnnxType.float, 3)], outputs: [("Y", OnnxType.float)],
                    attributes: [attribute("imputed_value_floats", floats: [1, 2])]))?
                .contains("2 imputed values for 3 features") == true)
    }

    @Test("FeatureVectorizer concatenates as FP32, truncating and zero-padding each input to its dimension")
    func featureVectorizer() throws {
        let model = try load(
            mlNodeModel(
                "FeatureVectorizer", inputs: [("A", OnnxType.int64, 3), ("B", OnnxType.int64, 1)],
                outputs: [("Y", OnnxType.float)], attributes: [attribute("inputdimensions", ints: [2, 3])]))
        let y = try model.execute([
            Tensor(name: "A", values: [1, 2, 3, 4, 5, 6] as [Int64], shape: [2, 3]),
            Tensor(name: "B", values: [7, 8] as [Int64], shape: [2, 1]),
        ])[0]
        #expect(y.shape == [2, 5])
        #expect(y.values(as: Float.self) == [1, 2, 7, 0, 0, 4, 5, 8, 0, 0])
        let message = loadError(
            try mlNodeModel(
                "FeatureVectorizer", inputs: [("A", OnnxType.float, 3)], outputs: [("Y", OnnxType.float)],
                attributes: [attribute("inputdimensions", ints: [2, 3])]))
        #expect(message?.contains("1 inputs but 2 inputdimensions") == true, "\(message ?? "")")
    }

    @Test("SVMRegressor: Σ cⱼ K(x, vⱼ) + rho; one_class gives ±1; a post_transform it cannot apply is refused")
    func svmRegressor() throws {
        func model(rho: Float, _ more: [Onnx_AttributeProto] = []) throws -> Data {
            try mlNodeModel(
                "SVMRegressor", inputs: [("X", OnnxType.float, 2)], outputs: [("Y", OnnxType.float)],
                attributes: [
                    attribute("coefficients", floats: [1, -1]), attribute("rho", floats: [rho]),
                    attribute("support_vectors", floats: [1, 0, 0, 1]), attribute("n_supports", int: 2),
                    attribute("kernel_type", string: "RBF"), attribute("kernel_params", floats: [0.5, 0, 3]),
                ] + more)
        }
        let x = Tensor(name: "X", values: [1, 0, -3, 2] as [Float], shape: [2, 2])
        let y = try load(try model(rho: 0.5)).execute([x])[0]
        // 1·e⁰ − e^(−0.5·2) + 0.5 and e^(−0.5·20) − e^(−0.5·10) + 0.5.
        let want = [1 - exp(-1) + 0.5, exp(-10) - exp(-5) + 0.5].map { Float($0) }
        #expect(y.shape == [2, 1])
        #expect(zip(y.values(as: Float.self)!, want).allSatisfy { abs($0 - $1) < 1e-6 })

        let oneClass = try load(try model(rho: -0.6, [attribute("one_class", int: 1)]))
        #expect(try oneClass.execute([x])[0].values(as: Float.self) == [1, -1])

        let message = loadError(try model(rho: 0, [attribute("post_transform", string: "LOGISTIC")]))
        #expect(message?.contains("post_transform") == true, "\(message ?? "")")
    }

    @Test("SVMClassifier: attributes that do not fit together fail the load")
    func svmClassifierLoadErrors() throws {
        func refusal(_ attributes: [Onnx_AttributeProto], width: Int = 2) throws -> String {
            try loadError(
                mlNodeModel(
                    "SVMClassifier", inputs: [("X", OnnxType.float, width)],
                    outputs: [("label", OnnxType.int64), ("scores", OnnxType.float)], attributes: attributes)) ?? ""
        }
        let base = [
            attribute("classlabels_ints", ints: [0, 1, 2]), attribute("vectors_per_class", ints: [1, 1, 1]),
            attribute("support_vectors", floats: [0, 1, 1, 0, 1, 1]), attribute("rho", floats: [0, 0, 0]),
        ]
        #expect(
            try refusal(base + [attribute("coefficients", floats: [1, 1, 1])]).contains("coefficients has 3 values"))
        #expect(
            try refusal(
                base + [attribute("coefficients", floats: [1, 1, 1, 1, 1, 1]), attribute("prob_a", floats: [1])]
            ).contains("prob_a has 1 values, prob_b 0"))
        #expect(
            try refusal(
                base + [
                    attribute("coefficients", floats: [1, 1, 1, 1, 1, 1]), attribute("kernel_type", string: "CUBIC"),
                ]
            ).contains("kernel_type 'CUBIC'"))
        // The model's 2 features against 3 in X: refused when run, or at load when the graph
        // declares them.
        let model = try load(
            mlNodeModel(
                "SVMClassifier", inputs: [("X", OnnxType.float, nil)], shape: [nil, nil],
                outputs: [("label", OnnxType.int64), ("scores", OnnxType.float)],
                attributes: base + [attribute("coefficients", floats: [1, 1, 1, 1, 1, 1])]))
        #expect(
            runError { _ = try model.execute([Tensor(name: "X", values: [1, 2, 3] as [Float], shape: [1, 3])]) }?
                .contains("3 features, the model 2") == true)
        #expect(
            try refusal(base + [attribute("coefficients", floats: [1, 1, 1, 1, 1, 1])], width: 3).contains(
                "3 features, the model 2"))
    }
}
