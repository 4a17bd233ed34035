"""Builds small real ONNX models, runs them through onnxruntime, and saves the
models with their inputs and onnxruntime's outputs, so the Swift tests can check
InferWire's runtime against onnxruntime without Python.

Run through scripts/make-fixtures (it sets up the venv). Output:
  Tests/InferWireONNXTests/Fixtures/<name>/model.onnx
  Tests/InferWireONNXTests/Fixtures/<name>/cases.json
  examples/models/<name>/<version>/model.onnx   (the example repository's models)
"""
import json
import os
import shutil
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "Tests", "InferWireONNXTests", "Fixtures")
EXAMPLES = os.path.join(ROOT, "examples", "models")
OPSETS = {"": 17, "ai.onnx.ml": 3}
rng = np.random.default_rng(20261126)

DTYPES = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "int32": "INT32", "bool": "BOOL",
          "int8": "INT8", "uint8": "UINT8"}


def encode(array):
    array = np.asarray(array)
    if array.dtype.name == "float64" and not isinstance(array, np.ndarray):
        array = np.asarray(array)
    if array.dtype.kind in ("U", "O", "S"):
        return {"dtype": "BYTES", "shape": list(array.shape), "data": [str(x) for x in array.reshape(-1)]}
    dtype = DTYPES[array.dtype.name]
    data = array.reshape(-1).tolist()
    if dtype in ("FP32", "FP64"):
        data = [float(repr(float(x))) if np.isfinite(x) else None for x in array.reshape(-1)]
    return {"dtype": dtype, "shape": list(array.shape), "data": data}


# Names (or prefixes) given on the command line limit which fixtures are written.
ONLY = sys.argv[1:]


def wanted(name):
    return not ONLY or any(name.startswith(prefix) for prefix in ONLY)


def save(name, model, batches, tolerance=1e-5, example_dirs=(), files=None):
    """Runs `model` on each input dict in `batches` and writes the fixture. `files` (a
    directory holding model.onnx and its external data) is copied instead of `model`."""
    if not wanted(name):
        return
    directory = os.path.join(FIXTURES, name)
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    if files:
        for entry in os.listdir(files):
            shutil.copyfile(os.path.join(files, entry), os.path.join(directory, entry))
        model = onnx.load(os.path.join(directory, "model.onnx"), load_external_data=False)
        data = os.path.join(directory, "model.onnx")
        size = sum(os.path.getsize(os.path.join(directory, e)) for e in os.listdir(directory))
    else:
        data = model.SerializeToString()
        with open(os.path.join(directory, "model.onnx"), "wb") as f:
            f.write(data)
        size = len(data)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    cases = []
    for inputs in batches:
        outputs = session.run(None, inputs)
        cases.append({
            "inputs": {k: encode(v) for k, v in inputs.items()},
            "outputs": {n: encode(v) for n, v in zip(names, outputs)},
        })
    with open(os.path.join(directory, "cases.json"), "w") as f:
        json.dump({"tolerance": tolerance, "cases": cases}, f, separators=(",", ":"))
    for target in example_dirs:
        os.makedirs(target, exist_ok=True)
        shutil.copyfile(os.path.join(directory, "model.onnx"), os.path.join(target, "model.onnx"))
    print(f"{name}: {size} bytes, ops {sorted({n.op_type for n in model.graph.node})}")


def fraud_data(n, features=8):
    x = rng.normal(size=(n, features)).astype(np.float32)
    x[:, 0] = np.abs(x[:, 0]) * 120  # amount
    logit = 0.02 * x[:, 0] - 1.5 * x[:, 1] + 0.8 * x[:, 2] * x[:, 3] - 2.0
    y = (logit + rng.normal(scale=0.5, size=n) > 0).astype(np.int64)
    return x, y


def batches_for(x, sizes=(1, 7), name="X"):
    return [{name: x[:s]} for s in sizes]


# --- scikit-learn models -----------------------------------------------------------

x, y = fraud_data(2000)
x_test, _ = fraud_data(64)

logistic = LogisticRegression(max_iter=500).fit(x, y)
save("logistic_regression", to_onnx(logistic, x[:1], target_opset=OPSETS, options={"zipmap": False}),
     batches_for(x_test))

pipeline_v1 = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, C=0.1)).fit(x, y)
pipeline_v2 = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, C=1.0)).fit(x, y)
save("scaler_logistic_pipeline", to_onnx(pipeline_v1, x[:1], target_opset=OPSETS, options={"zipmap": False}),
     batches_for(x_test), example_dirs=[os.path.join(EXAMPLES, "fraud", "1")])
save("scaler_logistic_pipeline_v2", to_onnx(pipeline_v2, x[:1], target_opset=OPSETS, options={"zipmap": False}),
     batches_for(x_test), example_dirs=[os.path.join(EXAMPLES, "fraud", "2")])

x32 = rng.normal(size=(600, 32)).astype(np.float32)
y32 = (x32[:, :4].sum(axis=1) > 0).astype(np.int64)
mlp = MLPClassifier(hidden_layer_sizes=(256, 256), max_iter=30, random_state=0).fit(x32, y32)
save("mlp_classifier", to_onnx(mlp, x32[:1], target_opset=OPSETS, options={"zipmap": False}),
     [{"X": x32[:1]}, {"X": x32[:64]}], tolerance=1e-4, example_dirs=[os.path.join(EXAMPLES, "mlp", "1")])

