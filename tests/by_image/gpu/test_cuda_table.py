"""Every GPU image: the CUDA and cuDNN its name, its labels and the spec it was built from
(BUILDER_TEST_SPEC, from matrix.yaml and compat.yaml) say are the ones of the nvidia-* wheels
really installed in it, and those wheels are exactly the compatibility table's.

The image's own wheels are the independent source of truth here: CUDA is read from
nvidia-cuda-runtime(-cuXX) (major.minor), else from the ``-cuXX`` suffix NVIDIA's wheels carry
(XGBoost pulls only nvidia-nccl-cu12: CUDA "12"); cuDNN from nvidia-cudnn-cuXX (major.minor). An
image whose CUDA comes from an nvidia/cuda base image (no nvidia-* wheels) is read from that
image's CUDA_VERSION variable. So a wrong entry in compat.yaml, a wrong name or label, or an image
that installed other wheels fails here."""

import json
import re

import pytest

# Every installed distribution whose normalized name starts with nvidia-: {name: version}.
_INSTALLED_NVIDIA = (
    "import importlib.metadata as m, json, re; "
    "print(json.dumps({re.sub(r'[-_.]+', '-', d.metadata['Name']).lower(): d.version "
    "for d in m.distributions() if re.sub(r'[-_.]+', '-', d.metadata['Name']).lower().startswith('nvidia-')}))")


def _major_minor(version: str) -> str:
    return ".".join(re.match(r"\d+(\.\d+)?", version).group(0).split(".")[:2])


def cuda_and_cudnn(wheels: dict[str, str], env: dict[str, str]) -> tuple[str, str | None]:
    """CUDA and cuDNN (major.minor, cuDNN None when absent) of an image holding ``wheels``, with ``env``
    its configured environment."""
    runtime = [v for n, v in wheels.items() if re.fullmatch(r"nvidia-cuda-runtime(-cu\d+)?", n)]
    cudnn = [v for n, v in wheels.items() if re.fullmatch(r"nvidia-cudnn-cu\d+", n)]
    suffixes = sorted({int(m.group(1)) for n in wheels if (m := re.fullmatch(r"nvidia-.*-cu(\d+)", n))})
    if runtime:
        cuda = _major_minor(runtime[0])
    elif suffixes:
        cuda = str(suffixes[-1])
    elif "CUDA_VERSION" in env:  # an nvidia/cuda base image
        cuda = _major_minor(env["CUDA_VERSION"])
    else:
        pytest.fail(f"no CUDA in this GPU image: no nvidia-cuda-runtime wheel, no -cuXX wheel, no CUDA_VERSION "
                    f"(nvidia-* wheels: {sorted(wheels) or 'none'})")
    return cuda, _major_minor(cudnn[0]) if cudnn else None


@pytest.fixture(scope="module")
def installed(run_python) -> dict[str, str]:
    """The nvidia-* distributions installed in the image: ``{normalized name: version}``."""
    return json.loads(run_python(_INSTALLED_NVIDIA))


@pytest.fixture(scope="module")
def labels(docker_client, image) -> dict[str, str]:
    return docker_client.images.get(image).labels or {}


@pytest.fixture(scope="module")
def env(docker_client, image) -> dict[str, str]:
    return dict(e.split("=", 1) for e in docker_client.images.get(image).attrs["Config"].get("Env") or [])


def test_the_derivation_reads_nvidias_wheel_names():
    # the rule itself, on the table's own shapes (so a broken rule cannot pass with a broken table)
    assert cuda_and_cudnn({"nvidia-cuda-runtime": "13.5.37", "nvidia-cudnn-cu13": "9.28.1.4"}, {}) == ("13.5", "9.28")
    assert cuda_and_cudnn({"nvidia-cuda-runtime-cu12": "12.9.79", "nvidia-nccl-cu12": "2.32.3"}, {}) == ("12.9", None)
    assert cuda_and_cudnn({"nvidia-nccl-cu12": "2.32.3"}, {}) == ("12", None)
    assert cuda_and_cudnn({}, {"CUDA_VERSION": "12.4.1"}) == ("12.4", None)


def test_spec_name_and_labels_carry_the_installed_cuda_and_cudnn(installed, labels, env, image, expected):
    cuda, cudnn = cuda_and_cudnn(installed, env)
    assert (expected["cuda"], expected["cudnn"]) == (cuda, cudnn), (
        f"the spec says CUDA {expected['cuda']} / cuDNN {expected['cudnn']}; the image's wheels are "
        f"CUDA {cuda} / cuDNN {cudnn} ({installed})")
    assert expected["name"].endswith(f"-cuda{cuda}-gpu-inference"), expected["name"]
    assert labels["org.opencontainers.image.title"] == expected["name"]
    by_suffix = {k.rsplit(".", 1)[-1]: v for k, v in labels.items() if not k.startswith("org.opencontainers")}
    assert by_suffix["device"] == "gpu"
    assert by_suffix["cuda"] == cuda
    assert by_suffix.get("cudnn") == cudnn


def test_installed_nvidia_wheels_are_the_tables(installed, expected):
    # every nvidia-* wheel in the image, not only those the table names: none missing, none extra
    assert installed == expected["wheels"]
