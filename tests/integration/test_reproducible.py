"""Reproducibility: the minimal image built twice with BuildKit's layer cache off (and so with empty
cache mounts) installs the same packages and carries the same lock digest. Whether the two image ids
match too is printed (pytest -s, or the junit log), not asserted: layer timestamps differ unless
SOURCE_DATE_EPOCH is honoured (BuildKit >= 0.13, https://docs.docker.com/build/ci/github-actions/reproducible-builds/)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from repo import ROOT

from builder.generate import lock

pytestmark = pytest.mark.engine

MINIMAL = "minimal-debian12-py311-cpu-inference"
DISTRIBUTIONS = ("import importlib.metadata as m, json; "
                 "print(json.dumps(sorted([d.metadata['Name'].lower(), d.version] for d in m.distributions())))")


def _build_uncached(build_dir) -> dict:
    # --keep-last 2: the second build must not remove the first, which the test compares it with
    r = subprocess.run([sys.executable, "-m", "builder.cli", "build", "--no-cache", "--platform", "linux/amd64", "--select", MINIMAL,
                        "--keep-last", "2", "--build-dir", str(build_dir)], cwd=ROOT, capture_output=True, text=True,
                       timeout=1800)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads((build_dir / "report.json").read_text())["images"][0]


def test_two_uncached_builds_install_the_same_set_and_carry_the_same_lock(docker_client, tmp_path):
    first, second = _build_uncached(tmp_path / "one"), _build_uncached(tmp_path / "two")
    images = [docker_client.images.get(f"{r['repository']}:{r['tags'][0]}") for r in (first, second)]
    installed = [json.loads(docker_client.containers.run(i.id, entrypoint=["python3", "-c", DISTRIBUTIONS],
                                                         remove=True, network_disabled=True)) for i in images]
    assert installed[0] == installed[1]
    expected = lock.read(ROOT / "images", MINIMAL)
    assert {lock.canonicalize_name(n): v for n, v in installed[0]} == expected.versions()
    digests = [i.labels["io.github.inference-images.lock-digest"] for i in images]
    assert digests == [expected.digest, expected.digest]
    print(f"image ids: {images[0].id} {images[1].id} ({'equal' if images[0].id == images[1].id else 'different'})")
