"""Iris classifier: returns the class name and probabilities for each row of four measurements."""

import json
import os

import joblib
import numpy as np

model = None
classes = []


def init():
    global model, classes
    model = joblib.load(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.joblib"))
    classes = os.environ.get("IRIS_CLASSES", "0,1,2").split(",")


def run(raw_data):
    rows = np.array(json.loads(raw_data)["data"], dtype=float)
    probabilities = model.predict_proba(rows)
    return {"class": [classes[i] for i in probabilities.argmax(axis=1)],
            "probabilities": probabilities.round(4).tolist()}
