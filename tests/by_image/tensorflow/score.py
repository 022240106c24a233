"""Entry script for TensorFlow images: a Keras model on the CPU."""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

model = None


def init():
    global model
    model = tf.keras.models.load_model(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.keras"))


def run(raw_data):
    rows = np.array(json.loads(raw_data)["data"], dtype=np.float32)
    return model.predict(rows, verbose=0).tolist()
