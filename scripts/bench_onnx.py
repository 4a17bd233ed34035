"""InferWire's ONNX runtime next to onnxruntime (one intra-op thread), same models,
same inputs, same machine, one run: median time per call and the ratio, batch 1 and 64.

Run through scripts/bench-onnx, which builds the release binary and the venv.
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "Tests", "InferWireONNXTests", "Fixtures")
BENCH = os.path.join(ROOT, ".build", "release", "inferwire-onnxbench")
MODELS = [("mlp_classifier", (32,)), ("random_forest", (8,)), ("gradient_boosting_regressor", (8,)),
          ("scaler_logistic_pipeline", (8,)), ("small_cnn", (1, 28, 28))]
ITERATIONS, REPEATS = 200, 7


def time_ort(path, x):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    feed = {name: x}
    for _ in range(max(10, ITERATIONS // 10)):
        session.run(None, feed)
    per_call = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        for _ in range(ITERATIONS):
            session.run(None, feed)
        per_call.append((time.perf_counter() - start) / ITERATIONS * 1e6)
    return statistics.median(per_call)


def time_inferwire(directory, x, input_file):
    x.astype("<f4").tofile(input_file)
    out = subprocess.run([BENCH, "--model", directory, "--input", input_file, "--shape", ",".join(map(str, x.shape)),
                          "--iterations", str(ITERATIONS), "--repeats", str(REPEATS)],
                         check=True, capture_output=True, text=True)
    return float(out.stdout.strip())


def main():
    rng = np.random.default_rng(7)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        input_file = os.path.join(tmp, "x.bin")
        for name, features in MODELS:
            directory = os.path.join(FIXTURES, name)
            path = os.path.join(directory, "model.onnx")
            for batch in (1, 64):
                x = rng.normal(size=(batch, *features)).astype(np.float32)
                # Interleave the two runtimes twice; keep each side's best median.
                ours, theirs = [], []
                for _ in range(2):
                    theirs.append(time_ort(path, x))
                    ours.append(time_inferwire(directory, x, input_file))
                rows.append((name, batch, min(ours), min(theirs)))
    print(f"onnxruntime {ort.__version__} (Python API, 1 intra-op thread) vs InferWire runtime (Swift, release), "
          f"median µs per call over {REPEATS}×{ITERATIONS} calls")
    print(f"{'model':32} {'batch':>5} {'InferWire µs':>13} {'onnxruntime µs':>15} {'ratio':>7}")
    for name, batch, ours, theirs in rows:
        print(f"{name:32} {batch:5d} {ours:13.1f} {theirs:15.1f} {ours / theirs:6.2f}×")


if __name__ == "__main__":
    sys.exit(main())
