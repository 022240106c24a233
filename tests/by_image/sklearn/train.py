"""Train a scikit-learn pipeline on the iris data inside the image under test.

Usage: train.py DATA_DIR MODEL_DIR — writes MODEL_DIR/model.joblib and MODEL_DIR/expected.json
(rows to score and the class probabilities this scikit-learn computed for them in-process).
"""

import json
import sys
from pathlib import Path

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

data, out = Path(sys.argv[1]), Path(sys.argv[2])
table = np.loadtxt(data / "iris.csv", delimiter=",", skiprows=1)
X, y = table[:, :4], table[:, 4].astype(int)
model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)
joblib.dump(model, out / "model.joblib")
rows = X[::15]
(out / "expected.json").write_text(json.dumps({"input": rows.tolist(),
                                               "output": model.predict_proba(rows).tolist()}))
