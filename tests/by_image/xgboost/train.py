"""Train an XGBoost booster (multi-class soft probabilities) on the iris data inside the image.

Usage: train.py DATA_DIR MODEL_DIR — writes MODEL_DIR/model.json (XGBoost's own JSON format) and
MODEL_DIR/expected.json (rows and the probabilities this XGBoost computed for them in-process).
"""

import json
import sys
from pathlib import Path

import numpy as np
import xgboost as xgb

data, out = Path(sys.argv[1]), Path(sys.argv[2])
table = np.loadtxt(data / "iris.csv", delimiter=",", skiprows=1)
X, y = table[:, :4], table[:, 4].astype(int)
params = {"objective": "multi:softprob", "num_class": 3, "max_depth": 3, "eta": 0.3, "seed": 0, "nthread": 1}
booster = xgb.train(params, xgb.DMatrix(X, label=y), num_boost_round=20)
booster.save_model(out / "model.json")
rows = X[::15]
(out / "expected.json").write_text(json.dumps({"input": rows.tolist(),
                                               "output": booster.predict(xgb.DMatrix(rows)).tolist()}))
