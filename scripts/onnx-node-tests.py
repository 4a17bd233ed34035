"""Writes ONNX's node test cases (the onnx package's own, from onnx.backend.test.case.node)
as model.onnx + test_data_set_N/{input,output}_M.pb directories, the layout ONNX's backend
tests read. Cases with sequence, map or optional values are skipped: InferWire serves tensors."""
import os
import shutil
import sys
import warnings

import numpy as np
from onnx import TensorProto, numpy_helper
import onnx.backend.test.case.node as node_cases

warnings.simplefilter("ignore")
out = sys.argv[1]
shutil.rmtree(out, ignore_errors=True)
os.makedirs(out)
written = skipped = 0
for case in node_cases.collect_testcases(None):
    graph = case.model.graph
    if not all(v.type.HasField("tensor_type") for v in list(graph.input) + list(graph.output)):
        skipped += 1
        continue
    directory = os.path.join(out, case.name)
    os.makedirs(directory)
    with open(os.path.join(directory, "model.onnx"), "wb") as f:
        f.write(case.model.SerializeToString())
    for i, (inputs, outputs) in enumerate(case.data_sets):
        data = os.path.join(directory, f"test_data_set_{i}")
        os.makedirs(data)
        for prefix, values, infos in (("input", inputs, graph.input), ("output", outputs, graph.output)):
            for j, value in enumerate(values):
                tensor = value if isinstance(value, TensorProto) else numpy_helper.from_array(np.asarray(value), infos[j].name)
                with open(os.path.join(data, f"{prefix}_{j}.pb"), "wb") as f:
                    f.write(tensor.SerializeToString())
    written += 1
print(f"{written} node test cases written to {out} ({skipped} with sequences, maps or optionals skipped)")
