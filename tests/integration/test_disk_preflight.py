"""The disk preflight against the real Engine: a run whose images cannot fit on the Engine's data
root is refused before anything is built, in one line (need / have / where), exit 2, and nothing
is written (not even the build folder).

A copy of the matrix whose catalog (docs/images.json beside it) says the minimal image is 10 TB
stands for "images too large for this disk"; `--no-cache` makes the estimate count it whatever
builds of it the Engine already holds.
"""

from __future__ import annotations

import json
import shutil
import uuid

import pytest
from repo import ROOT, seed_locks
from run_builder import MINIMAL, builder

pytestmark = pytest.mark.engine


def test_a_run_that_cannot_fit_is_refused_before_anything_is_built(docker_client, tmp_path):
    for name in ("compat.yaml", "matrix.yaml"):
        shutil.copy2(ROOT / name, tmp_path / name)
    seed_locks(tmp_path / "images", ROOT / "images")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "images.json").write_text(json.dumps(
        {"images": [{"name": MINIMAL, "platform": p, "uncompressed_bytes": 10**13} for p in ("linux/amd64", "linux/arm64")]}))
    opts = ["--matrix", str(tmp_path / "matrix.yaml"), "--templates", str(ROOT / "templates"),
            "--images", str(tmp_path / "images")]
    assert builder("render", *opts).returncode == 0
    namespace = f"127.0.0.1:5000/preflight-{uuid.uuid4().hex[:8]}"  # where a build of this run would be tagged
    build_dir = tmp_path / "build"

    r = builder("build", *opts, "--select", MINIMAL, "--no-cache", "--registry", namespace, "--build-dir", str(build_dir))
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "not enough disk space" in lines[0] and "--no-space-check" in lines[0], r.stderr
    root = docker_client.info()["DockerRootDir"]
    assert "GB on the file system of" in lines[0] and "GB free" in lines[0], lines[0]
    assert root in lines[0] or str(build_dir) in lines[0], lines[0]  # where: the data root (and build/ with it)
    assert not build_dir.exists(), "the refused run wrote its build folder"
    built = [t for i in docker_client.images.list() for t in i.tags if t.startswith(namespace + "/")]
    assert built == [], f"the refused run built an image: {built}"
