"""`builder prune` removes what the builder made and only that, and says how many bytes it freed.

A copy of the matrix with a label prefix of its own stands for "the builder's images", so the
images every other engine test uses (labelled with the real prefix) are, like any foreign image,
left alone; `--keep-bases` keeps the bases they share. The BuildKit cache ledger is the test's own
(XDG_STATE_HOME), so only the records this test's run created are pruned; a record of a build made
outside the builder stays.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import tarfile

import pytest
from repo import ROOT, seed_locks
from run_builder import MINIMAL, builder, report

pytestmark = pytest.mark.engine


def _foreign_image(client, tmp_path):
    """A one-file image made outside the builder (docker import), titled like a matrix image."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    client.api.import_image_from_data(data.getvalue(), repository="prune-test/foreign", tag="1",
                                      changes=[f"LABEL org.opencontainers.image.title={MINIMAL}"])
    return client.images.get("prune-test/foreign:1")


def _foreign_cache(tmp_path) -> set[str]:
    """Build a tiny image with buildx outside the builder; return the ids of BuildKit's records."""
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\nCOPY f /f\n")
    (tmp_path / "ctx" / "f").write_text(str(tmp_path))  # unique content: a record of its own
    subprocess.run(["docker", "buildx", "build", "-q", "--tag", "prune-test/cache:1", str(tmp_path / "ctx")],
                   check=True, capture_output=True)
    return _cache_ids()


def _cache_ids() -> set[str]:
    out = subprocess.run(["docker", "buildx", "du", "--verbose"], capture_output=True, text=True, check=True).stdout
    return {line.split()[1] for line in out.splitlines() if line.startswith("ID:")}


def test_prune_removes_the_builders_images_cache_and_folder_and_nothing_else(docker_client, tmp_path):
    for name in ("compat.yaml", "matrix.yaml"):
        shutil.copy2(ROOT / name, tmp_path / name)
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(matrix.read_text().replace("label_prefix: io.github.inference-images",
                                                 "label_prefix: io.example.prune-test", 1))
    seed_locks(tmp_path / "images", ROOT / "images")
    opts = ["--matrix", str(matrix), "--templates", str(ROOT / "templates"), "--images", str(tmp_path / "images")]
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    assert builder("render", *opts).returncode == 0
    build_dir = tmp_path / "build"
    # A repository of its own (no other test's build is superseded) and a cold build: an earlier
    # test's build of the same image would otherwise give every step from BuildKit's cache, and
    # this run would make no cache record of its own to prune.
    r = builder("build", *opts, "--platform", "linux/amd64", "--select", MINIMAL, "--build-dir", str(build_dir),
                "--registry", "127.0.0.1:5000/prune-test", "--no-cache", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    built = report(build_dir)[MINIMAL]
    ours = docker_client.images.get(f"{built['repository']}:{built['tags'][0]}")
    assert ours.labels["io.example.prune-test.cell-digest"]
    ledger = tmp_path / "state" / "inference-builder" / "buildkit-cache.ids"
    recorded = set(ledger.read_text().split())
    assert recorded, "the run recorded no BuildKit cache record of its own"
    foreign = _foreign_image(docker_client, tmp_path)
    foreign_cache = _foreign_cache(tmp_path) - recorded
    real = {i.id for i in docker_client.images.list(filters={"label": "io.github.inference-images.cell-digest"})}
    bases = {i.id for i in docker_client.images.list() if any(t.startswith("builder-base/") for t in i.tags)}

    r = builder("prune", "--matrix", str(matrix), "--build-dir", str(build_dir), "--keep-bases", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    freed = re.search(r"^freed (-?\d+\.\d+) GB \(free space gained", r.stdout, re.M)
    assert freed and float(freed.group(1)) > 0, r.stdout  # its cold build's image and cache are gone
    left = {i.id for i in docker_client.images.list()}
    assert ours.id not in left or not docker_client.images.get(ours.id).tags, "the builder's image is still tagged"
    assert foreign.id in left and real <= left and bases <= left
    assert not build_dir.exists()
    assert not (set(ledger.read_text().split()) & _cache_ids()), "a recorded cache record survived"
    assert foreign_cache <= _cache_ids(), "a cache record the builder did not make was pruned"
    docker_client.images.remove("prune-test/foreign:1")
    docker_client.images.remove("prune-test/cache:1")


def _cache_types() -> dict[str, str]:
    """``{record id: type}`` of BuildKit's cache (``docker buildx du --verbose``)."""
    out = subprocess.run(["docker", "buildx", "du", "--verbose"], capture_output=True, text=True, check=True).stdout
    types, record = {}, None
    for line in out.splitlines():
        if line.startswith("ID:"):
            record = line.split()[1]
        elif line.startswith("Type:") and record:
            types[record] = line.split()[1]
    return types


def test_prune_cache_leaves_only_cache_mounts_of_a_runs_records(docker_client, tmp_path):
    # A cache mount's record takes a new id when a build uses it, so only layer records compare.
    earlier = set(_cache_types())
    _foreign_cache(tmp_path)
    before = _cache_types()
    foreign_cache = {i for i, kind in before.items() if i not in earlier and kind != "exec.cachemount"}
    assert foreign_cache, "the build outside the builder made no cache record"
    build_dir, env = tmp_path / "build", {"XDG_STATE_HOME": str(tmp_path / "state")}
    r = builder("build", "--platform", "linux/amd64", "--select", MINIMAL, "--build-dir", str(build_dir),
                "--registry", "127.0.0.1:5000/prune-test/cache", "--no-cache", "--prune-cache", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(rf"^BuildKit cache removed after {MINIMAL}: \d+\.\d\d GB$", r.stdout, re.M), r.stdout
    built = report(build_dir)[MINIMAL]
    assert docker_client.images.get(f"{built['repository']}:{built['tags'][0]}").labels  # the image stays
    made = {i: t for i, t in _cache_types().items() if i not in before}
    assert set(made.values()) <= {"exec.cachemount"}, made  # the cold build's layers are gone
    assert foreign_cache <= set(_cache_types()), "a cache record the run did not make was pruned"
    docker_client.images.remove("prune-test/cache:1")
