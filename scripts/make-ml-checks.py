"""Writes Tests/InferWireONNXTests/MLCheckData.swift: small scikit-learn models exported by
skl2onnx (SVC with probabilities on three classes, NuSVC without them, SVR, OneClassSVM,
LinearSVC, OneHotEncoder + LogisticRegression on string columns) and a few hand-built
SVMClassifier nodes, each with inputs and onnxruntime's
outputs, so that MLCheckTests compares InferWire's runtime with onnxruntime without Python.

Run through scripts/make-fixtures' venv: .venv/bin/python scripts/make-ml-checks.py
(scripts/make-fixtures installs numpy, scikit-learn, skl2onnx, onnx and onnxruntime there).
"""
import base64
import os
import shutil
import subprocess
import warnings

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import StringTensorType
from sklearn.datasets import load_iris, make_regression
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.svm import SVC, SVR, LinearSVC, NuSVC, OneClassSVM

warnings.simplefilter("ignore")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "InferWireONNXTests", "MLCheckData.swift")
OPSETS = {"": 17, "ai.onnx.ml": 3}
rng = np.random.default_rng(20261207)


def swift_value(array):
    array = np.asarray(array)
    shape = "[" + ", ".join(str(d) for d in array.shape) + "]"
    flat = array.reshape(-1)
    if array.dtype.kind in ("U", "O", "S"):
        return f".strings([{', '.join(repr(str(s)).replace(chr(39), chr(34)) for s in flat)}], shape: {shape})"
    if array.dtype == np.int64:
        return f".int64s([{', '.join(str(int(v)) for v in flat)}], shape: {shape})"
    if array.dtype == np.float32:
        return f".floats([{', '.join(str(np.float32(v)) for v in flat)}], shape: {shape})"
    raise ValueError(array.dtype)


def check(name, model, batches):
    data = model.SerializeToString()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    cases = []
    for inputs in batches:
        outputs = session.run(None, inputs)
        cases.append((inputs, dict(zip(names, outputs))))
    encoded = base64.b64encode(data).decode()
    lines = [f'    MLCheck(', f'        name: "{name}",', '        model: """']
    lines += [f"            {encoded[i:i + 100]}" for i in range(0, len(encoded), 100)]
    lines.append('            """,')
    lines.append("        cases: [")
    for inputs, outputs in cases:
        lines.append("            MLCheck.Case(")
        lines.append("                inputs: [" + ", ".join(f'"{k}": {swift_value(v)}' for k, v in inputs.items()) + "],")
        lines.append("                outputs: [" + ", ".join(f'"{k}": {swift_value(v)}' for k, v in outputs.items()) + "]),")
    lines.append("        ]),")
    print(f"{name}: {len(data)} bytes")
    return "\n".join(lines)


iris_x, iris_y = load_iris(return_X_y=True)
iris_x = iris_x.astype(np.float32)
pick = rng.permutation(len(iris_x))
iris_batches = [{"X": iris_x[pick[:1]]},
                {"X": (iris_x[pick[1:9]] + rng.normal(0, 0.4, size=(8, 4))).astype(np.float32)}]
entries = []

svc = SVC(probability=True, random_state=0).fit(iris_x, iris_y)
entries.append(check("SVC(probability=True), three classes, RBF",
                     to_onnx(svc, iris_x[:1], target_opset=OPSETS, options={id(svc): {"zipmap": False}}), iris_batches))

reg_x, reg_y = make_regression(n_samples=60, n_features=4, noise=0.5, random_state=3)
reg_x = reg_x.astype(np.float32)
svr = SVR(C=10.0).fit(reg_x, reg_y)
entries.append(check("SVR, RBF", to_onnx(svr, reg_x[:1], target_opset=OPSETS),
                     [{"X": reg_x[:1]}, {"X": (reg_x[5:12] + rng.normal(0, 0.3, size=(7, 4))).astype(np.float32)}]))

nusvc = NuSVC(nu=0.3).fit(iris_x[::2], iris_y[::2])
entries.append(check("NuSVC, three classes, no probabilities (skl2onnx's vote graph)",
                     to_onnx(nusvc, iris_x[:1], target_opset=OPSETS, options={id(nusvc): {"zipmap": False}}), iris_batches))
