"""cosign's two storage forms against a real registry, without the Docker Engine: a throw-away Debian
``docker-registry`` (2.8: no OCI 1.1 referrers API) on a free loopback port, test images pushed with
oras-py, signed and attested by Debian 13's cosign 2.5 (what the builder used before cosign 3) and by
the builder's cosign 3, and checked with ``builder verify``'s own code (:func:`builder.sign.verify.verify`).

cosign 3 is :func:`builder.sign.cosign.ensure`'s, or ``BUILDER_TEST_COSIGN3``; cosign 2.5 is Debian
13's package, downloaded under build/tools-cosign2 (never installed), or ``BUILDER_TEST_COSIGN2``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import requests
from repo import ROOT

from builder.engine import debian_suite
from builder.engine.host import apt_install
from builder.engine.registry import Registry
from builder.matrix import load
from builder.sign import Signer, SignError, cosign, predicates
from builder.sign import verify as checks

SKLEARN = "sklearn-1.9-debian12-py311-cpu-inference"
REVISION = "f" * 40
PASSWORD = "forms-test-password"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> str:
    """``127.0.0.1:<port>`` of a docker-registry of this module only (stopped afterwards)."""
    if shutil.which("docker-registry") is None:
        apt_install("docker-registry")
    folder, port = tmp_path_factory.mktemp("registry"), _free_port()
    config = folder / "config.yml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {folder / 'data'}\n"
                      f"http:\n  addr: 127.0.0.1:{port}\n")
    with open(folder / "registry.log", "wb") as log:
        proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            try:
                if requests.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def cosign3() -> Path:
    found = os.environ.get("BUILDER_TEST_COSIGN3")
    path = Path(found) if found else cosign.ensure(ROOT / "build")
    assert cosign.major(path) == 3, f"{path} is no cosign 3"
    return path


@pytest.fixture(scope="module")
def cosign2() -> Path:
    """Debian 13's cosign 2.5 (GitVersion ``devel``, no ``/v2`` in its Go package path)."""
    if os.environ.get("BUILDER_TEST_COSIGN2"):
        return Path(os.environ["BUILDER_TEST_COSIGN2"])
    root = (ROOT / "build" / "tools-cosign2").resolve()
    [deb] = debian_suite.download(["cosign"], root, suite="trixie")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root / "unpacked")], check=True)
    return root / "unpacked/usr/bin/cosign"


@pytest.fixture(scope="module")
def keys(tmp_path_factory, cosign3) -> dict[str, Path]:
    """Two key pairs: ``key``/``pub`` (the publisher's) and ``other``/``other.pub``."""
    out = {}
    for name in ("mine", "other"):
        folder = tmp_path_factory.mktemp(name)
        subprocess.run([str(cosign3), "generate-key-pair"], cwd=folder, check=True, capture_output=True,
                       env={**os.environ, "COSIGN_PASSWORD": PASSWORD}, timeout=120)
        out[name], out[f"{name}.pub"] = folder / "cosign.key", folder / "cosign.pub"
    return out


@pytest.fixture(autouse=True)
def password(monkeypatch):
    monkeypatch.setenv("COSIGN_PASSWORD", PASSWORD)


def _push(host: str, name: str) -> tuple[str, str]:
    """Push a one-layer OCI image labelled as the sklearn image at :data:`REVISION` to
    ``host/name:v1`` with oras-py; ``(repository, manifest digest)``."""
    import oras.container
    import oras.provider

    m = load(ROOT / "matrix.yaml")
    prefix = m.data.project.label_prefix
    client = oras.provider.Registry(hostname=host, insecure=True)
    target = oras.container.Container(f"{host}/{name}:v1")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        data = name.encode()
        info = tarfile.TarInfo("name.txt")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    layer = buf.getvalue()
    labels = {"org.opencontainers.image.title": SKLEARN, "org.opencontainers.image.revision": REVISION,
              f"{prefix}.framework-version": "1.9.1"}
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": labels},
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}}).encode()
    descriptors = []
    for blob, media_type in ((layer, "application/vnd.oci.image.layer.v1.tar"),
                             (config, "application/vnd.oci.image.config.v1+json")):
        path = Path(f"/tmp/forms-blob-{os.getpid()}")
        path.write_bytes(blob)
        d = {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(blob).hexdigest(), "size": len(blob)}
        client.upload_blob(str(path), target, d).raise_for_status()
        path.unlink()
        descriptors.append(d)
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": descriptors[1], "layers": [descriptors[0]]}
    client.upload_manifest(manifest, target).raise_for_status()
    repository = f"{host}/{name}"
    return repository, Registry(host).digest(repository, "v1")