forest = RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0).fit(x, y)
save("random_forest", to_onnx(forest, x[:1], target_opset=OPSETS, options={"zipmap": False}),
     batches_for(x_test, (1, 64)), example_dirs=[os.path.join(EXAMPLES, "forest", "1")])

labels = np.array(["legit", "review", "fraud"])[np.clip(y + (x[:, 2] > 1.2), 0, 2)]
forest_strings = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0).fit(x, labels)
save("random_forest_string_labels", to_onnx(forest_strings, x[:1], target_opset=OPSETS, options={"zipmap": False}),
     batches_for(x_test))

target = (x[:, 0] * 0.01 + np.sin(x[:, 1]) + x[:, 2] ** 2).astype(np.float32)
boosted = GradientBoostingRegressor(n_estimators=50, max_depth=3, random_state=0).fit(x, target)
save("gradient_boosting_regressor", to_onnx(boosted, x[:1], target_opset=OPSETS),
     batches_for(x_test, (1, 64)), tolerance=1e-4)


# --- text: scikit-learn TF-IDF pipelines (StringNormalizer, com.microsoft.Tokenizer, TfIdfVectorizer) -----

def tfidf_fixtures():
    from skl2onnx.common.data_types import StringTensorType
    from sklearn.feature_extraction.text import TfidfVectorizer

    corpus = [
        ("The cat sat on the mat", "pets"), ("My dog loves the park", "pets"),
        ("Cats and dogs are friendly pets", "pets"), ("The puppy chewed my shoe", "pets"),
        ("A kitten purrs on my lap", "pets"), ("Walk the dog before breakfast", "pets"),
        ("The vet checked the cat's teeth", "pets"), ("Our hamster runs all night", "pets"),
        ("Bake the bread for forty minutes", "food"), ("Add salt and pepper to the soup", "food"),
        ("The café serves crème brûlée", "food"), ("Fresh pasta with tomato sauce", "food"),
        ("Müller's bakery sells the best pretzels", "food"), ("Stir the risotto slowly", "food"),
        ("Grilled fish with lemon and herbs", "food"), ("Chop the onions and garlic", "food"),
        ("Heavy rain is expected tonight", "weather"), ("Sunny skies and a warm breeze", "weather"),
        ("Snow will fall in the mountains", "weather"), ("The forecast says thunderstorms", "weather"),
        ("Cold wind from the north", "weather"), ("Fog over the bay this morning", "weather"),
        ("A heatwave hits the city", "weather"), ("Light drizzle and cloudy skies", "weather"),
    ]
    docs = [d for d, _ in corpus]
    labels = [label for _, label in corpus]
    y = np.array([["pets", "food", "weather"].index(label) for label in labels])
    sentences = [
        "The DOG chased the CAT!", "café au lait, s'il vous plaît", "Über-cold wind; snow?", "",
        "zebra quantum xylophone", "Bake, stir... and SERVE.", "Rain rain rain", "the", "naïve Müller bakes bread",
        "Sunny, with a chance of meatballs", "🐶 loves 🍕", "THE PUPPY AND THE KITTEN",
    ]

    def column(texts):
        return np.array(texts, dtype=object).reshape(-1, 1)

    def export(pipeline):
        return to_onnx(pipeline, initial_types=[("text", StringTensorType([None, 1]))],
                       target_opset={"": 21, "ai.onnx.ml": 3}, options={"zipmap": False})

    batches = [{"text": column(sentences)}, {"text": column(sentences[:1])}, {"text": column(["", ""])},
               {"text": column(["unknown words only", "the cat", ""])}]
    plain = make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=1000)).fit(docs, y)
    save("tfidf_logistic", export(plain), batches, tolerance=1e-4)
    # skl2onnx 1.20 reads stop words from stop_words_, which scikit-learn 1.9 no longer sets: the
    # model keeps them in the token stream (they only change which bigrams are seen).
    bigrams = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), lowercase=True, stop_words=["the", "a", "and", "my", "on", "to", "with"]),
        LogisticRegression(max_iter=1000)).fit(docs, y)
    save("tfidf_bigrams_stopwords_logistic", export(bigrams), batches, tolerance=1e-4)
    # Without lowercasing there is no StringNormalizer: the Tokenizer gets [N, 1] and answers
    # [N, 1, tokens]. A token_pattern other than the default is written as the tokenexp as is.
    cased = make_pipeline(TfidfVectorizer(lowercase=False, token_pattern=r"\b\w\w+\b"),
                          LogisticRegression(max_iter=1000)).fit(docs, y)
    save("tfidf_cased_pattern_logistic", export(cased), batches, tolerance=1e-4)


tfidf_fixtures()

# --- a small CNN built by hand ---------------------------------------------------------

