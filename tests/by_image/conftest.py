"""Smoke-test fixtures shared by every image's test folder (jupyter/docker-stacks' by-image layout).

`builder test` runs pytest on the folders of an image's framework and all its ancestors (so the
sklearn image also passes the minimal image's tests), with:

- ``BUILDER_TEST_IMAGE``: the image reference under test;
- ``BUILDER_TEST_LOGS``: a directory that receives each scoring container's log.

A folder holds ``score.py`` (the entry script), optionally ``train.py`` (run inside the image under
test, so model and framework versions match; it writes the model and ``expected.json`` — the rows
to score and the predictions the framework computed in-process) and its ``test_*.py``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import docker
import pytest
import requests

from builder.smoke import NotHealthy, process_uids, wait_healthy

DATA = Path(__file__).resolve().parent.parent / "data"
# Models are mounted beside the app root: a mount inside the read-only app mount cannot be created.
HEALTH_TIMEOUT = 180.0  # seconds from container start to a healthy GET / (TensorFlow imports slowly)


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    return docker.from_env(timeout=600)


@pytest.fixture(scope="session")
def image() -> str:
    ref = os.environ.get("BUILDER_TEST_IMAGE")
    if not ref:
        pytest.fail("BUILDER_TEST_IMAGE is not set: run these tests through `builder test`")
    return ref


@pytest.fixture(scope="session")
def logs_dir() -> Path:
    path = Path(os.environ.get("BUILDER_TEST_LOGS", "build/logs")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _training_wheels(client: docker.DockerClient, image: str, requirements: Path) -> Path:
    """Download (on the host, through its own pip configuration) the wheels a folder's
    train-requirements.txt pins, for the image's Python and this machine's architecture."""
    py = client.containers.run(image, entrypoint=["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               remove=True, network_disabled=True).decode().strip()
    dest = Path(os.environ.get("BUILDER_TEST_LOGS", "build/logs")).resolve().parent / f"train-wheels-py{py}"
    dest.mkdir(parents=True, exist_ok=True)
    arch = platform.machine()
    platforms = [f"--platform={p}_{arch}" for p in ("manylinux_2_28", "manylinux_2_17", "manylinux2014")]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    f"--python-version={py}", "--implementation=cp", *platforms, "-d", str(dest),
                    "-r", str(requirements)], check=True)
    return dest


def train(client: docker.DockerClient, image: str, folder: Path, out: Path) -> dict:
    """Run ``folder``/train.py inside ``image`` as its default (non-root) user with the data set at
    /data and ``out`` at /model; return the ``expected.json`` it wrote.

    Training-only tools a folder pins in train-requirements.txt are installed (--no-deps, offline)
    into a throw-away directory of the training container, never into the image.
    Raises AssertionError with the container's output when training fails.
    """
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o777)  # the image's non-root user writes the model here
    volumes = {str(folder): {"bind": "/app", "mode": "ro"}, str(DATA): {"bind": "/data", "mode": "ro"},
               str(out): {"bind": "/model", "mode": "rw"}}
    command = "python3 /app/train.py /data /model"
    requirements = folder / "train-requirements.txt"
    if requirements.exists():
        volumes[str(_training_wheels(client, image, requirements))] = {"bind": "/wheels", "mode": "ro"}
        command = ("python3 -m pip install --quiet --no-deps --no-index --find-links /wheels --target /tmp/train-deps "
                   "-r /app/train-requirements.txt && PYTHONPATH=/tmp/train-deps " + command)
    container = client.containers.run(image, entrypoint=["sh", "-c", command], detach=True, network_disabled=True,
                                      volumes=volumes)
    try:
        code = container.wait(timeout=600)["StatusCode"]
        logs = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    assert code == 0, f"train.py failed with exit code {code}:\n{logs}"
    return json.loads((out / "expected.json").read_text())


@dataclass
class Server:
    """A running scoring container: ``url`` is http://127.0.0.1:<port> mapped to the server's port."""

    container: docker.models.containers.Container
    url: str
    seconds_to_healthy: float

    def score(self, payload: object) -> requests.Response:
        return requests.post(f"{self.url}/score", json=payload, timeout=60)


