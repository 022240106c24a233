"""Every GPU image: its name, its labels and the nvidia-* wheels really installed in it agree with
the compatibility table (compat.yaml) it was built from."""

import json


def test_name_and_labels_carry_the_tables_cuda(docker_client, image, expected):
    assert expected["name"].endswith(f"-cuda{expected['cuda']}-gpu-inference")
    labels = docker_client.images.get(image).labels
    assert labels["org.opencontainers.image.title"] == expected["name"]
    by_suffix = {k.rsplit(".", 1)[-1]: v for k, v in labels.items() if not k.startswith("org.opencontainers")}
    assert by_suffix["device"] == "gpu"
    assert by_suffix["cuda"] == expected["cuda"]
    assert by_suffix.get("cudnn") == expected["cudnn"]


def test_installed_nvidia_wheels_are_the_tables(run_python, expected):
    assert expected["wheels"], "compat.yaml pins no nvidia-* wheel for this GPU image"
    code = ("import importlib.metadata as m, json; "
            f"print(json.dumps({{n: m.version(n) for n in {sorted(expected['wheels'])!r}}}))")
    assert json.loads(run_python(code)) == expected["wheels"]