def cnn():
    w = (rng.normal(size=(4, 1, 3, 3)) * 0.3).astype(np.float32)
    b = (rng.normal(size=(4,)) * 0.1).astype(np.float32)
    fc = (rng.normal(size=(4 * 14 * 14, 10)) * 0.05).astype(np.float32)
    fcb = (rng.normal(size=(10,)) * 0.1).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["image", "w", "b"], ["conv"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("MaxPool", ["relu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["pool"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"),
         numpy_helper.from_array(fc, "fc"), numpy_helper.from_array(fcb, "fcb")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    images = rng.random(size=(3, 1, 28, 28)).astype(np.float32)
    return model, [{"image": images[:1]}, {"image": images}]


model, batches = cnn()
save("small_cnn", model, batches, tolerance=1e-4)


# --- single-operator models: edge cases checked op by op --------------------------------

NP_TO_ONNX = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE, "int64": TensorProto.INT64,
              "int32": TensorProto.INT32, "bool": TensorProto.BOOL, "uint8": TensorProto.UINT8, "int8": TensorProto.INT8}


def op(name, nodes, cases, initializers=(), opset=17, ml=False, outputs=None, tolerance=1e-5, microsoft=False):
    """A graph of `nodes` whose inputs are the keys of the first case (symbolic shapes)."""
    first = cases[0]
    inputs = [helper.make_tensor_value_info(k, NP_TO_ONNX[v.dtype.name], [f"d{i}" for i in range(v.ndim)])
              for k, v in first.items()]
    outs = [helper.make_tensor_value_info(o, t, None) for o, t in (outputs or [("Y", TensorProto.FLOAT)])]
    graph = helper.make_graph(nodes, name, inputs, outs,
                              [numpy_helper.from_array(np.asarray(a), n) for n, a in initializers])
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("ai.onnx.ml", 3)] if ml else []) + (
        [helper.make_opsetid("com.microsoft", 1)] if microsoft else [])
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = 8
    save("op_" + name, model, cases, tolerance=tolerance)


def f32(*shape, low=-2.0, high=2.0):
    return rng.uniform(low, high, size=shape).astype(np.float32)


N = helper.make_node
op("add_broadcast", [N("Add", ["A", "B"], ["Y"])], [{"A": f32(3, 4, 5), "B": f32(5)}, {"A": f32(2, 1, 5), "B": f32(1)},
                                                   {"A": f32(0, 4, 5), "B": f32(5)}])
op("add_broadcast_both", [N("Add", ["A", "B"], ["Y"])], [{"A": f32(2, 1, 5), "B": f32(3, 1)}, {"A": f32(1, 4, 1), "B": f32(1, 6)}])
op("sub_scalar", [N("Sub", ["A", "B"], ["Y"])], [{"A": f32(1), "B": f32(2, 3)}, {"A": f32(3), "B": f32(4, 3)}])
op("mul_div", [N("Mul", ["A", "B"], ["T"]), N("Div", ["T", "C"], ["Y"])],
   [{"A": f32(2, 3), "B": f32(3), "C": f32(2, 1, low=0.5, high=2)}])
op("int64_arithmetic", [N("Add", ["A", "B"], ["T"]), N("Div", ["T", "C"], ["Y"])],
   [{"A": np.array([[7, -7], [3, 9]], np.int64), "B": np.array([1, -2], np.int64), "C": np.array([2], np.int64)}],
   outputs=[("Y", TensorProto.INT64)])
op("unary_chain", [N("Abs", ["X"], ["a"]), N("Sqrt", ["a"], ["b"]), N("Log", ["b"], ["c"]), N("Exp", ["c"], ["d"]),
                   N("Neg", ["d"], ["e"]), N("Tanh", ["e"], ["f"]), N("Sigmoid", ["f"], ["g"]), N("Erf", ["g"], ["Y"])],
   [{"X": f32(3, 7, low=0.1, high=3)}])
op("relu_leaky_clip", [N("Relu", ["X"], ["a"]), N("LeakyRelu", ["X"], ["b"], alpha=0.2), N("Add", ["a", "b"], ["c"]),
                       N("Clip", ["c", "lo", "hi"], ["Y"])],
   [{"X": f32(4, 6)}], initializers=[("lo", np.float32(-0.5)), ("hi", np.float32(1.0))])
op("softmax_axes", [N("Softmax", ["X"], ["a"], axis=1), N("LogSoftmax", ["a"], ["Y"], axis=-1)],
   [{"X": f32(2, 3, 4)}, {"X": f32(1, 5, 2)}])
op("softmax_legacy_opset11", [N("Softmax", ["X"], ["Y"], axis=1)], [{"X": f32(2, 3, 4)}], opset=11)
op("gemm_transposed", [N("Gemm", ["A", "B", "C"], ["Y"], alpha=0.5, beta=2.0, transA=1, transB=1)],
   [{"A": f32(4, 3), "B": f32(5, 4)}], initializers=[("C", f32(5))])
op("matmul_batched", [N("MatMul", ["A", "B"], ["Y"])], [{"A": f32(2, 3, 4, 5), "B": f32(5, 6)}, {"A": f32(1, 1, 4, 5), "B": f32(5, 2)}])
op("matmul_vector_left", [N("MatMul", ["A", "B"], ["Y"])], [{"A": f32(4), "B": f32(3, 4, 2)}])
op("matmul_vector_right", [N("MatMul", ["A", "B"], ["Y"])], [{"A": f32(1, 2, 3), "B": f32(3)}])
op("reshape_flatten", [N("Reshape", ["X", "shape"], ["a"]), N("Flatten", ["a"], ["Y"], axis=2)],
   [{"X": f32(2, 3, 4)}, {"X": f32(5, 3, 4)}], initializers=[("shape", np.array([0, -1, 2], np.int64))])
