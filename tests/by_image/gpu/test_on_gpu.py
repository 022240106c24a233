"""Computation on a real GPU. Marked `gpu`: these run only where nvidia-smi and the NVIDIA container
runtime exist, and are skipped elsewhere with that reason (the CPU-fallback smoke tests and the
linked-version checks run everywhere)."""

import shutil

import docker
import pytest

pytestmark = pytest.mark.gpu

# One probe per framework: it must fail unless the computation really ran on a CUDA device.
PROBES = {
    "pytorch": "import torch; assert torch.cuda.is_available(); x = torch.ones(64, 64, device='cuda'); "
               "print(float((x @ x).sum()))",
    "tensorflow": "import tensorflow as tf; gpus = tf.config.list_physical_devices('GPU'); assert gpus, gpus; "
                  "x = tf.ones((64, 64)); print(float(tf.reduce_sum(tf.matmul(x, x))))",
    # a 64x64 MatMul model (ONNX opset 13), serialized with the onnx package
    "onnxruntime": "import base64, numpy as np, onnxruntime as ort; "
                   "m = base64.b64decode('CAg6QAoRCgF4CgF4EgF5IgZNYXRNdWwSAWdaEwoBeBIOCgwIARIICgIIQAoCCEBiEwoBeRIOCgwIARIICgIIQAoCCEBCBAoAEA0='); "
                   "s = ort.InferenceSession(m, providers=['CUDAExecutionProvider']); "
                   "assert s.get_providers()[0] == 'CUDAExecutionProvider', s.get_providers(); "
                   "print(float(s.run(None, {'x': np.ones((64, 64), np.float32)})[0].sum()))",
    # trained and predicting on the GPU, it must agree with the same model on the CPU
    "xgboost": "import json, numpy as np, xgboost as xgb; rng = np.random.default_rng(0); X = rng.random((256, 4)); "
               "y = (X[:, 0] > 0.5).astype(int); params = {'tree_method': 'hist', 'seed': 0}; "
               "g = xgb.train({**params, 'device': 'cuda'}, xgb.DMatrix(X, label=y), 8); "
               "assert json.loads(g.save_config())['learner']['generic_param']['device'].startswith('cuda'); "
               "c = xgb.train({**params, 'device': 'cpu'}, xgb.DMatrix(X, label=y), 8); "
               "pg, pc = g.inplace_predict(X), c.inplace_predict(X); "
               "assert np.allclose(pg, pc, atol=1e-3) and ((pg > 0.5) == y).mean() > 0.9, (pg[:4], pc[:4]); "
               "print(float(np.ones((64, 64)).sum() * 64))",
}


@pytest.fixture(scope="module")
def gpu_runtime(docker_client):
    runtimes = docker_client.info().get("Runtimes", {})
    if shutil.which("nvidia-smi") is None or "nvidia" not in runtimes:
        pytest.skip("needs a GPU: nvidia-smi and the NVIDIA container runtime are not on this machine")


def test_framework_computes_on_the_gpu(gpu_runtime, docker_client, image, expected, record_testsuite_property):
    out = docker_client.containers.run(
        image, entrypoint=["python3", "-c", PROBES[expected["framework"]]], remove=True,
        device_requests=[docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])])
    assert float(out.decode().strip().splitlines()[-1]) == 262144.0
    # the image is then GPU-verified, not only GPU-ready (builder.run.smoke.gpu_properties)
    record_testsuite_property("gpu.verified-on", "gpu")
