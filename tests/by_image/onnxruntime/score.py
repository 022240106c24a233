"""Entry script for ONNX Runtime images: runs model.onnx on the CPU execution provider."""

import json
import os

import numpy as np
import onnxruntime as ort

session = None


def init():
    global session
    session = ort.InferenceSession(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.onnx"),
                                   providers=["CPUExecutionProvider"])


def run(raw_data):
    rows = np.array(json.loads(raw_data)["data"], dtype=np.float32)
    labels, probabilities = session.run(None, {session.get_inputs()[0].name: rows})
    return {"label": labels.tolist(), "probabilities": probabilities.tolist()}
