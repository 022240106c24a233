"""What PyTorch's CUDA build really links, against compat.yaml."""

import json


def test_torch_links_the_tables_cuda_and_cudnn(run_python, expected):
    got = json.loads(run_python(
        "import json, torch; print(json.dumps({'cuda': torch.version.cuda, "
        "'cudnn': torch.backends.cudnn.version(), 'built': torch.backends.cuda.is_built()}))"))
    assert got["built"] is True
    assert got["cuda"] == expected["cuda"]
    v = got["cudnn"]
    assert f"{v // 10000}.{(v % 10000) // 100}" == expected["cudnn"]
