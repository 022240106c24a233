"""Entry script for scikit-learn images, with inference-schema decorators so the server publishes
a real input/output schema in /swagger.json."""

import os

import joblib
import numpy as np
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.schema_decorators import input_schema, output_schema

model = None


def init():
    global model
    model = joblib.load(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.joblib"))


@input_schema("data", NumpyParameterType(np.array([[5.1, 3.5, 1.4, 0.2]])))
@output_schema(NumpyParameterType(np.array([[0.98, 0.01, 0.01]])))
def run(data):
    return model.predict_proba(data).tolist()
