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
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import docker
import pytest
import requests

from builder.extend import deploy
from builder.matrix.platform import Platform
from builder.run.smoke import process_uids

DATA = Path(__file__).resolve().parent.parent / "data"
# Models are mounted beside the app root: a mount inside the read-only app mount cannot be created.


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
    train-requirements.txt pins, for the image's Python and architecture."""
    py = client.containers.run(image, entrypoint=["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               remove=True, network_disabled=True).decode().strip()
    # the image's own architecture (an arm64 image runs under QEMU on an amd64 machine)
    attrs = client.images.get(image).attrs
    arch = Platform.parse(f"{attrs['Os']}/{attrs['Architecture']}").machine
    dest = Path(os.environ.get("BUILDER_TEST_LOGS", "build/logs")).resolve().parent / f"train-wheels-py{py}-{arch}"
    dest.mkdir(parents=True, exist_ok=True)
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
    slowdown: int = 1  # the spec's: waits are this many times longer under emulation

    def score(self, payload: object) -> requests.Response:
        return requests.post(f"{self.url}/score", json=payload, timeout=60 * self.slowdown)


@pytest.fixture(scope="session")
def trained(request, docker_client, image, tmp_path_factory) -> dict[str, tuple[Path | None, dict | None]]:
    """Every test folder of this run that has a score.py: ``{folder name: (model dir, predictions)}``,
    trained first (inside the image) where the folder has a train.py."""
    folders = sorted({Path(str(item.fspath)).parent for item in request.session.items
                      if (Path(str(item.fspath)).parent / "score.py").is_file()})
    out: dict[str, tuple[Path | None, dict | None]] = {}
    for folder in folders:
        model = predictions = None
        if (folder / "train.py").exists():
            model = tmp_path_factory.mktemp(f"model-{folder.name}")
            predictions = train(docker_client, image, folder, model)
        out[folder.name] = (model, predictions)
    return out


@pytest.fixture(scope="session")
def docker_compose_file(trained, image, expected, logs_dir, request) -> str:
    """pytest-docker's compose file: one scoring service per test folder (builder.extend.deploy's
    compose_service, the one `builder serve --compose-file` writes), written next to the logs."""
    folders = {Path(str(item.fspath)).parent.name: Path(str(item.fspath)).parent for item in request.session.items}
    services = {name: deploy.compose_service(image, folders[name], model, port=expected["port"],
                                             app_root=expected["app_root"], uid=expected["uid"],
                                             model_mount=expected["model_mount"])
                for name, (model, _) in trained.items()}
    for service in services.values():  # a folder without a model still names the mount
        service["environment"]["AZUREML_MODEL_DIR"] = expected["model_mount"]
    path = logs_dir / "compose.yaml"
    path.write_text(deploy.compose_file(services))
    return str(path)


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    return f"smoke-{os.getpid()}"


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    # Not `up --wait`: a server whose init() raises exits, and the test must see its log.
    return ["up -d"]


def _service_container(client: docker.DockerClient, project: str, service: str):
    found = client.containers.list(all=True, filters={"label": [f"com.docker.compose.project={project}",
                                                                f"com.docker.compose.service={service}"]})
    assert found, f"compose started no container for {service}"
    return found[0]


@pytest.fixture(scope="module")
def model_server(request, docker_services, docker_client, docker_compose_project_name, trained, expected, logs_dir,
                 record_testsuite_property) -> Iterator[tuple[Server, dict | None]]:
    """The scoring server of the calling test module's folder (a service pytest-docker started).
    Waits (bounded by the spec's ``health_timeout``) for ``GET /`` to answer 200; fails at once, with the log, if
    the server exits. Yields ``(server, predictions)``: train.py's expected.json, or None. The
    container's log goes to ``logs_dir``/<folder>.container.log whatever happens."""
    service = Path(request.module.__file__).resolve().parent.name
    container = _service_container(docker_client, docker_compose_project_name, service)
    try:
        url = None

        def healthy() -> bool:
            nonlocal url
            container.reload()
            if container.status in ("exited", "dead"):
                raise AssertionError(f"container exited with code {container.attrs['State']['ExitCode']} before it "
                                     f"was healthy:\n{container.logs().decode(errors='replace')[-4000:]}")
            url = url or f"http://127.0.0.1:{docker_services.port_for(service, expected['port'])}"
            try:
                return requests.get(f"{url}/", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        docker_services.wait_until_responsive(check=healthy, timeout=expected["health_timeout"], pause=0.1)
        started = datetime.fromisoformat(container.attrs["State"]["StartedAt"][:26].rstrip("Z") + "+00:00")
        seconds = (datetime.now(timezone.utc) - started).total_seconds()
        record_testsuite_property("seconds_to_healthy", f"{seconds:.3f}")
        yield Server(container, url, seconds, expected["slowdown"]), trained[service][1]
    finally:
        (logs_dir / f"{service}.container.log").write_bytes(container.logs())


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


@pytest.fixture(name="assert_close", scope="session")
def assert_close_fixture():
    """:func:`assert_close` for the test modules (they are not importable as a package)."""
    return assert_close


@pytest.fixture(name="processes_uids", scope="session")
def processes_uids_fixture():
    """:func:`builder.run.smoke.process_uids` for the test modules."""
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
def run_python(docker_client, image, expected):
    """``run_python(code) -> stdout``: run Python code in a throw-away container of the image (no
    network, the image's own user). Raises docker.errors.ContainerError when the code fails."""
    def run(code: str) -> str:
        # create, start, wait, remove in a finally: an interrupted run (Ctrl-C) leaves no container
        container = docker_client.containers.create(image, entrypoint=["python3", "-c", code], network_disabled=True)
        try:
            container.start()
            status = container.wait(timeout=300 * expected["slowdown"])["StatusCode"]
            out = container.logs(stdout=True, stderr=False).decode()
            if status != 0:
                raise docker.errors.ContainerError(container, status, ["python3", "-c", code], image,
                                                   container.logs(stdout=False, stderr=True))
            return out.strip()
        finally:
            container.remove(force=True)
    return run
