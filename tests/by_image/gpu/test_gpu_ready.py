"""Every GPU image is ready for a GPU without one (issue 36): each CUDA library its framework loads
resolves in the image, but the driver's (libcuda.so.1, libnvidia-ml.so.1), which the NVIDIA
Container Toolkit mounts at run time.

builder.run.gpu_ready runs inside a container of the image (its source through ``python3 -c``): it
drives the framework's GPU code path under the loader's LD_DEBUG=files log, resolves the DT_NEEDED
closure of every CUDA library with the image's own ``ldd`` and loader path, opens each wheel
library by its soname in a fresh process, and reads the versions of the CUDA runtime, cuDNN and
NCCL it resolves. What it read is recorded as ``gpu.*`` properties of the JUnit report, which the
image's signed test attestation carries (builder.run.steps.sign).
"""

import json
import re
from pathlib import Path

import pytest

from builder.run import gpu_ready

SOURCE = Path(gpu_ready.__file__).read_text()


@pytest.fixture(scope="module")
def ready(run_python, expected) -> dict:
    """:func:`builder.run.gpu_ready.report` of the image's framework, read inside the image."""
    code = f"{SOURCE}\nprint('GPU_REPORT ' + json.dumps(report({expected['framework']!r}, {SOURCE!r})))\n"
    found = [line for line in run_python(code).splitlines() if line.startswith("GPU_REPORT ")]
    assert found, "the probe printed no report"
    return json.loads(found[-1][len("GPU_REPORT "):])


def _shown(ready: dict) -> str:
    return "\n".join(line for line in ready.get("messages", "").splitlines()[-40:])


def test_the_frameworks_gpu_path_misses_only_the_drivers_libraries(ready):
    assert gpu_ready.not_the_drivers(ready["missing"]) == [], (
        f"the loader found no {gpu_ready.not_the_drivers(ready['missing'])} on {ready['framework']}'s GPU path:\n"
        f"{_shown(ready)}")
    said = gpu_ready.missing_in_messages(ready.get("messages", "") + ready.get("error", ""))
    assert gpu_ready.not_the_drivers(said) == [], f"the framework could not open {said}:\n{_shown(ready)}"
    if "error" in ready:  # the framework may fail, but only for want of a driver
        assert gpu_ready.no_driver(ready["error"]), ready["error"]


def test_onnxruntime_s_cuda_provider_fails_only_for_want_of_libcuda(ready, expected):
    # the issue's own symptom: the provider's load error must name the driver's library, nothing else
    if expected["framework"] != "onnxruntime":
        pytest.skip("ONNX Runtime only")
    errors = re.findall(r"Failed to load library \S+providers_cuda\.so with error: ([^:]+):", ready["messages"])
    assert errors and set(errors) <= gpu_ready.DRIVER_LIBRARIES, _shown(ready)


def test_every_cuda_library_resolves_its_dt_needed_closure_in_the_image(ready):
    assert ready["roots"] > 0
    assert gpu_ready.unexpected(ready["closure"]) == {}, json.dumps(gpu_ready.unexpected(ready["closure"]), indent=1)


def test_every_wheel_library_opens_by_its_soname_in_any_process(ready):
    # what `python -c` or a user's score.py gets: the loader's own path, no framework's RPATH
    bad = {name: error for name, error in ready["by_soname"].items()
           if gpu_ready.not_the_drivers(gpu_ready.missing_in_messages(error) or [name])}
    assert bad == {}, json.dumps(bad, indent=1)


def _wheel(expected: dict, pattern: str) -> str | None:
    return next((v for n, v in expected["wheels"].items() if re.fullmatch(pattern, n)), None)


def test_the_libraries_it_resolves_are_the_tables_and_the_labels(ready, expected, labels, record_testsuite_property):
    versions = ready["versions"]
    cuda = versions.get("cudart") or ready.get("cuda_built")  # XGBoost links the CUDA runtime statically
    assert cuda, f"no CUDA runtime resolves and the framework reports none: {ready}"
    assert cuda.split(".")[:len(expected["cuda"].split("."))] == expected["cuda"].split("."), (cuda, expected["cuda"])
    if expected["cudnn"]:
        assert ".".join(versions.get("cudnn", "").split(".")[:2]) == expected["cudnn"], versions
    nccl = _wheel(expected, r"nvidia-nccl(-cu\d+)?")
    if nccl:
        assert versions.get("nccl") == ".".join(nccl.split(".")[:3]), (versions, nccl)
    by_suffix = {k.rsplit(".", 1)[-1]: v for k, v in labels.items() if not k.startswith("org.opencontainers")}
    assert by_suffix.get("nccl") == (".".join(nccl.split(".")[:3]) if nccl else None)
    assert by_suffix.get("cuda-driver-min") == expected["driver_min"]
    # what the attestation says of the image (builder.run.smoke reads these back, validated)
    for key, value in (("cuda", cuda), ("cudnn", versions.get("cudnn")), ("nccl", versions.get("nccl")),
                       ("arch", ready.get("arch_flags")), ("driver-min", expected["driver_min"]),
                       ("verified-on", "cpu")):
        if value:
            record_testsuite_property(f"gpu.{key}", value)


@pytest.fixture(scope="module")
def labels(docker_client, image) -> dict[str, str]:
    return docker_client.images.get(image).labels or {}