op("squeeze_unsqueeze", [N("Unsqueeze", ["X", "ax"], ["a"]), N("Squeeze", ["a", "sq"], ["Y"])],
   [{"X": f32(3, 4)}], initializers=[("ax", np.array([-1, 0], np.int64)), ("sq", np.array([0], np.int64))])
op("transpose_concat", [N("Transpose", ["X"], ["a"], perm=[2, 0, 1]), N("Concat", ["a", "a"], ["Y"], axis=-1)],
   [{"X": f32(2, 3, 4)}])
op("gather_negative", [N("Gather", ["X", "idx"], ["Y"], axis=1)], [{"X": f32(3, 5, 2)}],
   initializers=[("idx", np.array([[0, -1], [2, 2]], np.int64))])
op("slice_steps", [N("Slice", ["X", "starts", "ends", "axes", "steps"], ["Y"])], [{"X": f32(6, 7)}],
   initializers=[("starts", np.array([-1, 1], np.int64)), ("ends", np.array([-100, 6], np.int64)),
                 ("axes", np.array([0, -1], np.int64)), ("steps", np.array([-2, 2], np.int64))])
op("cast_argmax", [N("ArgMax", ["X"], ["a"], axis=-1, keepdims=0), N("Cast", ["a"], ["Y"], to=TensorProto.FLOAT)],
   [{"X": f32(4, 5)}, {"X": f32(0, 5)}])
op("reductions", [N("ReduceSum", ["X", "axes"], ["a"], keepdims=1), N("ReduceMean", ["X"], ["b"], axes=[0, 2], keepdims=0),
                  N("ReduceMax", ["X"], ["c"], keepdims=0), N("Mul", ["a", "c"], ["d"]), N("Add", ["d", "b"], ["Y"])],
   [{"X": f32(3, 4, 5)}], initializers=[("axes", np.array([-1], np.int64))], opset=17)
op("shape_constant", [N("Shape", ["X"], ["s"], start=1), N("Constant", [], ["k"], value=numpy_helper.from_array(np.array([2], np.int64))),
                      N("Mul", ["s", "k"], ["Y"])], [{"X": f32(2, 3, 4)}], outputs=[("Y", TensorProto.INT64)])
op("batchnorm_conv", [N("Conv", ["X", "W", "B"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1], group=2),
                      N("BatchNormalization", ["c", "s", "bb", "m", "v"], ["Y"], epsilon=1e-3)],
   [{"X": f32(2, 4, 9, 9)}],
   initializers=[("W", f32(6, 2, 3, 3)), ("B", f32(6)), ("s", f32(6)), ("bb", f32(6)), ("m", f32(6)), ("v", f32(6, low=0.5, high=2))],
   tolerance=1e-4)
