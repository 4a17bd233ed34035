"""The REST service a data scientist would write for the same model: FastAPI + uvicorn +
onnxruntime, JSON in and out, one onnxruntime thread. Used by scripts/compare-rest."""
import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from pydantic import BaseModel

options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = ort.InferenceSession(os.environ["MODEL_PATH"], options, providers=["CPUExecutionProvider"])
input_name = session.get_inputs()[0].name
output_names = [o.name for o in session.get_outputs()]

app = FastAPI()


class PredictRequest(BaseModel):
    inputs: list[list[float]]


@app.post("/predict")
def predict(request: PredictRequest) -> dict:
    x = np.asarray(request.inputs, dtype=np.float32)
    outputs = session.run(None, {input_name: x})
    return {name: value.tolist() for name, value in zip(output_names, outputs)}
