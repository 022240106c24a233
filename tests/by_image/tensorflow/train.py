"""Train a small Keras classifier on the iris data inside the image.

Usage: train.py DATA_DIR MODEL_DIR — writes MODEL_DIR/model.keras and expected.json (rows and the
probabilities this TensorFlow computed for them in-process).
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.keras.utils.set_random_seed(0)
data, out = Path(sys.argv[1]), Path(sys.argv[2])
table = np.loadtxt(data / "iris.csv", delimiter=",", skiprows=1, dtype=np.float32)
X, y = table[:, :4], table[:, 4].astype(np.int64)
norm = tf.keras.layers.Normalization()
norm.adapt(X)
model = tf.keras.Sequential([tf.keras.Input(shape=(4,)), norm, tf.keras.layers.Dense(16, activation="relu"),
                             tf.keras.layers.Dense(3, activation="softmax")])
model.compile(optimizer=tf.keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
model.fit(X, y, epochs=30, batch_size=32, verbose=0)
model.save(out / "model.keras")
rows = X[::15]
(out / "expected.json").write_text(json.dumps({"input": rows.tolist(),
                                               "output": model.predict(rows, verbose=0).tolist()}))