op("pools", [N("MaxPool", ["X"], ["a"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
             N("AveragePool", ["X"], ["b"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1, ceil_mode=1),
             N("Add", ["a", "b"], ["c"]), N("GlobalAveragePool", ["c"], ["Y"])],
   [{"X": f32(2, 3, 8, 8)}])
op("ml_preprocessing", [N("Scaler", ["X"], ["a"], domain="ai.onnx.ml", offset=[0.5, 0.0, -0.5, 1.0], scale=[2.0, 1.0, 0.5, 3.0]),
                        N("Normalizer", ["a"], ["b"], domain="ai.onnx.ml", norm="L2"),
                        N("Binarizer", ["b"], ["Y"], domain="ai.onnx.ml", threshold=0.1)],
   [{"X": f32(5, 4)}], ml=True)
op("ml_linear_regressor", [N("LinearRegressor", ["X"], ["Y"], domain="ai.onnx.ml", coefficients=list(f32(6)),
                            intercepts=[0.5, -1.0], targets=2)], [{"X": f32(4, 3)}], ml=True)
# A hand-built tree ensemble exercising every branch mode, missing values and aggregation.
def tree_attrs(prefix):
    # tree 0: root x0 < 0.5 ? (x1 >= 0 ? leaf A : leaf B) : (x2 == 1 ? leaf C : leaf D)
    # tree 1: root x1 > 0.2 ? leaf E : (x0 != 0 ? leaf F : leaf G); NaN in x1 goes true.
    return dict(
        nodes_treeids=[0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1],
        nodes_nodeids=[0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4],
        nodes_featureids=[0, 1, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0],
        nodes_modes=["BRANCH_LT", "BRANCH_GTE", "BRANCH_EQ", "LEAF", "LEAF", "LEAF", "LEAF",
                     "BRANCH_GT", "LEAF", "BRANCH_NEQ", "LEAF", "LEAF"],
        nodes_values=[0.5, 0.0, 1.0, 0, 0, 0, 0, 0.2, 0, 0.0, 0, 0],
        nodes_truenodeids=[1, 3, 5, 0, 0, 0, 0, 1, 0, 3, 0, 0],
        nodes_falsenodeids=[2, 4, 6, 0, 0, 0, 0, 2, 0, 4, 0, 0],
        nodes_missing_value_tracks_true=[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0],
        **{f"{prefix}_treeids": [0, 0, 0, 0, 1, 1, 1, 0, 1],
           f"{prefix}_nodeids": [3, 4, 5, 6, 1, 3, 4, 3, 1],
           f"{prefix}_ids": [0, 0, 0, 0, 0, 0, 0, 1, 1],
           f"{prefix}_weights": [1.0, -2.0, 3.5, 0.25, 10.0, -1.0, 0.5, 0.75, -0.5]})


tree_x = np.array([[0.1, 0.3, 1.0], [0.9, -1.0, 1.0], [0.9, np.nan, 0.0], [0.0, 0.1, 2.0], [0.7, 0.2, 1.0]], np.float32)
for aggregate in ("SUM", "AVERAGE", "MIN", "MAX"):
    op(f"ml_tree_regressor_{aggregate.lower()}",
       [N("TreeEnsembleRegressor", ["X"], ["Y"], domain="ai.onnx.ml", n_targets=2, aggregate_function=aggregate,
          base_values=[0.5, -0.5], **tree_attrs("target"))],
       [{"X": tree_x}], ml=True)
op("ml_tree_classifier_logistic_binary",
   [N("TreeEnsembleClassifier", ["X"], ["label", "scores"], domain="ai.onnx.ml", classlabels_int64s=[0, 1],
      post_transform="LOGISTIC", base_values=[0.3], **{**tree_attrs("class"), "class_ids": [0] * 9})],
   [{"X": tree_x}], ml=True, outputs=[("label", TensorProto.INT64), ("scores", TensorProto.FLOAT)])
op("ml_tree_classifier_three_classes",
   [N("TreeEnsembleClassifier", ["X"], ["label", "scores"], domain="ai.onnx.ml", classlabels_strings=["a", "b", "c"],
      post_transform="SOFTMAX", base_values=[0.1, 0.2, 0.3], **{**tree_attrs("class"), "class_ids": [0, 1, 2, 0, 1, 2, 0, 1, 2]})],
   [{"X": tree_x}], ml=True, outputs=[("label", TensorProto.STRING), ("scores", TensorProto.FLOAT)])
op("ml_tree_classifier_softmax",
   [N("TreeEnsembleClassifier", ["X"], ["label", "scores"], domain="ai.onnx.ml", classlabels_int64s=[0, 1],
      post_transform="SOFTMAX", **tree_attrs("class"))],
   [{"X": tree_x}], ml=True, outputs=[("label", TensorProto.INT64), ("scores", TensorProto.FLOAT)])

op("ml_array_feature_extractor", [N("ArrayFeatureExtractor", ["X", "idx"], ["Y"], domain="ai.onnx.ml")],
   [{"X": f32(3, 6)}], initializers=[("idx", np.array([4, 0, 4], np.int64))], ml=True)

op("conv_transpose_2d", [N("ConvTranspose", ["X", "W", "B"], ["Y"], strides=[2, 2], pads=[1, 0, 1, 1],
                          output_padding=[1, 1], group=2, dilations=[1, 2])],
   [{"X": f32(2, 4, 5, 6)}, {"X": f32(1, 4, 3, 3)}], initializers=[("W", f32(4, 3, 3, 3)), ("B", f32(6))],
   tolerance=1e-4)
op("conv_transpose_1d_same", [N("ConvTranspose", ["X", "W"], ["Y"], strides=[3], auto_pad="SAME_UPPER")],
   [{"X": f32(2, 3, 7)}], initializers=[("W", f32(3, 2, 4))], tolerance=1e-4)
op("einsum_attention", [N("Einsum", ["Q", "K"], ["S"], equation="bhid,bhjd->bhij"),
                        N("Softmax", ["S"], ["P"], axis=-1), N("Einsum", ["P", "V"], ["Y"], equation="bhij,bhjd->bhid")],
   [{"Q": f32(2, 3, 5, 4), "K": f32(2, 3, 6, 4), "V": f32(2, 3, 6, 4)}], tolerance=1e-4)
op("einsum_three_operands", [N("Einsum", ["A", "B", "C"], ["Y"], equation="ij,jk,kl->il")],
   [{"A": f32(3, 4), "B": f32(4, 5), "C": f32(5, 2)}], tolerance=1e-4)
op("einsum_ellipsis_diagonal", [N("Einsum", ["A"], ["D"], equation="...ii->...i"),
                                N("Einsum", ["D", "B"], ["Y"], equation="...i,...i->...")],
   [{"A": f32(2, 3, 4, 4), "B": f32(2, 3, 4)}], tolerance=1e-4)
op("matmul_integer", [N("MatMulInteger", ["A", "B", "za", "zb"], ["Y"])],
   [{"A": rng.integers(0, 256, size=(3, 5)).astype(np.uint8)}, {"A": rng.integers(0, 256, size=(1, 5)).astype(np.uint8)}],
   initializers=[("B", rng.integers(-128, 128, size=(5, 4)).astype(np.int8)), ("za", np.uint8(131)),
                 ("zb", np.array([3, -2, 0, 7], np.int8))], outputs=[("Y", TensorProto.INT32)])
for kind, dtype, zeros in (("uint8", np.uint8, (120, 7, 133)), ("int8", np.int8, (-20, 7, -3))):
    info = np.iinfo(dtype)
    quantized = [{"A": rng.integers(info.min, info.max + 1, size=(4, 16)).astype(dtype),
                  "B": rng.integers(info.min, info.max + 1, size=(16,)).astype(dtype)}]
    parameters = [("sa", np.float32(0.0173)), ("za", dtype(zeros[0])), ("sb", np.float32(0.031)),
                  ("zb", dtype(zeros[1])), ("sc", np.float32(0.047)), ("zc", dtype(zeros[2]))]
    for contrib in ("QLinearAdd", "QLinearMul"):
        op(f"microsoft_{contrib.lower()}_{kind}",
           [N(contrib, ["A", "sa", "za", "B", "sb", "zb", "sc", "zc"], ["Y"], domain="com.microsoft")], quantized,
           initializers=parameters, microsoft=True,
           outputs=[("Y", TensorProto.UINT8 if dtype == np.uint8 else TensorProto.INT8)])

# Control flow: bodies that read values of the scopes around them.
V = helper.make_tensor_value_info
scan_body = helper.make_graph(
    [N("Mul", ["row", "W"], ["weighted"]), N("Add", ["state", "weighted"], ["state_out"]),
     N("ReduceSum", ["weighted"], ["total"], keepdims=0)],
    "scan_body", [V("state", TensorProto.FLOAT, [3]), V("row", TensorProto.FLOAT, [3])],
    [V("state_out", TensorProto.FLOAT, [3]), V("total", TensorProto.FLOAT, [])])
op("scan_outer_scope", [N("Scan", ["S", "X"], ["final", "Y"], body=scan_body, num_scan_inputs=1,
                          scan_output_directions=[1])],
   [{"S": f32(3), "X": f32(5, 3)}, {"S": f32(3), "X": f32(1, 3)}], initializers=[("W", f32(3))],
   outputs=[("final", TensorProto.FLOAT), ("Y", TensorProto.FLOAT)])
loop_body = helper.make_graph(
    [N("Add", ["acc", "X"], ["acc_out"]), N("Identity", ["cond"], ["cond_out"]),
     N("Cast", ["i"], ["i_float"], to=TensorProto.FLOAT), N("Mul", ["acc_out", "i_float"], ["scaled"])],
    "loop_body", [V("i", TensorProto.INT64, []), V("cond", TensorProto.BOOL, []), V("acc", TensorProto.FLOAT, None)],
    [V("cond_out", TensorProto.BOOL, []), V("acc_out", TensorProto.FLOAT, None), V("scaled", TensorProto.FLOAT, None)])
then_branch = helper.make_graph([N("Mul", ["X", "two"], ["doubled"])], "then", [], [V("doubled", TensorProto.FLOAT, None)],
                                [numpy_helper.from_array(np.array(2, np.float32), "two")])
else_branch = helper.make_graph([N("Loop", ["trips", "", "X"], ["summed", "steps"], body=loop_body),
                                 N("ReduceSum", ["steps", "zero_axis"], ["stepsum"], keepdims=0),
                                 N("Add", ["summed", "stepsum"], ["mixed"])],
                                "else", [], [V("mixed", TensorProto.FLOAT, None)],
                                [numpy_helper.from_array(np.array([0], np.int64), "zero_axis")])
op("if_loop_outer_scope", [N("ReduceSum", ["X"], ["sum"], keepdims=0), N("Greater", ["sum", "zero"], ["positive"]),
                           N("If", ["positive"], ["Y"], then_branch=then_branch, else_branch=else_branch)],
   [{"X": f32(2, 3, low=0.1, high=1)}, {"X": f32(2, 3, low=-1, high=-0.1)}],
   initializers=[("zero", np.float32(0)), ("trips", np.array(3, np.int64))])

# --- families of models from today's exporters ---------------------------------------------
# Each family has its own generator, so adding one leaves the others' bytes alone.

from skl2onnx.common.data_types import FloatTensorType, StringTensorType  # noqa: E402

SKL_OPSETS = {"": 21, "ai.onnx.ml": 3}


def family_rng(name):
    return np.random.default_rng(sum(map(ord, name)))


def sklearn_families():
    from sklearn.cluster import KMeans
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import IsolationForest
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import OneHotEncoder
    from sklearn.svm import SVC, SVR

    r = family_rng("sklearn")
    x = r.normal(size=(300, 6)).astype(np.float32)
    y3 = (x[:, 0] > 0.4).astype(np.int64) + (x[:, 1] + x[:, 2] > 0.5).astype(np.int64)
    test = r.normal(size=(16, 6)).astype(np.float32)

    svc = SVC(probability=True, random_state=0).fit(x, y3)
    save("family_sklearn_svc", to_onnx(svc, x[:1], target_opset=SKL_OPSETS, options={"zipmap": False}),
         batches_for(test, (1, 16)), tolerance=1e-4)
    svr = SVR(kernel="poly", degree=2).fit(x, x[:, 0] * 2 + x[:, 1] ** 2)
    save("family_sklearn_svr", to_onnx(svr, x[:1], target_opset=SKL_OPSETS), batches_for(test, (1, 16)), tolerance=1e-4)
    knn = KNeighborsClassifier(n_neighbors=5).fit(x, y3)
    save("family_sklearn_knn", to_onnx(knn, x[:1], target_opset=SKL_OPSETS, options={"zipmap": False}),
         batches_for(test, (1, 16)), tolerance=1e-4)
    forest = IsolationForest(n_estimators=10, max_samples=64, random_state=0).fit(x)
    save("family_sklearn_isolation_forest", to_onnx(forest, x[:1], target_opset=SKL_OPSETS),
         batches_for(test, (1, 16)), tolerance=1e-4)
    kmeans = KMeans(n_clusters=4, n_init=1, random_state=0).fit(x)
    save("family_sklearn_kmeans", to_onnx(kmeans, x[:1], target_opset=SKL_OPSETS), batches_for(test, (1, 16)),
         tolerance=1e-4)

    # A ColumnTransformer one-hot encoding two string columns beside a numeric one.
    import pandas as pd
    cities = np.array(["paris", "rome", "oslo", "lima"])
    frame = pd.DataFrame({"city": r.choice(cities[:3], 300), "plan": r.choice(["free", "pro"], 300),
                          "amount": x[:, 0]})
    labels = ((frame["city"] == "rome") ^ (frame["amount"] > 0)).astype(np.int64)
    encoder = make_pipeline(
        ColumnTransformer([("onehot", OneHotEncoder(handle_unknown="ignore"), ["city", "plan"]),
                           ("numeric", "passthrough", ["amount"])]),
        LogisticRegression(max_iter=500)).fit(frame, labels)
    types = [("city", StringTensorType([None, 1])), ("plan", StringTensorType([None, 1])),
             ("amount", FloatTensorType([None, 1]))]
    rows = {"city": np.array([["rome"], ["lima"], ["paris"], ["oslo"], ["rome"]]),  # lima: unseen
            "plan": np.array([["pro"], ["free"], ["free"], ["pro"], ["free"]]),
            "amount": np.array([[0.5], [-1.0], [2.0], [0.0], [-0.25]], np.float32)}
    save("family_sklearn_onehot_pipeline",
         to_onnx(encoder, initial_types=types, target_opset=SKL_OPSETS, options={"zipmap": False}),
         [{k: v[:1] for k, v in rows.items()}, rows], tolerance=1e-4)

    # TF-IDF over unigrams and bigrams, then a linear classifier.
    texts = ["The quick brown fox jumps", "a lazy dog sleeps all day", "the dog barks at the fox",
             "quick thinking saves the day", "brown dogs and brown foxes", "Nothing happens here."] * 5
    text_labels = np.array([0, 1, 1, 0, 1, 0] * 5)
    tfidf = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2), LogisticRegression(max_iter=500))
    tfidf.fit(texts, text_labels)
    queries = np.array([["the quick dog"], ["BROWN FOX, lazy day!"], [""], ["unknown words only"],
                        ["the the the fox"]])
    save("family_sklearn_tfidf_pipeline",
         to_onnx(tfidf, initial_types=[("text", StringTensorType([None, 1]))], target_opset=SKL_OPSETS,
                 options={"zipmap": False}),
         [{"text": queries[:1]}, {"text": queries}], tolerance=1e-4)


def boosting_families():
    import lightgbm
    import xgboost
    from onnxmltools import convert_lightgbm, convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType as MLFloat

    r = family_rng("boosting")
    x = r.normal(size=(400, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(np.int64)
    y3 = y + (x[:, 3] > 0.8)
    test = r.normal(size=(16, 6)).astype(np.float32)
    types = [("X", MLFloat([None, 6]))]
    for name, model in [("family_lightgbm_classifier", lightgbm.LGBMClassifier(n_estimators=20, num_leaves=8, verbose=-1).fit(x, y)),
                        ("family_lightgbm_multiclass", lightgbm.LGBMClassifier(n_estimators=10, num_leaves=8, verbose=-1).fit(x, y3)),
                        ("family_lightgbm_regressor", lightgbm.LGBMRegressor(n_estimators=20, num_leaves=8, verbose=-1).fit(x, x[:, 0] * 3))]:
        save(name, convert_lightgbm(model, initial_types=types, target_opset=15, zipmap=False),
             batches_for(test, (1, 16)), tolerance=1e-4)
    for name, model in [("family_xgboost_classifier", xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(x, y)),
                        ("family_xgboost_multiclass", xgboost.XGBClassifier(n_estimators=10, max_depth=3).fit(x, y3)),
                        ("family_xgboost_regressor", xgboost.XGBRegressor(n_estimators=20, max_depth=3).fit(x, x[:, 0] * 3))]:
        save(name, convert_xgboost(model, initial_types=types, target_opset=15), batches_for(test, (1, 16)),
             tolerance=1e-4)


def torch_families():
    """Architectures defined here with random weights, exported by torch's current (dynamo)
    exporter, which writes the weights to model.onnx.data beside the model."""
    import tempfile

    import torch

    torch.manual_seed(20261207)

    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.GELU(), torch.nn.Linear(64, 64),
                                           torch.nn.GELU(approximate="tanh"), torch.nn.Linear(64, 4))

        def forward(self, x):
            return torch.softmax(self.net(x), dim=-1)

    class CNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(1, 8, 3, padding=1)
            self.norm = torch.nn.BatchNorm2d(8)
            self.conv2 = torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2)
            self.pool = torch.nn.AdaptiveAvgPool2d(1)
            self.fc = torch.nn.Linear(8, 10)

        def forward(self, x):
            x = torch.nn.functional.max_pool2d(torch.relu(self.norm(self.conv1(x))), 2)
            x = torch.relu(self.conv2(x))
            return self.fc(torch.flatten(self.pool(x), 1))

    encoder = torch.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True, activation="gelu")
    r = family_rng("torch")
    families = [
        ("family_torch_mlp_gelu", MLP(), r.normal(size=(8, 16)).astype(np.float32), {0: "batch"}),
        ("family_torch_cnn", CNN(), r.random(size=(4, 1, 16, 16)).astype(np.float32), {0: "batch"}),
        ("family_torch_transformer_encoder", encoder, r.normal(size=(3, 7, 32)).astype(np.float32),
         {0: "batch", 1: "sequence"}),
    ]
    for name, module, sample, dims in families:
        if not wanted(name):
            continue
        module.eval()
        # BatchNorm's statistics would otherwise be the identity.
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        shapes = ({axis: torch.export.Dim(label, min=1) for axis, label in dims.items()},)
        with tempfile.TemporaryDirectory() as directory:
            torch.onnx.export(module, (torch.from_numpy(sample[:2]),), os.path.join(directory, "model.onnx"),
                              dynamo=True, input_names=["x"], output_names=["y"], dynamic_shapes=shapes,
                              external_data=True)
            save(name, None, [{"x": sample[:1]}, {"x": sample}], tolerance=1e-4, files=directory)


