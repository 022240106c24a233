"""Entry script for PyTorch images: a TorchScript module on the CPU."""

import json
import os

import torch

model = None


def init():
    global model
    model = torch.jit.load(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.pt"), map_location="cpu")
    model.eval()


def run(raw_data):
    rows = torch.tensor(json.loads(raw_data)["data"], dtype=torch.float32)
    with torch.no_grad():
        return model(rows).tolist()
