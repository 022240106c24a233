"""The size gate on a real build (issue 22): a catalog that says the minimal image was far smaller
stops it before its smoke test, without a new local ``latest``; ``--accept-size`` lets it through."""

from __future__ import annotations

import json
import shutil

import pytest
from repo import ROOT
from run_builder import MINIMAL, builder, report

pytestmark = pytest.mark.engine


def _matrix_with_catalog(tmp_path, size: int):
    # The matrix beside a catalog (docs/images.json) whose minimal linux/amd64 row says ``size`` bytes.
    for name in ("matrix.yaml", "compat.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "bases", tmp_path / "bases")  # the base locks live beside the matrix
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "images.json").write_text(json.dumps(
        {"images": [{"name": MINIMAL, "platform": "linux/amd64", "uncompressed_bytes": size}]}))
    return ["--matrix", str(tmp_path / "matrix.yaml"), "--images", str(ROOT / "images"),
            "--tests", str(ROOT / "tests" / "by_image"), "--templates", str(ROOT / "templates")]


def _latest(docker_client, namespace: str) -> str | None:
    try:
        return docker_client.images.get(f"{namespace}/{MINIMAL}:latest").id
    except Exception:  # docker.errors.ImageNotFound
        return None


def test_an_image_that_grew_past_its_catalog_size_gets_no_latest(docker_client, registry, tmp_path):
    # Tagged in a namespace of its own (removed after the session), so no other test's latest moves.
    opts = [*_matrix_with_catalog(tmp_path, 50_000_000), "--registry", f"{registry}/size-gate"]  # 50 MB: far less
    r = builder("test", *opts, "--select", MINIMAL, "--platform", "linux/amd64", "--build-dir", str(tmp_path / "b"))
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    entry = report(tmp_path / "b")[MINIMAL]
    assert entry["status"] == "size-gate", entry
    assert "linux/amd64: uncompressed 50 MB -> " in entry["error"] and "grew most: +" in entry["error"], entry["error"]
    assert entry["platforms"][0]["test"] is None  # stopped before its smoke test
    assert _latest(docker_client, f"{registry}/size-gate") is None

    r = builder("test", *opts, "--accept-size", "--select", MINIMAL, "--platform", "linux/amd64",
                "--build-dir", str(tmp_path / "accepted"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert report(tmp_path / "accepted")[MINIMAL]["status"] == "tested"
    assert _latest(docker_client, f"{registry}/size-gate") is not None
