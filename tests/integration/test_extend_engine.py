"""Extending prebuilt images on the real Engine: the examples/ recipes, a private base registry with
basic auth, `builder serve`, and runtime extra requirements (AZUREML_EXTRA_REQUIREMENTS_TXT).

Needs the scikit-learn image the main job builds; the session fixture runs `builder test` for it
(from the layer cache when it was built already)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
import requests
from repo import ROOT

from builder.matrix.platform import DEFAULT
from builder import engine, matrix
from builder.engine import bases
from builder.generate import base_resolver
from builder.extend.deploy import NotHealthy, wait_healthy
from builder.run.smoke import process_uids

pytestmark = pytest.mark.engine

BUILDER = [sys.executable, "-m", "builder.cli"]
SKLEARN = "sklearn-1.9-debian12-py311-cpu-inference"
RUNTIME = matrix.load(ROOT / "matrix.yaml").data.runtime
PORT = RUNTIME.port  # the server's port inside every image
EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if p.is_dir())


def builder(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*BUILDER, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=1800, **kw)


@pytest.fixture(scope="session")
def prebuilt(docker_client, tmp_path_factory):
    """The minimal and scikit-learn images, tested and tagged latest in the local registry's namespace."""
    result = builder("test", "--platform", "linux/amd64", "--select", SKLEARN, "--build-dir", str(tmp_path_factory.mktemp("prebuilt")))
    assert result.returncode == 0, result.stdout + result.stderr
    return f"{engine.LOCAL_REGISTRY}/{SKLEARN}:latest"


def scoring(client, image: str, env: dict | None = None, volumes: dict | None = None, timeout: float = 120):
    start = time.monotonic()
    container = client.containers.run(image, detach=True, ports={f"{PORT}/tcp": ("127.0.0.1", None)},
                                      environment=env or {}, volumes=volumes or {})
    return container, start


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_example_builds_and_scores_as_non_root(example, prebuilt, docker_client):
    config = next(p for p in example.iterdir() if p.name in ("extend.yml", "inference-config.json"))
    tag = f"builder-example/{example.name}:test"
    result = builder("extend", str(config), "--build", "--tag", tag, "--out", f"build/extend/{example.name}")
    assert result.returncode == 0, result.stdout + result.stderr
    container, start = scoring(docker_client, tag)
    try:
        url = wait_healthy(container, start, 120, PORT)
        r = requests.post(f"{url}/score", data=(example / "request.json").read_text(),
                          headers={"Content-Type": "application/json"}, timeout=30)
        assert r.status_code == 200, r.text
        expected = json.loads((example / "expected.json").read_text())
        assert {k: r.json()[k] for k in expected} == expected
        assert process_uids(container) and 0 not in process_uids(container)
        if example.name == "sklearn-iris":  # the apt and pip packages the config adds
            assert container.exec_run(["curl", "-fsS", f"http://127.0.0.1:{PORT}/"]).exit_code == 0
            assert container.exec_run(["python3", "-c", "import tabulate"]).exit_code == 0
    finally:
        container.remove(force=True)
        docker_client.images.remove(tag, force=True)


