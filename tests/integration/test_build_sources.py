"""Package sources reach builds and stay out of the image: a real, uncached build on the Engine
installs a wheel from a served wheelhouse through a pip.conf that carries an index credential
and a CA bundle; afterwards neither the history nor any file of the image holds the credential,
the CA bundle or a wheel file."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from builder import build, matrix
from builder.sources import Sources, serve

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-t0ken-4d1f"
MARKER = "builder-test-ca-7c2e"


@pytest.fixture(scope="module")
def minimal_image(docker_client):
    """The minimal image, built (from cache when possible) by the main job's code path."""
    client = docker_client
    spec = matrix.load(ROOT / "matrix.yaml").image("minimal-debian12-py311-cpu-inference")
    from builder import bases
    m = matrix.load(ROOT / "matrix.yaml")
    base = bases.ensure(client, spec.base, m.data.bases[spec.base], "auto", ROOT / "build" / "bases")
    sources = Sources.from_env()
    with serve(sources) as url:
        result = build.build_image(client, spec.name, ROOT / "images" / spec.name, "builder-test/minimal:sources",
                                   {"BASE_IMAGE": base.ref, "BUILD_SOURCES_URL": url}, {},
                                   ROOT / "build" / "logs" / "test-sources-minimal.build.log")
    assert result.ok, result.error
    return client, "builder-test/minimal:sources"


def test_wheelhouse_index_credential_and_ca_stay_out_of_the_image(minimal_image, tmp_path, make_wheel):
    client, parent = minimal_image
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels)
    # The build's CA bundle: the machine's (PIP_CERT or certifi's) plus a marker line OpenSSL ignores,
    # so a copy of it in the image can be told apart from Debian's public bundle.
    import certifi
    machine_ca = Path(os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE") or certifi.where())
    ca = tmp_path / "build-ca.pem"
    ca.write_text(f"# {MARKER}\n" + machine_ca.read_text())
    port = 5197
    # The credential rides on an extra index (the sources server itself: it answers 404, which pip skips).
    sources = Sources(ca_bundle=ca, wheelhouse=wheels, port=port,
                      extra_index_urls=(f"http://builder:{SECRET}@127.0.0.1:{port}/simple/",))
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {parent}\nUSER 0\nARG BUILD_SOURCES_URL=\nRUN pip-install builder_demo==1.0\nUSER 1000\n")
    tag = "builder-test/sources-check:latest"
    with serve(sources) as url:
        result = build.build_image(client, "sources-check", context, tag, {"BUILD_SOURCES_URL": url}, {},
                                   tmp_path / "build.log", nocache=True)  # the RUN really fetches the sources
    assert result.ok, result.error + (tmp_path / "build.log").read_text()
    try:
        # the wheel really came from the served wheelhouse
        out = client.containers.run(tag, entrypoint=["python3", "-c", "import builder_demo; print(builder_demo.VERSION)"],
                                    remove=True, network_disabled=True)
        assert out.decode().strip() == "1.0"
        history = str(client.api.history(tag))
        assert SECRET not in history and ".whl" not in history
        container = client.containers.create(tag)
        try:
            stream = io.BytesIO(b"".join(container.export()))
        finally:
            container.remove()
        with tarfile.open(fileobj=stream) as tar:
            for member in tar:
                # Debian's python3-pip-whl (which `python3 -m venv` needs) is the only wheel allowed.
                assert not member.name.endswith(".whl") or member.name.startswith("usr/share/python-wheels/"), \
                    member.name
                assert "builder_demo-" not in member.name or ".dist-info" in member.name, member.name
                assert "pip.conf" not in member.name or "site-packages" in member.name, member.name
                if member.isfile() and member.size < 5_000_000:
                    data = tar.extractfile(member).read()
                    assert SECRET.encode() not in data, member.name
                    assert MARKER.encode() not in data, f"{member.name} is the build's CA bundle"
    finally:
        client.images.remove(tag, force=True)
