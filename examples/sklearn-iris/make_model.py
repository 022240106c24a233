"""Re-create model/model.joblib inside the scikit-learn image it is served from (versions match):

    docker run --rm -u 0 -v "$PWD/examples/sklearn-iris:/ex" -v "$PWD/tests/data:/data:ro" \
        --entrypoint python3 127.0.0.1:5000/sklearn-1.9-debian12-py311-cpu-inference:latest /ex/make_model.py
"""

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

table = np.loadtxt("/data/iris.csv", delimiter=",", skiprows=1)
model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(table[:, :4], table[:, 4].astype(int))
joblib.dump(model, "/ex/model/model.joblib")