def _predicates(folder: Path, digest: str) -> dict[str, Path]:
    """The three predicate files ``builder verify`` accepts for the image of :func:`_push`, by cosign type."""
    m = load(ROOT / "matrix.yaml")
    docs = {predicates.PROVENANCE: {"buildDefinition": {"buildType": "https://example.invalid/t", "externalParameters": {
                "source": {"uri": m.data.project.source, "digest": {"gitCommit": REVISION}}}},
                                    "runDetails": {"builder": {"id": "https://example.invalid/b"}}},
            predicates.TEST_RESULT: {"result": "PASSED", "configuration": [
                {"name": "tested-image", "digest": {"sha256": digest.split(":")[1]}}]},
            predicates.CYCLONEDX: {"bomFormat": "CycloneDX", "specVersion": "1.6",
                                   "components": [{"name": "scikit-learn", "version": "1.9.1"}]}}
    out = {}
    for kind, doc in docs.items():
        path = folder / f"{predicates.COSIGN_TYPES[kind].rsplit('/', 1)[-1]}.json"
        path.write_text(json.dumps(doc))
        out[predicates.COSIGN_TYPES[kind]] = path
    return out


def _cosign2_publish(cosign2: Path, ref: str, key: Path, folder: Path) -> None:
    """What the builder's cosign 2 code did (main before issue 34): attest, then sign, no Rekor."""
    common = [f"--key={key}", "--tlog-upload=false", "--allow-http-registry=true", "--allow-insecure-registry=true"]
    for kind, path in _predicates(folder, ref.rsplit("@", 1)[1]).items():
        _run(cosign2, "attest", "--yes", "--replace", f"--type={kind}", f"--predicate={path}", *common, "--", ref)
    _run(cosign2, "sign", "--yes", *common, "--", ref)


