"""Reproducibility: the minimal and scikit-learn images, both platforms, built with BuildKit's layer
cache off and its cache mounts (uv's downloads) pruned first, give the image ids the main job
published — the manifest digests on the containerd image store. Same inputs, same Engine version,
same digest (``SOURCE_DATE_EPOCH`` and ``rewrite-timestamp``, see :mod:`builder.run.steps.build`).

The main job's builds come from BuildKit's cache when an earlier run built the same inputs, else
they are cold too; either way a cold rebuild must give what a user pulls. One cold build, not two,
keeps CI within its budget.

A bootstrapped base is reproducible too (:mod:`builder.engine.bases`): bootstrapped twice from the
same mirror, it is one image id, so a fresh runner computes the build ids the registry has.

When they differ, the assertion message lists the files that differ, layer by layer (each tar
entry's name, size, mode, time and sha256), from ``docker image save`` of both images.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile

import pytest
from repo import ROOT
from run_builder import MINIMAL, SUBSET, builds

from builder.matrix.platform import DEFAULT
from builder.engine import bases
from builder.engine import images as engine_images
from builder.generate import base_lock, base_resolver, lock
from builder.matrix import load

pytestmark = [pytest.mark.engine, pytest.mark.both_engines]

DISTRIBUTIONS = ("import importlib.metadata as m, json; "
                 "print(json.dumps(sorted([d.metadata['Name'].lower(), d.version] for d in m.distributions())))")


def _build_uncached(build_dir) -> dict[tuple[str, str], str]:
    # --keep-last 2: this build must not remove the main job's, which the test compares it with
    r = subprocess.run([sys.executable, "-m", "builder.cli", "build", "--no-cache", "--select", SUBSET,
                        "--keep-last", "2", "--build-dir", str(build_dir)], cwd=ROOT, capture_output=True, text=True,
                       timeout=3600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((build_dir / "report.json").read_text())["images"]
    return {(e["name"], p): b["image_id"] for e in report for p, b in builds(e).items()}


def _entries(client, image_id: str) -> list[dict[str, tuple]]:
    # Per layer: {path: (size, mode, mtime, sha256 of the content)} from docker image save.
    blobs, manifest = {}, None
    with tarfile.open(fileobj=io.BufferedReader(engine_images._Chunks(client.api.get_image(image_id))), mode="r|") as tar:
        for member in tar:
            if member.isfile():
                data = tar.extractfile(member).read()
                if member.name == "manifest.json":
                    manifest = json.loads(data)
                else:
                    blobs[member.name] = data
    layers = []
    for name in manifest[0]["Layers"]:
        entries = {}
        with tarfile.open(fileobj=io.BytesIO(blobs[name]), mode="r:*") as layer:
            for m in layer:
                content = layer.extractfile(m).read() if m.isfile() else m.linkname.encode()
                entries[m.name] = (m.size, oct(m.mode), m.mtime, hashlib.sha256(content).hexdigest()[:16])
        layers.append(entries)
    return layers


def _differences(client, first: str, second: str, limit: int = 40) -> str:
    out = []
    for i, (a, b) in enumerate(zip(_entries(client, first), _entries(client, second))):
        for path in sorted(set(a) | set(b)):
            if a.get(path) != b.get(path):
                out.append(f"layer {i}: {path}: {a.get(path)} != {b.get(path)}")
    return "\n".join(out[:limit]) + (f"\n... {len(out) - limit} more" if len(out) > limit else "")


def test_a_cold_build_of_both_platforms_gives_the_published_digests(main_job, docker_client, tmp_path):
    result, main_dir = main_job
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    first = {(e["name"], p): b["image_id"]
             for e in json.loads((main_dir / "report.json").read_text())["images"] for p, b in builds(e).items()}
    subprocess.run(["docker", "buildx", "prune", "--force", "--filter", "type=exec.cachemount"], check=True,
                   capture_output=True)
    second = _build_uncached(tmp_path / "cold")
    assert set(first) == {(n, p) for n in (MINIMAL, SUBSET) for p in ("linux/amd64", "linux/arm64")}
    print("\n".join(f"{n} {p}: {first[n, p]} / {second[n, p]}" for n, p in sorted(first)))
    for key in sorted(first):
        assert first[key] == second[key], f"{key}: {first[key]} != {second[key]}\n" + _differences(
            docker_client, first[key], second[key])
    # and the image holds exactly its lock
    installed = json.loads(docker_client.containers.run(first[MINIMAL, "linux/amd64"], remove=True, network_disabled=True,
                                                        entrypoint=["python3", "-c", DISTRIBUTIONS]))
    assert {lock.canonicalize_name(n): v for n, v in installed} == lock.read(ROOT / "images", MINIMAL).versions()


def test_a_base_bootstrapped_twice_is_one_image(docker_client, tmp_path):
    # Both at the committed base lock's versions and date, as every build bootstraps it.
    base = load(ROOT / "matrix.yaml").data.bases["debian12"]
    pins = base_resolver.pins(base_lock.read(ROOT, "debian12", DEFAULT))
    refs = [bases.bootstrap(docker_client, f"repro-test-{n}", base, tmp_path / n, print, pins=pins).ref for n in ("a", "b")]
    try:
        first, second = (docker_client.images.get(r).id for r in refs)
        assert first == second, f"{first} != {second}\n" + _differences(docker_client, first, second)
    finally:
        for r in refs:
            docker_client.images.remove(r)