def test_a_base_without_python_is_refused_and_nothing_is_built(docker_client, tmp_path):
    # The matrix's Debian 12 base, made the way a run makes it (pulled, or bootstrapped when no
    # registry answers): neither has python3. Whatever ran before this test.
    m = matrix.load(ROOT / "matrix.yaml")
    base = bases.ensure(docker_client, "debian12", m.data.bases["debian12"], "auto", tmp_path / "bases",
                        pins=base_resolver.pins_of(ROOT, "auto")("debian12", DEFAULT)).ref
    (tmp_path / "score.py").write_text("def init():\n    pass\n\n\ndef run(raw):\n    return raw\n")
    (tmp_path / "extend.yml").write_text(f"baseImage: {base}\nentryScript: score.py\n")
    repository = f"builder-test/refused-{uuid.uuid4().hex[:8]}"  # the image it would have built
    # the probe's containers: those of the base image (not the rest of the Engine's)
    base_id = docker_client.images.get(base).id
    probes = lambda: {c.id for c in docker_client.containers.list(all=True) if c.attrs.get("Image") == base_id}
    containers = probes()
    result = builder("extend", str(tmp_path / "extend.yml"), "--build", "--tag", f"{repository}:latest",
                     "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"baseImage: {base} has no python3; the inference server needs Python >= 3.9" in result.stderr
    assert not (tmp_path / "out").exists()
    assert docker_client.images.list(name=repository) == []
    assert probes() <= containers, "the probe container was left behind"


@pytest.fixture
def private_registry(tmp_path, docker_client, prebuilt, start_registry):
    """A second registry on 127.0.0.1:5002 that wants basic auth (htpasswd, bcrypt), holding the
    scikit-learn image as private/sklearn:1.9."""
    user, password = "builder", "pr1vate-Pa55-9d3e"
    proc = start_registry(tmp_path / "registry", 5002, {user: password})
    try:
        assert requests.get("http://127.0.0.1:5002/v2/", timeout=5).status_code == 401
        ref = "127.0.0.1:5002/private/sklearn"
        docker_client.images.get(prebuilt).tag(ref, "1.9")
        auth = {"username": user, "password": password}
        for chunk in docker_client.api.push(ref, "1.9", stream=True, decode=True, auth_config=auth):
            assert "error" not in chunk, chunk
        docker_client.images.remove(f"{ref}:1.9")  # the extension must pull it, with the credentials
        yield f"{ref}:1.9", user, password
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_private_base_is_pulled_with_credentials_that_leave_no_trace(private_registry, docker_client, tmp_path):
    ref, user, password = private_registry
    app = tmp_path / "app"
    app.mkdir()
    (app / "score.py").write_text("def init():\n    pass\n\n\ndef run(raw):\n    return {'ok': True}\n")
    (app / "inference-config.json").write_text(json.dumps({
        "entryScript": "score.py", "runtime": "python", "baseImage": ref,
        "baseImageRegistry": {"address": "127.0.0.1:5002", "username": user, "password": "${PRIVATE_REGISTRY_PASSWORD}"},
    }))
    tag = "builder-test/private-base:latest"
    out = tmp_path / "out"
    result = builder("extend", str(app / "inference-config.json"), "--build", "--tag", tag, "--out", str(out),
                     env={"PRIVATE_REGISTRY_PASSWORD": password})
    assert result.returncode == 0, result.stdout + result.stderr
    try:
        traces = [result.stdout, result.stderr, str(docker_client.api.history(tag)), json.dumps(docker_client.images.get(tag).attrs)]
        traces += [p.read_text(errors="replace") for p in out.rglob("*") if p.is_file()]
        traces.append((ROOT / "build" / "logs" / "extend-app.build.log").read_text())
        assert not [t for t in traces if password in t]
        # without the credentials the pull is refused: the registry really is private
        docker_client.images.remove(ref, force=True)
        denied = builder("extend", str(app / "inference-config.json"), "--build", "--out", str(tmp_path / "out2"),
                         env={"PRIVATE_REGISTRY_PASSWORD": "wrong"})
        assert denied.returncode == 1 and f"cannot pull {ref}" in denied.stderr  # an Engine failure (issue 32)
    finally:
        docker_client.images.remove(tag, force=True)


def test_serve_prints_the_uris_scores_and_removes_the_container_on_ctrl_c(prebuilt, docker_client):
    example = ROOT / "examples" / "sklearn-iris"
    proc = subprocess.Popen([*BUILDER, "serve", SKLEARN, "--model", str(example / "model" / "model.joblib"),
                             "--entry-script", str(example / "src" / "score.py"), "--port", "8891"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            lines.append(line.strip())
            if line.startswith("swagger URI:"):
                break
        assert "scoring URI: http://127.0.0.1:8891/score" in lines
        assert "swagger URI: http://127.0.0.1:8891/swagger.json" in lines
        r = requests.post("http://127.0.0.1:8891/score", data=(example / "request.json").read_text(), timeout=30)
        assert r.status_code == 200 and r.json()["class"] == ["0", "1", "2"]  # IRIS_CLASSES is not set here
        assert requests.get("http://127.0.0.1:8891/swagger.json", timeout=10).status_code == 200
        running = [c for c in docker_client.containers.list()  # the one publishing host port 8891: serve's
                   if any(b.get("HostPort") == "8891" for bs in (c.ports or {}).values() for b in bs or [])]
        assert len(running) == 1
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
        assert not [c for c in docker_client.containers.list(all=True) if c.id == running[0].id]
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.fixture
def with_extras(tmp_path, make_wheel, docker_client, prebuilt):
    """``with_extras(requirements_file, requirement=None)`` starts the scikit-learn image serving an
    app whose score.py imports builder_demo, with AZUREML_EXTRA_REQUIREMENTS_TXT set; an offline
    wheelhouse holding builder_demo 2.5 stands in for the package index (pip reads PIP_* from the
    environment). ``requirement`` is written to the file when given. Returns (container, start)."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "score.py").write_text(
        "import builder_demo\n\n\ndef init():\n    pass\n\n\ndef run(raw):\n"
        "    return {'demo': builder_demo.VERSION, 'file': builder_demo.__file__}\n")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, version="2.5")
    started = []

    def start(requirements_file: str, requirement: str | None = None):
        if requirement is not None:
            (app / requirements_file).write_text(requirement + "\n")
        container, t0 = scoring(docker_client, prebuilt, env={
            "AZUREML_EXTRA_REQUIREMENTS_TXT": requirements_file, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/wheels"},
            volumes={str(app): {"bind": RUNTIME.app_root, "mode": "ro"}, str(wheels): {"bind": "/wheels", "mode": "ro"}})
        started.append(container)
        return container, t0

    yield start
    for container in started:
        container.remove(force=True)


def test_runtime_extra_requirements_install_as_the_user_before_the_server_starts(with_extras):
    container, start = with_extras("extra-requirements.txt", "builder_demo==2.5")
    url = wait_healthy(container, start, 120, PORT)
    answer = requests.post(f"{url}/score", json={}, timeout=30).json()
    assert answer["demo"] == "2.5"
    # installed by the non-root user into its own directory, first on the server's import path
    assert answer["file"].startswith("/home/dockeruser/.azureml-extra-packages/"), answer
    assert 0 not in process_uids(container)


def test_missing_extra_requirements_file_stops_the_container_with_a_clear_message(with_extras):
    container, start = with_extras("missing.txt")
    with pytest.raises(NotHealthy, match="exited with code 3"):
        wait_healthy(container, start, 60, PORT)
    assert (f"AZUREML_EXTRA_REQUIREMENTS_TXT names {RUNTIME.app_root}/missing.txt, which does not exist; "
            "not starting the server") in container.logs().decode()


def test_failed_extra_requirements_install_stops_the_container(with_extras):
    container, start = with_extras("extra-requirements.txt", "builder_demo==9.9")
    with pytest.raises(NotHealthy, match="exited with code 3"):
        wait_healthy(container, start, 60, PORT)
    assert f"installing the extra requirements in {RUNTIME.app_root}/extra-requirements.txt failed" in \
        container.logs().decode()
