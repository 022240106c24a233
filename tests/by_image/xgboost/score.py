"""Entry script for XGBoost images: a plain run(raw_data) that gets the request body as a string."""

import json
import os

import numpy as np
import xgboost as xgb

booster = None


def init():
    global booster
    booster = xgb.Booster()
    booster.load_model(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.json"))


def run(raw_data):
    rows = np.array(json.loads(raw_data)["data"], dtype=float)
    return booster.predict(xgb.DMatrix(rows)).tolist()
