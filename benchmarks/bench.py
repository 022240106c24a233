"""Benchmark of the main job on this machine. Prints figures; asserts nothing.

Works on a copy of matrix.yaml, compat.yaml, templates/, images/ and bases/ in build/bench/workspace (the
one-pin change is made there, never in the repository). By default it measures the CPU images whose
Python is this interpreter's (the references install into venvs of this interpreter).

1. references, measured in this run for the same images' package sets (each image's own pins plus
   its ancestors'):
   - serial: for each image, a fresh venv plus ``pip install`` of its set, one after another;
   - the limit: every image's linux/amd64 lock at once, each into a fresh venv, with
     ``uv pip install --no-cache --require-hashes --compile-bytecode`` (what the images install,
     bytecode included), plus one gzip of each venv's installed bytes (the compression a publisher
     cannot skip), the venvs again in parallel;
2. a cold ``builder build``: BuildKit's cache (layers and uv's cache mount) pruned first; its ratio
   to both references (the goal: at most 1.5 times the limit); peak number of concurrent builds;
   the disk growth the run printed; then the same cold build of every platform
   of the images (a child's build of a platform waits for its parent's build of that platform
   only): its ratio to the linux/amd64 one;
3. ``builder all`` right after it (smoke tests, tags, pushes to the local registry);
4. a no-op ``builder build``: wall seconds, image ids unchanged;
5. a rerun after one pin change (one companion of one image moved to another release): wall
   seconds, images rebuilt, bytes received on the machine's network interfaces meanwhile;
6. a ``builder build --no-cache`` and the no-op ``builder build`` right after it;
7. per-image size and seconds from container start to a healthy ``GET /`` (median of 3 runs of the
   model-free entry script of tests/by_image/minimal).

Usage: python benchmarks/bench.py [--select GLOB]... (from the repository root).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from builder import engine, files  # noqa: E402
from builder.engine.sources import Sources  # noqa: E402
from builder.extend.deploy import wait_healthy  # noqa: E402
from builder.matrix import load as load_matrix  # noqa: E402
from builder.matrix import plan  # noqa: E402

#: The server's port and the app root: the matrix's runtime, as every image has them.
RUNTIME = load_matrix(ROOT / "matrix.yaml").data.runtime

PIN = ("sklearn-1.8-debian12-py311-cpu-inference", "joblib: 1.5.3", "joblib: 1.5.2")


def workspace(space: Path) -> list[str]:
    """Copy the inputs into ``space`` and return the builder options that point at them."""
    shutil.rmtree(space, ignore_errors=True)
    space.mkdir(parents=True)
    for name in ("matrix.yaml", "compat.yaml", "docker-bake.json"):
        shutil.copy2(ROOT / name, space / name)
    for name in ("templates", "images", "bases"):
        shutil.copytree(ROOT / name, space / name)
    return ["--matrix", str(space / "matrix.yaml"), "--templates", str(space / "templates"),
            "--images", str(space / "images"), "--tests", str(ROOT / "tests" / "by_image")]


#: The disk line each run printed (``disk (<folder>'s file system): peak +X GB, end +Y GB ...``), by build folder name.
DISK_LINES: dict[str, str] = {}


def builder(args: list[str], build_dir: Path) -> tuple[float, dict]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "builder.cli", *args, "--build-dir", str(build_dir)], cwd=ROOT,
                          capture_output=True, text=True)
    DISK_LINES.update({build_dir.name: line for line in proc.stdout.splitlines() if line.startswith("disk (")})
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
    return seconds, json.loads((build_dir / "report.json").read_text())


def rx_bytes() -> int:
    """Bytes received so far on every network interface but loopback (/proc/net/dev)."""
    total = 0
    for line in Path("/proc/net/dev").read_text().splitlines()[2:]:
        name, data = line.split(":", 1)
        if name.strip() != "lo":
            total += int(data.split()[0])
    return total


def package_sets(specs) -> dict[str, list[str]]:
    """Each image's whole install set: its ancestors' pins and its own."""
    by_name = {s.name: s for s in specs}
    out = {}
    for s in specs:
        chain, cur = [], s
        while cur:
            chain.insert(0, cur)
            cur = by_name.get(cur.parent) if cur.parent else None
        out[s.name] = [str(r) for c in chain for r in c.requirements]
    return out


def serial_pip(sets: dict[str, list[str]], sources: Sources) -> float:
    start = time.monotonic()
    for name, reqs in sets.items():
        with tempfile.TemporaryDirectory(prefix="bench-pip-") as tmp:
            subprocess.run([sys.executable, "-m", "venv", tmp], check=True)
            links = ["--find-links", str(sources.wheelhouse)] if sources.wheelhouse else []
            subprocess.run([f"{tmp}/bin/pip", "install", "--quiet", "--no-cache-dir", *links, *reqs], check=True)
    return time.monotonic() - start


def limit(locks: dict[str, Path], sources: Sources) -> tuple[float, int]:
    """The limit a cold build is measured against: ``(seconds, installed bytes)`` of installing
    every image's lock at once, each into a fresh venv (``uv pip install --no-cache
    --require-hashes --compile-bytecode``), then one gzip (level 6, as BuildKit's default) of each
    venv's files, the venvs in parallel."""
    import uv
    uv_bin = uv.find_uv_bin()
    with tempfile.TemporaryDirectory(prefix="bench-uv-") as tmp:
        venvs = {}
        for name in locks:
            venvs[name] = Path(tmp) / name
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venvs[name])], check=True)
        links = ["--find-links", str(sources.wheelhouse)] if sources.wheelhouse else []

        def install(name: str) -> int:
            subprocess.run([uv_bin, "pip", "install", "--quiet", "--no-cache", "--require-hashes", "--no-deps",
                            "--compile-bytecode", "--python", str(venvs[name] / "bin" / "python"), *links,
                            "-r", str(locks[name])], check=True)
            tar = subprocess.Popen(["tar", "-C", str(venvs[name]), "-cf", "-", "."], stdout=subprocess.PIPE)
            gz = subprocess.run(["gzip", "-6"], stdin=tar.stdout, stdout=subprocess.DEVNULL, check=True)
            tar.wait()
            return sum(f.stat().st_size for f in venvs[name].rglob("*") if f.is_file()) if gz.returncode == 0 else 0

        start = time.monotonic()
        with ThreadPoolExecutor(len(locks)) as pool:
            installed = sum(pool.map(install, locks))
        return time.monotonic() - start, installed


