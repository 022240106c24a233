"""Debian package locks against the real mirror and Engine: the base image's apt resolves the
runtime's packages into a lock that covers them (with their dependencies), and a build whose lock
names a version the mirror does not serve fails with one line saying to refresh."""

from __future__ import annotations

import shutil

import pytest
from repo import ROOT
from run_builder import MINIMAL, builder, report

from builder.matrix.platform import DEFAULT
from builder import engine
from builder.engine import bases
from builder.generate import apt_lock, apt_resolver, base_resolver
from builder.matrix import load

pytestmark = pytest.mark.engine


def test_the_base_images_apt_locks_the_runtime_packages_with_their_dependencies(docker_client, tmp_path):
    m = load(ROOT / "matrix.yaml")
    spec = m.image(MINIMAL)
    refs = bases.for_roots(docker_client, m.data.bases, [spec], "auto", ROOT / "build" / "bases", lambda n, line: None,
                           engine.native_platform(docker_client), base_resolver.pins_of(ROOT, "auto"))
    images = tmp_path / "images"
    locks = apt_resolver.lock_roots(docker_client, m, [spec], refs, images, tmp_path / "apt-index", log=lambda line: None)
    assert [(k.image, k.platform) for k in locks] == [(MINIMAL, p) for p in spec.platforms]
    for k in locks:
        assert apt_lock.read(images, MINIMAL, k.platform) == k
        assert set(m.data.runtime.apt) <= set(k.versions) and "libpython3.11-stdlib" in k.versions  # a dependency
        assert set(k.suites.values()) <= {"bookworm", "bookworm-updates", "bookworm-security"}


def test_a_locked_version_the_mirror_does_not_serve_fails_the_build_saying_to_refresh(tmp_path):
    shutil.copytree(ROOT / "images", tmp_path / "images")
    shutil.copy(ROOT / "docker-bake.json", tmp_path / "docker-bake.json")
    path = apt_lock.path_of(tmp_path / "images", MINIMAL, DEFAULT)
    got = apt_lock.read(ROOT / "images", MINIMAL, DEFAULT)  # written again with a valid digest, as `builder lock` would
    path.write_text(apt_lock.text(MINIMAL, DEFAULT, got.packages, {**got.versions, "tini": "0.0.1-0"}, got.suites))
    assert "tini=0.0.1-0 " in path.read_text()
    r = builder("build", "--select", MINIMAL, "--platform", "linux/amd64", "--images", str(tmp_path / "images"),
                "--build-dir", str(tmp_path / "build"))
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    lines = [line for line in r.stdout.splitlines() if line.startswith(f"{MINIMAL} build-failed")]
    assert len(lines) == 1, r.stdout[-3000:]
    assert (f"tini=0.0.1-0 (locked for {MINIMAL}) is no longer served by the mirror; "
            f"run `builder refresh --select {MINIMAL}`") in " ".join(r.stdout.split()), r.stdout[-3000:]
    assert report(tmp_path / "build")[MINIMAL]["status"] == "build-failed"
