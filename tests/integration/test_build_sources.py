"""Package sources reach builds and stay out of the image: a real, uncached BuildKit build installs a
wheel from a wheelhouse image while uv's configuration (a BuildKit secret) names an extra index whose
URL carries a credential, and the build trusts a marked CA bundle (another secret). Afterwards neither
the history nor any file of the image holds the credential, the CA bundle, uv or a wheel file."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from repo import ROOT

from builder.engine import plugins
from builder.engine.sources import Sources, wheelhouse_image
from builder.run import buildx

pytestmark = pytest.mark.engine

SECRET = "s3cr3t-t0ken-4d1f"
MARKER = "builder-test-ca-7c2e"
PORT = 8765
MINIMAL = "minimal-debian12-py311-cpu-inference"


@pytest.fixture(scope="module")
def minimal_image(docker_client, tmp_path_factory) -> str:
    """The minimal image, built (from cache when possible) by the main job's code path."""
    build_dir = tmp_path_factory.mktemp("sources-minimal")
    r = subprocess.run([sys.executable, "-m", "builder.cli", "build", "--platform", "linux/amd64", "--select", MINIMAL, "--build-dir", str(build_dir)],
                       cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout + r.stderr
    image = json.loads((build_dir / "report.json").read_text())["images"][0]
    return f"{image['repository']}:{image['tags'][0]}"


def _dockerfile(parent: str, uv: str) -> str:
    # The extra index is a stdlib http.server started inside the RUN on the build's own loopback; it
    # answers 404, which uv takes as "not on this index", so the wheel must come from the wheelhouse.
    # The install waits (at most 5 minutes) until the server accepts a connection.
    return f"""ARG WHEELHOUSE_IMAGE=scratch
FROM ${{WHEELHOUSE_IMAGE}} AS wheelhouse
FROM {parent} AS uv
USER 0
RUN --mount=type=secret,id=pip.conf --mount=type=secret,id=ca.pem pip-install --target /opt/uv uv=={uv}
FROM {parent}
USER 0
RUN --mount=type=bind,from=uv,source=/opt/uv,target=/run/uv \\
    --mount=type=bind,from=wheelhouse,target=/run/wheelhouse \\
    --mount=type=secret,id=uv.toml --mount=type=secret,id=ca.pem \\
    test -s /run/secrets/uv.toml && test -s /run/secrets/ca.pem \\
 && mkdir /tmp/index && (cd /tmp/index && exec python3 -m http.server {PORT} --bind 127.0.0.1 >/dev/null 2>&1 &) \\
 && python3 -c "import socket, time; any(socket.socket().connect_ex(('127.0.0.1', {PORT})) == 0 or time.sleep(0.2) for _ in range(1500)) or exit('the extra index never answered')" \\
 && pip-install builder_demo==1.0 && rm -rf /tmp/index
USER 1000
"""


def test_wheelhouse_index_credential_and_ca_stay_out_of_the_image(minimal_image, docker_client, tmp_path, make_wheel):
    from builder import matrix
    client = docker_client
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels)
    # The build's CA bundle: the machine's (PIP_CERT or certifi's) plus a marker line OpenSSL ignores,
    # so a copy of it in the image can be told apart from Debian's public bundle.
    import certifi
    machine_ca = Path(os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE") or certifi.where())
    ca = tmp_path / "build-ca.pem"
    ca.write_text(f"# {MARKER}\n" + machine_ca.read_text())
    sources = Sources(ca_bundle=ca, wheelhouse=wheels,
                      extra_index_urls=(f"http://builder:{SECRET}@127.0.0.1:{PORT}/simple/",))
    assert SECRET in sources.uv_toml()
    uv = matrix.load(ROOT / "matrix.yaml").data.build_tools.uv
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(_dockerfile(minimal_image, uv))
    tag = "builder-test/sources-check:latest"
    plugins.ensure_buildx(ROOT / "build")
    with sources.secrets() as secrets:
        result = buildx.build("sources-check", context, tag, {"WHEELHOUSE_IMAGE": wheelhouse_image(client, wheels)},
                             secrets, tmp_path / "build.log", no_cache=True)  # the RUN really uses the sources
    assert result.ok, f"{result.error}\n{(tmp_path / 'build.log').read_text()[-3000:]}"
    assert SECRET not in (tmp_path / "build.log").read_text()
    try:
        # the wheel really came from the wheelhouse
        out = client.containers.run(tag, entrypoint=["python3", "-c", "import builder_demo; print(builder_demo.VERSION)"],
                                    remove=True, network_disabled=True)
        assert out.decode().strip() == "1.0"
        history = json.dumps(client.api.history(tag))
        assert SECRET not in history and ".whl" not in history and MARKER not in history
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
                assert not member.name.endswith(("bin/uv", "uv.toml")), f"{member.name}: uv stays out of the image"
                assert "pip.conf" not in member.name or "site-packages" in member.name, member.name
                if member.isfile() and member.size < 5_000_000:
                    data = tar.extractfile(member).read()
                    assert SECRET.encode() not in data, member.name
                    assert MARKER.encode() not in data, f"{member.name} is the build's CA bundle"
    finally:
        client.images.remove(tag, force=True)
