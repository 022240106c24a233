"""Benchmark of incremental releases (issue 22) on this machine. Prints figures; asserts nothing.

Works on a copy of matrix.yaml, compat.yaml, templates/ and images/ in build/bench/incremental (the
one-pin change is made there, never in the repository), and publishes to its own namespace of the
local registry (``127.0.0.1:5000/bench-incremental``), so the project's own ``latest`` tags never move.

1. ``builder all`` of the selection (default: the minimal image, scikit-learn 1.9 and 1.8 on
   Debian 12, every platform of each): publishes each image with its build id;
2. a no-op ``builder all`` right after it: wall seconds, images up to date, builds and smoke tests run;
3. the same after every local image of the selection was removed (a fresh runner whose bases and
   BuildKit cache stay): wall seconds, images up to date, local images afterwards (nothing is
   pulled when nothing changed);
4. one pin changed in the scikit-learn 1.8 image (``joblib``, through its lock): which images were
   built again.

With ``--split``, the release workflow's path instead: the jobs ``builder ci-matrix --by-platform``
gives (one per image tree and platform, each ``builder all --by-platform --prune-cache``, as the
release workflow runs it, each with its own build folder) and ``builder merge``, twice. For the second, no-op release it prints each job's and the
merge's wall seconds, the images up to date, builds and smoke tests run, and the registry's write
requests into the namespace (PUT, POST, PATCH, DELETE in its log: uploads of blobs and manifests).
``--platform`` keeps only the jobs of that platform (repeatable): on an amd64 machine an arm64 job
cannot build a child image (its build stage needs the parent for the machine's platform), so the
whole matrix's amd64 jobs are measured alone there; the merge, which needs every platform's job,
is then left out. ``--first-whole`` instead makes the first release one ``builder all --by-platform``
of every platform (the arm64 children build beside their parents' amd64 builds) and its merge: it
publishes the same per-platform tags and build ids, so the no-op release, split as the workflow
splits it (every job, then the merge), is measured whole on one amd64 machine.

Usage: python benchmarks/incremental.py [--split [--platform P]...] [--select GLOB]... (from the
repository root).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench import PIN, workspace  # noqa: E402

from builder import engine, files  # noqa: E402
from builder.matrix.platform import PLATFORMS  # noqa: E402
from builder.run import report_file  # noqa: E402

NAMESPACE = f"{engine.LOCAL_REGISTRY}/bench-incremental"
DEFAULT = ["minimal-debian12-py311-cpu-inference", "sklearn-1.9-debian12-py311-cpu-inference", PIN[0]]


def run(args: list[str], build_dir: Path) -> tuple[float, dict]:
    """``builder all`` with ``args``: (wall seconds, {image name: report entry})."""
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "builder.cli", "all", *args, "--registry", NAMESPACE,
                           "--build-dir", str(build_dir)], cwd=ROOT, capture_output=True, text=True)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
    return seconds, {e.name: e for e in report_file.read(build_dir / "report.json")}


def counts(entries: dict) -> str:
    """``up-to-date 3/3, builds 0, smoke tests 0`` of one run's report entries."""
    up = sum(e.status == "up-to-date" for e in entries.values())
    builds = sum(b.build_seconds is not None for e in entries.values() for b in e.platforms)
    tests = sum(b.test is not None for e in entries.values() for b in e.platforms)
    return f"up-to-date {up}/{len(entries)}, builds {builds}, smoke tests {tests}"


def local_images(client) -> list[str]:
    """The local tags in the benchmark's namespace."""
    return sorted(t for i in client.images.list() for t in i.tags if t.startswith(NAMESPACE + "/"))


def change_pin(space: Path) -> bool:
    """Move one companion pin of the scikit-learn 1.8 image in the workspace's matrix, then lock and
    render that image again (the updater, then the renderer). False when the pin is not there."""
    path = space / "matrix.yaml"
    text = path.read_text()
    if PIN[1] not in text:
        return False
    path.write_text(text.replace(PIN[1], PIN[2], 1))
    common = ["--matrix", str(path), "--images", str(space / "images")]
    subprocess.run([sys.executable, "-m", "builder.cli", "lock", "--select", PIN[0], *common], cwd=ROOT, check=True,
                   capture_output=True)
    subprocess.run([sys.executable, "-m", "builder.cli", "render", *common, "--templates", str(space / "templates")],
                   cwd=ROOT, check=True, capture_output=True)
    return True


def writes(log: Path, offset: int) -> int:
    """The registry's write requests (PUT, POST, PATCH, DELETE) into the benchmark's namespace after
    byte ``offset`` of its log."""
    with log.open("rb") as f:
        f.seek(offset)
        lines = f.read().decode(errors="replace").splitlines()
    path = "/v2/" + NAMESPACE.split("/", 1)[1] + "/"
    return sum(path in line and any(f"http.request.method={m}" in line for m in ("PUT", "POST", "PATCH", "DELETE"))
               for line in lines)


