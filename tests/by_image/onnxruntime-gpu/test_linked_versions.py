"""ONNX Runtime's GPU build: the CUDA execution provider is compiled in."""


def test_cuda_execution_provider_is_available(run_python, expected):
    out = run_python("import onnxruntime as ort; print(ort.get_device()); print(','.join(ort.get_available_providers()))")
    device, providers = out.splitlines()[-2:]
    assert device == "GPU"
    assert "CUDAExecutionProvider" in providers.split(",")
