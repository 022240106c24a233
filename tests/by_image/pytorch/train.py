"""Train a small PyTorch classifier on the iris data and save it as TorchScript.

Usage: train.py DATA_DIR MODEL_DIR — writes MODEL_DIR/model.pt (torch.jit) and expected.json
(rows and the softmax probabilities this torch computed for them in-process).
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

torch.manual_seed(0)
data, out = Path(sys.argv[1]), Path(sys.argv[2])
table = np.loadtxt(data / "iris.csv", delimiter=",", skiprows=1, dtype=np.float32)
X, y = torch.from_numpy(table[:, :4]), torch.from_numpy(table[:, 4]).long()
mean, std = X.mean(0), X.std(0)


class Classifier(torch.nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net((x - self.mean) / self.std), dim=1)


model = Classifier(mean, std)
optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
for _ in range(200):
    optimiser.zero_grad()
    loss = torch.nn.functional.nll_loss(torch.log(model(X)), y)
    loss.backward()
    optimiser.step()
model.eval()
scripted = torch.jit.script(model)
scripted.save(str(out / "model.pt"))
rows = X[::15]
with torch.no_grad():
    probabilities = scripted(rows)
(out / "expected.json").write_text(json.dumps({"input": rows.tolist(), "output": probabilities.tolist()}))