outliers = OneClassSVM(nu=0.1, gamma=0.3).fit(reg_x[:30])
entries.append(check("OneClassSVM", to_onnx(outliers, reg_x[:1], target_opset=OPSETS),
                     [{"X": (reg_x[30:40] * 1.5).astype(np.float32)}]))
linear = LinearSVC(random_state=0).fit(iris_x, iris_y)
entries.append(check("LinearSVC, three classes", to_onnx(linear, iris_x[:1], target_opset=OPSETS), iris_batches))

columns = np.array([[rng.choice(["red", "green", "blue"]), rng.choice(["s", "m", "l", "xl"])] for _ in range(80)], dtype=object)
labels = (columns[:, 0] == "red").astype(int) + (columns[:, 1] == "xl")
pipeline = make_pipeline(OneHotEncoder(handle_unknown="ignore"), LogisticRegression()).fit(columns, labels)
entries.append(check("OneHotEncoder + LogisticRegression on string columns",
                     to_onnx(pipeline, initial_types=[("X", StringTensorType([None, 2]))], target_opset=OPSETS,
                             options={id(pipeline.steps[-1][1]): {"zipmap": False}}),
                     [{"X": columns[:1]}, {"X": np.array([["red", "xl"], ["blue", "s"], ["purple", "m"], ["green", "xxl"]], dtype=object)}]))


def svm_node(name, batches, **attributes):
    attributes.setdefault("kernel_params", [0.4, 0.5, 3.0])
    node = helper.make_node("SVMClassifier", ["X"], ["label", "scores"], domain="ai.onnx.ml", **attributes)
    graph = helper.make_graph([node], "svm", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
                               helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)])
    model.ir_version = 8
    return check(name, model, batches)


def f32(*shape):
    return rng.uniform(-2, 2, size=shape).astype(np.float32).round(3)


vectors = dict(coefficients=[float(v) for v in f32(5)], vectors_per_class=[2, 3],
               support_vectors=[float(v) for v in f32(15)], classlabels_ints=[3, 9], rho=[0.2])
entries.append(svm_node("SVMClassifier, two classes, RBF, no probabilities", [{"X": f32(5, 3)}], kernel_type="RBF", **vectors))
entries.append(svm_node("SVMClassifier, two classes, sigmoid kernel, no probabilities, LOGISTIC", [{"X": f32(5, 3)}],
                        kernel_type="SIGMOID", post_transform="LOGISTIC", **vectors))
entries.append(svm_node("SVMClassifier, two classes, poly kernel, probabilities", [{"X": f32(5, 3)}],
                        kernel_type="POLY", prob_a=[-1.5], prob_b=[0.25], **vectors))
three = dict(coefficients=[float(v) for v in f32(12)], vectors_per_class=[2, 3, 1],
             support_vectors=[float(v) for v in f32(18)], classlabels_ints=[0, 1, 2], rho=[0.2, -0.1, 0.05])
entries.append(svm_node("SVMClassifier, three classes, no probabilities, SOFTMAX", [{"X": f32(5, 3)}],
                        kernel_type="POLY", post_transform="SOFTMAX", **three))
entries.append(svm_node("SVMClassifier, linear form, three classes, PROBIT", [{"X": f32(5, 3) / 4}],
                        coefficients=[float(v) for v in f32(9) / 8], rho=[0.5], classlabels_ints=[4, 5, 6],
                        post_transform="PROBIT"))
entries.append(svm_node("SVMClassifier, linear form, two classes", [{"X": f32(6, 3)}],
                        coefficients=[float(v) for v in f32(6)], rho=[0.1], classlabels_ints=[0, 1]))

source = """// Generated by scripts/make-ml-checks.py; do not edit.

/// Models with inputs and the outputs onnxruntime computed for them.
let mlChecks: [MLCheck] = [
""" + "\n".join(entries) + "\n]\n"
with open(OUT, "w") as f:
    f.write(source)
# Long literals are wrapped the way scripts/format wants them.
if shutil.which("swift"):
    subprocess.run(["swift", "format", "format", "--in-place", "--configuration", os.path.join(ROOT, ".swift-format"), OUT],
                   check=True)
print(f"{OUT}: {os.path.getsize(OUT)} bytes")
