"""Benchmark of BuildKit's registry cache for a fresh runner. Prints figures; asserts nothing.

A runner of the release workflow starts with an empty Engine. This script plays three runners on
this machine, one after another, each a Docker Engine on its own empty data root (the project's
Engine is stopped first and started again at the end: never two at once):

1. **cold**: ``builder build`` of the selected images (default: the scikit-learn image of Debian 12
   and its parent, linux/amd64) on an empty data root, no cache registry;
2. **exporting**: the same on another empty data root with ``--cache-registry``: it builds cold and
   pushes each image's cache (``mode=max``) to the local registry;
3. **from the registry**: the same on a third empty data root with ``--cache-registry``: it imports
   the cache.

Printed: each build's wall seconds and steps taken from the cache. uv's cache mount is not part of
BuildKit's exported cache; the wheels reach a fresh runner inside the cached layers of the package
stage (``/opt/packages``), so a cache hit downloads none of them.

Usage: python benchmarks/registry_cache.py [--select GLOB]... (from the repository root, as root).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from builder import engine  # noqa: E402
from builder.engine import daemon  # noqa: E402

BUILD = ROOT / "build" / "bench-cache"
PID_FILE = Path("/var/run/docker.pid")


def stop_engine(deadline_s: float = 300) -> None:
    """Stop the dockerd that answers (SIGTERM) and wait until it no longer answers."""
    if not PID_FILE.exists():
        return
    os.kill(int(PID_FILE.read_text().strip()), signal.SIGTERM)
    deadline = time.monotonic() + deadline_s
    while daemon._ping() is not None or PID_FILE.exists():
        if time.monotonic() > deadline:
            raise SystemExit("dockerd did not stop")
        time.sleep(0.5)


def fresh_engine(name: str) -> None:
    """Start dockerd on an empty data root of its own (the containerd image store on)."""
    root = BUILD / name / "data-root"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    config = BUILD / name / "daemon.json"
    config.write_text(json.dumps({**daemon.CONTAINERD_STORE, "data-root": str(root), "exec-root": f"/run/docker-{name}"}))
    daemon.start(BUILD / name, timeout=300, config=config)


def build(name: str, select: list[str], cache: str | None) -> tuple[float, float, str]:
    """``builder build`` on the running Engine: (wall seconds, including the base's bootstrap; the
    builds' own seconds; "cached/steps" per image)."""
    args = [sys.executable, "-m", "builder.cli", "build", "--platform", "linux/amd64", "--no-space-check",
            "--build-dir", str(BUILD / name / "build"), *(a for s in select for a in ("--select", s))]
    if cache:
        args += ["--cache-registry", cache]
    start = time.monotonic()
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    seconds = time.monotonic() - start
    if r.returncode != 0:
        raise SystemExit(f"{name}: builder build failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    report = json.loads((BUILD / name / "build" / "report.json").read_text())["images"]
    steps = ", ".join(f"{e['name']} {b['cached_steps']}/{b['steps']}" for e in report for b in e["platforms"])
    return seconds, sum(b["build_seconds"] for e in report for b in e["platforms"]), steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--select", action="append", default=None)
    select = parser.parse_args().select or ["sklearn-1.9-debian12-py311-cpu-inference"]
    registry = engine.ensure_registry(ROOT / "build")
    cache = f"{registry}/bench-cache-{int(time.time())}"
    stop_engine()
    try:
        figures = {}
        for name, ref in (("cold", None), ("exporting", cache), ("from-registry", cache)):
            fresh_engine(name)
            figures[name] = build(name, select, ref)
            stop_engine()
            shutil.rmtree(BUILD / name / "data-root", ignore_errors=True)
    finally:
        engine.client(ROOT / "build", timeout=300)
    print(f"{'runner':16} {'wall s':>8} {'build s':>8}  steps from cache")
    for name, (seconds, building, steps) in figures.items():
        print(f"{name:16} {seconds:8.1f} {building:8.1f}  {steps}")


if __name__ == "__main__":
    main()