def healthy_seconds(client, image: str, runs: int = 3) -> float:
    app = ROOT / "tests" / "by_image" / "minimal"
    samples = []
    for _ in range(runs):
        start = time.monotonic()
        c = client.containers.run(image, detach=True, ports={f"{RUNTIME.port}/tcp": ("127.0.0.1", None)},
                                  volumes={str(app): {"bind": RUNTIME.app_root, "mode": "ro"}})
        try:
            wait_healthy(c, start, 300, RUNTIME.port)
            samples.append(time.monotonic() - start)
        finally:
            c.remove(force=True)
    return statistics.median(samples)


#: A build's figures when the image has none (it failed before building).
NO_BUILD = {"image_id": None, "build_seconds": None, "uncompressed_bytes": None, "cached_steps": None, "steps": None}


def images_of(report: dict) -> dict[str, dict]:
    """``{name: the image's report with its one build's figures}``: the runs here are linux/amd64 only."""
    return {r["name"]: {**r, **(r["platforms"][0] if r["platforms"] else NO_BUILD)} for r in report["images"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--select", action="append", default=[])
    parser.add_argument("--cold-only", action="store_true",
                        help="Only the limit and the cold linux/amd64 `builder build` (steps 1 and 2's first half).")
    parser.add_argument("--build-dir", type=Path, default=ROOT / files.BUILD_DIR,
                        help="The build folder; the runs go under its bench/.")
    ns = parser.parse_args()
    work = ns.build_dir / "bench"
    space = work / "workspace"
    py = ".".join(platform.python_version_tuple()[:2])
    m = load_matrix(ROOT / "matrix.yaml")
    specs = plan.select(m, ns.select) if ns.select else [
        s for s in m.images() if s.device == "cpu" and s.python == py]
    select = [a for s in specs for a in ("--select", s.name)]
    client = engine.client(ns.build_dir)
    opts = [*workspace(space), "--platform", "linux/amd64"]  # the references install amd64 wheels (benchmarks/platforms.py: arm64)
    sources = Sources.from_env()
    print(f"{len(specs)} images: {', '.join(s.name for s in specs)}")

    python_of = {s.name: s.python for s in specs}
    sets = {name: reqs for name, reqs in package_sets(specs).items() if python_of[name] == py}
    serial = serial_pip(sets, sources) if len(sets) == len(specs) and not ns.cold_only else float("nan")
    locks = {s.name: ROOT / "images" / s.name / "requirements.lock" for s in specs if python_of[s.name] == py}
    parallel, installed = limit(locks, sources) if len(locks) == len(specs) else (float("nan"), 0)

    if ns.cold_only:
        subprocess.run(["docker", "builder", "prune", "--all", "--force"], capture_output=True, check=True)
        cold_s, cold = builder(["build", *opts, *select], work / "cold")
        print(f"the limit (every lock at once into fresh venvs, uv with bytecode, then one gzip of each venv, "
              f"{installed / 1e9:.2f} GB installed): {parallel:7.1f} s")
        print(f"cold `builder build` (BuildKit cache and uv's cache mount pruned): {cold_s:7.1f} s wall; "
              f"{cold_s / parallel:.2f}x the limit (goal: <= 1.5); {DISK_LINES.get('cold', 'disk: -')}")
        for name, r in images_of(cold).items():
            print(f"  {name:48} {r['status']:10} {r['build_seconds'] or 0:7.1f} s")
        return
    subprocess.run(["docker", "builder", "prune", "--all", "--force"], capture_output=True, check=True)
    both_s, both = builder(["build", *opts[:-2], *select], work / "cold-all-platforms")
    subprocess.run(["docker", "builder", "prune", "--all", "--force"], capture_output=True, check=True)
    cold_s, cold = builder(["build", *opts, *select], work / "cold")
    all_s, full = builder(["all", *opts, *select], work / "all")
    noop_s, noop = builder(["build", *opts, *select], work / "noop")
    path = space / "matrix.yaml"
    text = path.read_text()
    changed = PIN[0] in {s.name for s in specs} and PIN[1] in text
    if changed:
        path.write_text(text.replace(PIN[1], PIN[2], 1))
        # the updater first (the image's lock moves one package), then the renderer
        subprocess.run([sys.executable, "-m", "builder.cli", "lock", "--select", PIN[0], "--matrix", str(path),
                        "--images", str(space / "images")], cwd=ROOT, check=True, capture_output=True)
        subprocess.run([sys.executable, "-m", "builder.cli", "render", "--matrix", str(path), "--templates",
                        str(space / "templates"), "--images", str(space / "images")], cwd=ROOT, check=True,
                       capture_output=True)
    rx = rx_bytes()
    pin_s, pin = builder(["build", *opts, *select], work / "pin")
    rx = rx_bytes() - rx
    nocache_s, nocache = builder(["build", "--no-cache", *opts, *select], work / "nocache")
    noop2_s, noop2 = builder(["build", *opts, *select], work / "noop2")

    c, a, n, p = images_of(cold), images_of(full), images_of(noop), images_of(pin)
    print(f"serial reference (fresh venv + pip install, one image after another): {serial:7.1f} s")
    print(f"the limit (every lock at once into fresh venvs, uv with bytecode, then one gzip of each venv, "
          f"{installed / 1e9:.2f} GB installed): {parallel:7.1f} s")
    print(f"cold `builder build` (BuildKit cache and uv's cache mount pruned): {cold_s:7.1f} s wall; "
          f"{cold_s / parallel:.2f}x the limit (goal: <= 1.5), {cold_s / serial:.2f}x the serial pip one; "
          f"peak parallel builds {cold['peak_parallel_builds']} (--jobs {cold['jobs']}); {DISK_LINES.get('cold', 'disk: -')}")
    platforms = sorted({b["platform"] for r in both["images"] for b in r["platforms"] if b.get("image_id")})
    print(f"cold `builder build` of every platform ({', '.join(platforms)}; cache pruned): {both_s:7.1f} s wall; "
          f"{both_s / cold_s:.2f}x the linux/amd64 one; "
          f"{sum(r['status'] == 'built' for r in both['images'])}/{len(both['images'])} built")
    print(f"`builder all` after it (smoke tests, tags, pushes): {all_s:7.1f} s wall; "
          f"{sum(r['status'] in ('published', 'unchanged') for r in a.values())}/{len(a)} published; "
          f"peak parallel builds {full['peak_parallel_builds']}")
    same = sum(n[k]["image_id"] == c[k]["image_id"] for k in c)
    print(f"no-op `builder build`: {noop_s:7.1f} s wall; {same}/{len(c)} image ids unchanged; "
          f"{sum(r['cached_steps'] or 0 for r in n.values())}/{sum(r['steps'] or 0 for r in n.values())} steps cached")
    if changed:
        rebuilt = [k for k in p if p[k]["image_id"] != n[k]["image_id"]]
        print(f"after one pin change ({PIN[0]}: {PIN[1]} -> {PIN[2]}): {pin_s:7.1f} s wall; "
              f"rebuilt {len(rebuilt)}: {', '.join(rebuilt)}; {rx / 1e6:.2f} MB received on the network")
    before, after = images_of(nocache), images_of(noop2)
    same = sum(after[k]["image_id"] == before[k]["image_id"] for k in before)
    print(f"`builder build --no-cache`: {nocache_s:7.1f} s wall; the no-op `builder build` right after it: "
          f"{noop2_s:7.1f} s wall, {same}/{len(before)} image ids unchanged")
    print()
    print(f"{'image':48} {'status':12} {'cold build s':>12} {'size MB':>9} {'healthy s':>10}")
    for name, r in a.items():
        healthy = healthy_seconds(client, r["image_id"]) if r["image_id"] else float("nan")
        print(f"{name:48} {r['status']:12} {c[name]['build_seconds'] or 0:12.1f} {(r['uncompressed_bytes'] or 0) / 1e6:9.1f} "
              f"{healthy:10.2f}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
