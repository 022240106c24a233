"""Fixtures shared by the engine-backed tests."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import time
import uuid
import zipfile
from pathlib import Path

import docker
import pytest
from repo import ROOT
from run_builder import SUBSET, builder, make_key_pair

from builder import engine
from builder.engine import lines

#: Registry namespaces (and throw-away registries) only the tests push to; their local tags are
#: removed when the session ends, so test runs do not pile images up on the machine's disk.
TEST_NAMESPACES = ("127.0.0.1:5000/sigint-", "127.0.0.1:5000/prune-test/", "127.0.0.1:5000/faultcase/", "127.0.0.1:5000/engine-fault/",
                   "127.0.0.1:5000/split-", "127.0.0.1:5000/size-gate/", "127.0.0.1:5991/", "127.0.0.1:5992/", "127.0.0.1:5993/")


@pytest.fixture(scope="session", autouse=True)
def remove_test_namespaces():
    """After the session: untag every local image in :data:`TEST_NAMESPACES` (layers other tags use stay)."""
    yield
    client = engine.client(ROOT / "build")
    for image in client.images.list():
        for t in image.tags:
            if t.startswith(TEST_NAMESPACES):
                try:
                    client.api.remove_image(t, noprune=False)
                except docker.errors.APIError as exc:  # in use by a container: left, and said
                    print(f"left {t}: {exc}")



@pytest.fixture(scope="session")
def docker_client():
    """A docker-py client; starts a Docker Engine when none answers (see builder.engine). With
    ``BUILDER_ENGINE`` set (``make test-other-engine``), the Engine that answers must be of that line:
    one already running is used as it is, so the tests would otherwise pass on the wrong Engine."""
    client = engine.client(ROOT / "build")
    line = lines.chosen(os.environ)
    version = client.version().get("Version", "")
    assert line is None or lines.major_minor(version) == lines.major_minor(line.name + "."), (
        f"{lines.ENV}={line.name if line else ''} but Engine {version} answers: stop its dockerd first")
    return client


@pytest.fixture(scope="session")
def registry(docker_client) -> str:
    """The local registry on 127.0.0.1:5000 (started when needed), with skopeo to read it back."""
    if shutil.which("skopeo") is None:
        engine.apt_install("skopeo")
    return engine.ensure_registry(ROOT / "build")


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory) -> dict[str, Path | str]:
    """This session's cosign key pair (:func:`make_key_pair`), its password made for the session
    (the secrets tests grep every output for it)."""
    return make_key_pair(tmp_path_factory.mktemp("cosign-keys"), "pw-" + uuid.uuid4().hex)


@pytest.fixture(scope="session")
def main_job(registry, signing_keys, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """``(result, build folder)`` of `builder all --select <SUBSET>` publishing to :func:`registry`,
    signed with :func:`signing_keys` (its parent, the minimal image, comes along; both platforms).
    Shared by the pipeline, signing and reproducibility tests (the last rebuilds the same images
    cold and compares digests)."""
    build_dir = tmp_path_factory.mktemp("main-job")
    result = builder("all", "--select", SUBSET, "--build-dir", str(build_dir),
                     env={"REGISTRY": registry, "BUILDER_SIGNING_KEY": str(signing_keys["key"]),
                          "COSIGN_PASSWORD": signing_keys["password"]})
    return result, build_dir


@pytest.fixture(scope="session")
def start_registry(docker_client):
    """``start_registry(folder, port, users={}) -> Popen``: Debian's docker-registry on 127.0.0.1:port
    with its storage, config and log (``registry.log``) in ``folder``; basic auth (htpasswd, bcrypt)
    when ``users`` maps names to passwords. Waits until it answers. The caller stops it."""
    engine.apt_install("docker-registry", "apache2-utils")

    def start(folder: Path, port: int, users: dict | None = None) -> subprocess.Popen:
        assert not engine.registry_answers(f"127.0.0.1:{port}"), f"something already answers on 127.0.0.1:{port}"
        folder.mkdir(parents=True, exist_ok=True)
        auth = ""
        if users:
            lines = [subprocess.run(["htpasswd", "-Bbn", u, p], capture_output=True, text=True, check=True).stdout.strip()
                     for u, p in users.items()]
            (folder / "htpasswd").write_text("\n".join(lines) + "\n")
            auth = f"auth: {{htpasswd: {{realm: builder-test, path: {folder / 'htpasswd'}}}}}\n"
        (folder / "config.yml").write_text(
            "version: 0.1\nlog: {level: info}\n"
            f"storage: {{filesystem: {{rootdirectory: {folder / 'data'}}}, delete: {{enabled: true}}}}\n"
            f"http: {{addr: '127.0.0.1:{port}'}}\n" + auth)
        proc = subprocess.Popen(["docker-registry", "serve", str(folder / "config.yml")],
                                stdout=open(folder / "registry.log", "a"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not engine.registry_answers(f"127.0.0.1:{port}"):
            assert proc.poll() is None and time.monotonic() < deadline, (folder / "registry.log").read_text()
            time.sleep(0.2)
        assert proc.poll() is None, (folder / "registry.log").read_text()
        return proc
    return start


def _make_wheel(folder: Path, name: str = "builder_demo", version: str = "1.0") -> Path:
    """Write a minimal pure-Python wheel (PEP 427) into ``folder``: one module whose VERSION is
    ``version``. Returns the wheel's path."""
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{name}-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{name}-{version}.dist-info/RECORD,,")
    files[f"{name}-{version}.dist-info/RECORD"] = "\n".join(record) + "\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return wheel


@pytest.fixture(scope="session")
def make_wheel():
    """The wheel factory: ``make_wheel(folder, name="builder_demo", version="1.0") -> Path``."""
    return _make_wheel
