"""Train a scikit-learn classifier on the iris data, convert it to ONNX, and compute the expected
probabilities with the image's own ONNX Runtime.

Usage: train.py DATA_DIR MODEL_DIR — writes MODEL_DIR/model.onnx and MODEL_DIR/expected.json.
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

data, out = Path(sys.argv[1]), Path(sys.argv[2])
table = np.loadtxt(data / "iris.csv", delimiter=",", skiprows=1).astype(np.float32)
X, y = table[:, :4], table[:, 4].astype(np.int64)
model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)
onx = to_onnx(model, X[:1], options={"zipmap": False}, target_opset=17)
(out / "model.onnx").write_bytes(onx.SerializeToString())
session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
rows = X[::15]
labels, probabilities = session.run(None, {session.get_inputs()[0].name: rows})
(out / "expected.json").write_text(json.dumps({"input": rows.tolist(),
                                               "output": {"label": labels.tolist(),
                                                          "probabilities": probabilities.tolist()}}))