def quantized_families():
    """A float MLP quantized by onnxruntime's quantization tool: dynamically (MatMulInteger),
    and statically in both of its formats (QLinearMatMul operators, and QDQ pairs)."""
    import tempfile

    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    r = family_rng("quantized")
    w1 = (r.normal(size=(32, 64)) * 0.2).astype(np.float32)
    b1 = (r.normal(size=(64,)) * 0.1).astype(np.float32)
    w2 = (r.normal(size=(64, 8)) * 0.2).astype(np.float32)
    b2 = (r.normal(size=(8,)) * 0.1).astype(np.float32)
    nodes = [N("MatMul", ["x", "w1"], ["h"]), N("Add", ["h", "b1"], ["hb"]), N("Relu", ["hb"], ["a"]),
             N("MatMul", ["a", "w2"], ["o"]), N("Add", ["o", "b2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
                              [numpy_helper.from_array(a, n) for n, a in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    sample = r.normal(size=(8, 32)).astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": r.normal(size=(4, 32)).astype(np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as directory:
        source = os.path.join(directory, "float.onnx")
        onnx.save(model, source)
        variants = [
            ("family_int8_mlp_dynamic", lambda out: quantize_dynamic(source, out, weight_type=QuantType.QInt8)),
            ("family_int8_mlp_qoperator", lambda out: quantize_static(
                source, out, Reader(), quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8)),
            ("family_int8_mlp_qdq", lambda out: quantize_static(
                source, out, Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8)),
        ]
        for name, quantize in variants:
            if not wanted(name):
                continue
            out = os.path.join(directory, name + ".onnx")
            quantize(out)
            save(name, onnx.load(out), [{"x": sample[:1]}, {"x": sample}], tolerance=1e-4)


def minifloat_vectors():
    """Float32 values and the codes ONNX's reference (ml_dtypes) gives them in each 8- and 4-bit
    float format, saturating and not: every representable value, the midpoints between
    neighbours (ties), values beyond the range, infinities, NaN and tiny values."""
    import ml_dtypes

    if not wanted("vectors_minifloat"):
        return
    formats = {"e4m3fn": ml_dtypes.float8_e4m3fn, "e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
               "e5m2": ml_dtypes.float8_e5m2, "e5m2fnuz": ml_dtypes.float8_e5m2fnuz, "e2m1": ml_dtypes.float4_e2m1fn}
    out = {}
    for name, dtype in formats.items():
        codes = np.arange(16 if name == "e2m1" else 256, dtype=np.uint8)
        values = codes.view(dtype)
        finite = np.sort(np.unique(values.astype(np.float32)[np.isfinite(values.astype(np.float32))]))
        midpoints = (finite[:-1] + (finite[1:] - finite[:-1]) / 2).astype(np.float32)
        biggest = np.float32(ml_dtypes.finfo(dtype).max)
        extra = np.array([biggest * 1.04, biggest * 1.07, biggest * 1.2, biggest * 4, np.inf, -np.inf, np.nan,
                          1e-12, -1e-12, 0.0, -0.0, 3e-3, -3e-3], np.float32)
        inputs = np.concatenate([finite, midpoints, np.nextafter(midpoints, np.float32(np.inf)),
                                 np.nextafter(midpoints, np.float32(-np.inf)), extra]).astype(np.float32)
        plain = inputs.astype(dtype).view(np.uint8) & (0x0F if name == "e2m1" else 0xFF)
        saturated = onnx.numpy_helper.saturate_cast(inputs, dtype).view(np.uint8) & (0x0F if name == "e2m1" else 0xFF)
        out[name] = {"inputs": [float(v) if np.isfinite(v) else str(v) for v in inputs],
                     "codes": plain.tolist(), "saturated": saturated.tolist()}
    directory = os.path.join(ROOT, "Tests", "InferWireONNXTests", "Vectors")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "minifloat.json"), "w") as f:
        json.dump(out, f, separators=(",", ":"))
    print("vectors_minifloat:", {k: len(v["inputs"]) for k, v in out.items()})


minifloat_vectors()
sklearn_families()
boosting_families()
torch_families()
quantized_families()
