"""The committed docker-bake.json is read by buildx itself, as a user with only Docker runs it."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from repo import ROOT

from builder import matrix
from builder.engine import plugins
from builder.generate import bake

pytestmark = pytest.mark.engine



def test_buildx_reads_the_committed_bake_file_and_its_variables(docker_client):
    plugins.ensure_buildx(ROOT / "build")
    env = {**os.environ, "REGISTRY": "registry.invalid:5000/team", "TAG": "2026-11"}
    r = subprocess.run(["docker", "buildx", "bake", "-f", "docker-bake.json", "--print", "sklearn"], cwd=ROOT,
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    printed = json.loads(r.stdout)["target"]
    sklearn = [s for s in matrix.load(ROOT / "matrix.yaml").images() if s.framework == "sklearn"]
    assert sorted(printed) == sorted(bake.target_name(s.name) for s in sklearn)
    for s in sklearn:
        t = printed[bake.target_name(s.name)]
        assert t["tags"] == [f"registry.invalid:5000/team/{s.name}:2026-11"]
        assert t["args"]["PARENT_IMAGE"] == f"registry.invalid:5000/team/{s.parent}:2026-11"
        assert (ROOT / t["context"] / "Dockerfile").is_file()
