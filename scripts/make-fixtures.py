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

DTYPES = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "int32": "INT32", "bool": "BOOL"}


def encode(array):
    array = np.asarray(array)
    if array.dtype.kind in ("U", "O", "S"):
        return {"dtype": "BYTES", "shape": list(array.shape), "data": [str(x) for x in array.reshape(-1)]}
    dtype = DTYPES[array.dtype.name]
    data = array.reshape(-1).tolist()
    if dtype in ("FP32", "FP64"):
        data = [float(repr(float(x))) if np.isfinite(x) else None for x in array.reshape(-1)]
    return {"dtype": dtype, "shape": list(array.shape), "data": data}


def save(name, model, batches, tolerance=1e-5, example_dirs=()):
    """Runs `model` on each input dict in `batches` and writes the fixture."""
    directory = os.path.join(FIXTURES, name)
    os.makedirs(directory, exist_ok=True)
    data = model.SerializeToString()
    with open(os.path.join(directory, "model.onnx"), "wb") as f:
        f.write(data)
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
    print(f"{name}: {len(data)} bytes, ops {sorted({n.op_type for n in model.graph.node})}")


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
     [{"X": x32[:1]}, {"X": x32[:64]}], tolerance=1e-4)

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

if "--ops" not in sys.argv:
    sys.exit(0)
