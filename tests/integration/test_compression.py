"""``compression: zstd`` on a real Engine and registry: the minimal image is built, smoke-tested and
published with every layer zstd-compressed (its base's too), and the registry serves it."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from repo import ROOT
from run_builder import MINIMAL, builder, builds, raw_digest, report

pytestmark = pytest.mark.engine

ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


def _zstd_matrix(tmp_path) -> list[str]:
    # The matrix with compression: zstd, beside its compatibility table and base locks.
    text = (ROOT / "matrix.yaml").read_text()
    assert "\ncompression: gzip\n" in text
    (tmp_path / "matrix.yaml").write_text(text.replace("\ncompression: gzip\n", "\ncompression: zstd\n"))
    shutil.copy(ROOT / "compat.yaml", tmp_path / "compat.yaml")
    shutil.copytree(ROOT / "bases", tmp_path / "bases")
    return ["--matrix", str(tmp_path / "matrix.yaml"), "--images", str(ROOT / "images"),
            "--tests", str(ROOT / "tests" / "by_image"), "--templates", str(ROOT / "templates")]


def test_a_zstd_matrix_publishes_every_layer_zstd_compressed(registry, tmp_path, docker_client):
    namespace = f"{registry}/zstd"
    r = builder("all", *_zstd_matrix(tmp_path), "--by-platform", "--platform", "linux/amd64", "--select", MINIMAL,
                "--registry", namespace, "--build-dir", str(tmp_path / "b"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    entry = report(tmp_path / "b")[MINIMAL]
    facts = builds(entry)["linux/amd64"]
    assert entry["status"] == "published" and "passed" in facts["test"]["outcome"], entry
    ref = f"{namespace}/{MINIMAL}:latest-amd64"
    assert raw_digest(ref) == facts["digest"]
    raw = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"],
                         capture_output=True, check=True, timeout=120).stdout
    layers = json.loads(raw)["layers"]
    assert len(layers) > 1 and {layer["mediaType"] for layer in layers} == {ZSTD}, layers