@contextmanager
def serving(client: docker.DockerClient, image: str, app: Path, model: Path | None, logs_dir: Path,
            label: str, expected: dict) -> Iterator[Server]:
    """Start ``image`` as its own (non-root) user serving ``app``/score.py, with ``model`` mounted
    read-only at AZUREML_MODEL_DIR; wait (bounded by HEALTH_TIMEOUT) for ``GET /`` to answer 200.

    The container's log is written to ``logs_dir``/<label>.container.log whatever happens.
    Raises AssertionError when the container exits or does not become healthy in time.
    """
    volumes = {str(app): {"bind": expected["app_root"], "mode": "ro"}}
    if model is not None:
        volumes[str(model)] = {"bind": expected["model_mount"], "mode": "ro"}
    start = time.monotonic()
    container = client.containers.run(image, detach=True, volumes=volumes,
                                      ports={f"{expected['port']}/tcp": ("127.0.0.1", None)},
                                      environment={"AZUREML_ENTRY_SCRIPT": "score.py",
                                                   "AZUREML_MODEL_DIR": expected["model_mount"]})
    try:
        try:
            url = wait_healthy(container, start, HEALTH_TIMEOUT, expected["port"])
        except NotHealthy as exc:
            raise AssertionError(str(exc)) from None
        yield Server(container, url, time.monotonic() - start)
    finally:
        try:
            (logs_dir / f"{label}.container.log").write_bytes(container.logs())
        finally:
            container.remove(force=True)


def assert_close(actual, expected, rtol: float = 1e-5, atol: float = 1e-6, path: str = "output") -> None:
    """Recursive comparison of JSON values; numbers within |a-e| <= atol + rtol*|e| (numpy.isclose's rule)."""
    if isinstance(expected, (list, tuple)):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{path}: {actual!r} != {expected!r}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_close(a, e, rtol, atol, f"{path}[{i}]")
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), f"{path}: {actual!r} != {expected!r}"
        for k in expected:
            assert_close(actual[k], expected[k], rtol, atol, f"{path}.{k}")
    elif isinstance(expected, (int, float)) and not isinstance(expected, bool):
        assert isinstance(actual, (int, float)), f"{path}: {actual!r} is not a number"
        assert abs(actual - expected) <= atol + rtol * abs(expected), f"{path}: {actual} != {expected}"
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


@pytest.fixture(scope="module")
def model_server(request, docker_client, image, logs_dir, tmp_path_factory, expected,
                 record_testsuite_property) -> Iterator[tuple[Server, dict | None]]:
    """The scoring server for the calling test module's folder: trains first when the folder has a
    train.py. Yields ``(server, expected)`` where expected is train.py's expected.json or None."""
    folder = Path(request.module.__file__).resolve().parent
    predictions = None
    model = None
    if (folder / "train.py").exists():
        model = tmp_path_factory.mktemp(f"model-{folder.name}")
        predictions = train(docker_client, image, folder, model)
    with serving(docker_client, image, folder, model, logs_dir, folder.name, expected) as server:
        record_testsuite_property("seconds_to_healthy", f"{server.seconds_to_healthy:.3f}")
        yield server, predictions
    if model is not None:
        shutil.rmtree(model, ignore_errors=True)


@pytest.fixture(name="assert_close", scope="session")
def assert_close_fixture():
    """:func:`assert_close` for the test modules (they are not importable as a package)."""
    return assert_close


@pytest.fixture(name="processes_uids", scope="session")
def processes_uids_fixture():
    """:func:`builder.smoke.process_uids` for the test modules."""
    return process_uids


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a GPU, nvidia-smi and the NVIDIA container runtime")


@pytest.fixture(scope="session")
def expected() -> dict:
    """What `builder test` says the image should be (BUILDER_TEST_SPEC): name, framework, version,
    device, python, cuda, cudnn and the nvidia-* wheels compat.yaml pins."""
    raw = os.environ.get("BUILDER_TEST_SPEC")
    if not raw:
        pytest.fail("BUILDER_TEST_SPEC is not set: run these tests through `builder test`")
    return json.loads(raw)


@pytest.fixture(scope="session")
def run_python(docker_client, image):
    """``run_python(code) -> stdout``: run Python code in a throw-away container of the image (no
    network, the image's own user). Raises docker.errors.ContainerError when the code fails."""
    def run(code: str) -> str:
        return docker_client.containers.run(image, entrypoint=["python3", "-c", code], remove=True,
                                            network_disabled=True).decode().strip()
    return run