def split_release(common: list[str], jobs: list[dict], work: Path, merge: bool = True) -> None:
    """One release split by platform: every job, then (with ``merge``) the merge of their reports;
    prints each one's wall seconds and counts."""
    reports = []
    for job in jobs:
        select = [a for name in job["images"].split() for a in ("--select", name)]
        folder = work / f"{job['root']}-{job['arch']}"
        narrow = ["--platform", job["platform"]] if job["platform"] else []
        seconds, entries = run([*common, "--by-platform", "--prune-cache", *narrow, *select], folder)
        print(f"  job {job['root']} {job['platform'] or 'every platform'}: {seconds:7.1f} s wall; {counts(entries)}")
        reports += ["--report", str(folder / "report.json")]
    if not merge:
        print("  merge: left out (not every platform's jobs ran)")
        return
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "builder.cli", "merge", *reports, "--registry", NAMESPACE,
                           "--matrix", common[common.index("--matrix") + 1], "--out", str(work / "merged.json"),
                           "--build-dir", str(work / "merge")], cwd=ROOT, capture_output=True, text=True)
    merged = report_file.read(work / "merged.json") if (work / "merged.json").exists() else []
    print(f"  merge: {time.monotonic() - start:7.1f} s wall, exit {proc.returncode}; "
          f"{', '.join(f'{e.name} {e.status}' for e in merged)}")


def split(ns: argparse.Namespace, opts: list[str], common: list[str], work: Path) -> None:
    """``--split``: two releases of the selection split by platform (module doc)."""
    selected = [a for a in opts if a not in common]
    plan = subprocess.run([sys.executable, "-m", "builder.cli", "ci-matrix", "--by-platform", *selected,
                           "--matrix", common[common.index("--matrix") + 1]], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    jobs = [j for j in json.loads(plan.stdout)["include"] if not ns.platform or j["platform"] in ns.platform]
    if ns.first_whole:
        whole = [{"root": "whole", "arch": "all", "platform": None,
                  "images": " ".join(dict.fromkeys(n for j in jobs for n in j["images"].split()))}]
        print("first release as one job of every platform (by platform), then the merge:")
        split_release(common, whole, work / "split-first", merge=True)
    else:
        print(f"first release split by platform ({len(jobs)} jobs{', ' + ' '.join(ns.platform) + ' only' if ns.platform else ''}):")
        split_release(common, jobs, work / "split-first", merge=not ns.platform)
    log = ns.build_dir / "registry" / "registry.log"  # when this build folder's registry answers
    offset = log.stat().st_size if log.exists() else None
    print("no-op release split by platform:")
    split_release(common, jobs, work / "split-noop", merge=not ns.platform)
    counted = writes(log, offset) if offset is not None else f"not counted ({log} is not the registry's log)"
    print(f"  registry writes into {NAMESPACE} during the no-op release: {counted}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--select", action="append", default=[])
    parser.add_argument("--split", action="store_true", help="The release workflow's jobs split by platform, then merge.")
    parser.add_argument("--platform", action="append", default=[], choices=list(PLATFORMS),
                        help="With --split: only the jobs of this platform (repeatable); the merge is left out.")
    parser.add_argument("--first-whole", action="store_true",
                        help="With --split: make the first release one by-platform job of every platform, then the "
                             "merge (an amd64 machine builds an arm64 child only beside its parent's amd64 build); "
                             "the no-op release is split as the workflow splits it.")
    parser.add_argument("--build-dir", type=Path, default=ROOT / files.BUILD_DIR)
    ns = parser.parse_args()
    work = ns.build_dir / "bench" / "incremental"
    space = work / "workspace"
    common = workspace(space)
    opts = [*common, *(a for s in ns.select or DEFAULT for a in ("--select", s))]
    client = engine.client(ns.build_dir)
    if ns.split:
        engine.ensure_registry(ns.build_dir)
        return split(ns, opts, common, work)

    first_s, first = run(opts, work / "first")
    print(f"first `builder all` ({len(first)} images): {first_s:7.1f} s wall; "
          f"{', '.join(f'{n} {e.status}' for n, e in first.items())}")
    noop_s, noop = run(opts, work / "noop")
    print(f"no-op `builder all`: {noop_s:7.1f} s wall; {counts(noop)}")
    for tag in local_images(client):
        client.api.remove_image(tag, noprune=False)
    fresh_s, fresh = run(opts, work / "fresh")
    print(f"no-op `builder all` with no local image of the selection: {fresh_s:7.1f} s wall; {counts(fresh)}; "
          f"local images afterwards: {len(local_images(client))}")
    if change_pin(space):
        pin_s, pin = run(opts, work / "pin")
        built = [n for n, e in pin.items() if e.status != "up-to-date"]
        print(f"after one pin change ({PIN[0]}: {PIN[1]} -> {PIN[2]}): {pin_s:7.1f} s wall; {counts(pin)}; "
              f"built again: {', '.join(built) or 'none'}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