def _run(tool: Path, *args: str) -> None:
    r = subprocess.run([str(tool), *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-600:]


def _tags(host: str, repository: str) -> set[str]:
    return set(Registry(host).list_tags(repository))


def _verify(host: str, cosign3: Path, repository: str, digest: str, pub: Path) -> list[checks.Finding]:
    return checks.verify(f"{repository}@{digest}", cosign.Cosign(cosign3), str(pub), Registry(host),
                         load(ROOT / "matrix.yaml"))


def test_the_debian_registry_serves_no_referrers_api(registry):
    repository, digest = _push(registry, "forms/probe")
    assert Registry(registry).serves_referrers(repository, digest) is False


def test_an_image_signed_by_cosign_2_still_verifies(registry, cosign2, cosign3, keys, tmp_path):
    repository, digest = _push(registry, "forms/cosign2")
    _cosign2_publish(cosign2, f"{repository}@{digest}", keys["mine"], tmp_path)
    hex_ = digest.split(":")[1]
    assert {f"sha256-{hex_}.sig", f"sha256-{hex_}.att"} <= _tags(registry, repository)
    findings = _verify(registry, cosign3, repository, digest, keys["mine.pub"])
    assert [f.check for f in findings] == ["signature", "provenance", "test-result", "sbom"]
    assert all(f.ok for f in findings), [f.line() for f in findings]
    assert not any(f.ok for f in _verify(registry, cosign3, repository, digest, keys["other.pub"]))


def test_the_signer_writes_the_legacy_tags_where_the_registry_has_no_referrers_api(registry, cosign2, cosign3, keys, tmp_path):
    repository, digest = _push(registry, "forms/legacy")
    ref = f"{repository}@{digest}"
    tool = cosign.Cosign(cosign3).offline_signing_config(tmp_path)
    signer = Signer(tool, str(keys["mine"]), "2026-12-07T00:00:00Z", public_key=str(keys["mine.pub"]))
    assert signer.form(ref) == cosign.LEGACY and not signer.signed(ref)
    for kind, path in _predicates(tmp_path, digest).items():
        signer.attest(ref, path, kind)
    signer.sign(ref)
    hex_ = digest.split(":")[1]
    assert {f"sha256-{hex_}.sig", f"sha256-{hex_}.att"} <= _tags(registry, repository)
    assert f"sha256-{hex_}" not in _tags(registry, repository)
    assert signer.signed(ref)
    assert all(f.ok for f in _verify(registry, cosign3, repository, digest, keys["mine.pub"]))
    _run(cosign2, "verify", f"--key={keys['mine.pub']}", "--insecure-ignore-tlog=true", "--allow-http-registry=true", "--", ref)


def test_a_bundle_signed_image_verifies(registry, cosign3, keys, tmp_path):
    repository, digest = _push(registry, "forms/bundle")
    ref = f"{repository}@{digest}"
    tool = cosign.Cosign(cosign3).offline_signing_config(tmp_path)
    for kind, path in _predicates(tmp_path, digest).items():
        tool.attest(ref, str(keys["mine"]), path, kind, cosign.BUNDLE)
    # cosign verify 3.1.1 passes on attestation bundles alone; the builder wants a signature
    bare = subprocess.run([str(cosign3), "verify", f"--key={keys['mine.pub']}", "--insecure-ignore-tlog=true",
                           "--allow-http-registry=true", "--", ref], capture_output=True, text=True, timeout=300)
    assert bare.returncode == 0
    with pytest.raises(SignError, match="no signature"):
        tool.verify(ref, str(keys["mine.pub"]))
    assert [f.ok for f in _verify(registry, cosign3, repository, digest, keys["mine.pub"])] == [False, True, True, True]
    tool.sign(ref, str(keys["mine"]), cosign.BUNDLE)
    tags = _tags(registry, repository)
    hex_ = digest.split(":")[1]
    assert f"sha256-{hex_}" in tags and f"sha256-{hex_}.sig" not in tags  # the referrers tag schema's index
    fallback = Registry(registry).manifest(repository, f"sha256-{hex_}")[1]
    assert len(fallback["manifests"]) == 4
    findings = _verify(registry, cosign3, repository, digest, keys["mine.pub"])
    assert all(f.ok for f in findings), [f.line() for f in findings]
    payload = tool.verify(ref, str(keys["mine.pub"]))
    assert payload[0]["critical"]["type"] == "https://sigstore.dev/cosign/sign/v1"


def test_legacy_signatures_still_verify_beside_another_keys_bundle(registry, cosign2, cosign3, keys, tmp_path):
    # cosign verify 3 reads only the bundles when there are any: the builder asks for the legacy tags then.
    repository, digest = _push(registry, "forms/mixed")
    ref = f"{repository}@{digest}"
    _cosign2_publish(cosign2, ref, keys["mine"], tmp_path)
    cosign.Cosign(cosign3).offline_signing_config(tmp_path).sign(ref, str(keys["other"]), cosign.BUNDLE)
    first = subprocess.run([str(cosign3), "verify", f"--key={keys['mine.pub']}", "--insecure-ignore-tlog=true",
                            "--allow-http-registry=true", "--", ref], capture_output=True, text=True, timeout=300)
    assert first.returncode != 0  # cosign's default does not fall back
    assert all(f.ok for f in _verify(registry, cosign3, repository, digest, keys["mine.pub"]))
    assert all(f.ok for f in _verify(registry, cosign3, repository, digest, keys["other.pub"])[:1])
