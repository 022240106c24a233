"""Benchmark of the main job on this machine. Prints figures; asserts nothing.

1. cold build + smoke test of the selected images with the Engine's layer cache ignored
   (`builder test --no-cache`): wall seconds, and each image's build seconds;
2. two no-op reruns (`builder build`): wall seconds, and whether every image id stayed the same
   (the first follows the --no-cache build, the second a normal one);
3. per-image size, the sum of image sizes against the bytes their layers really take on disk
   (docker-py's ``df()``, the data behind ``docker system df -v``);
4. seconds from container start to a healthy ``GET /`` per image (median of 3 runs of the
   model-free entry script of tests/by_image/minimal).

Usage: python benchmarks/bench.py [--select GLOB]... (from the repository root).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from builder import engine  # noqa: E402
from builder.smoke import wait_healthy  # noqa: E402


def run(args: list[str], build_dir: Path) -> tuple[float, dict[str, dict]]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "builder.cli", *args, "--build-dir", str(build_dir)], cwd=ROOT,
                          capture_output=True, text=True)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
    report = json.loads((build_dir / "report.json").read_text())["images"]
    return seconds, {r["name"]: r for r in report}


def healthy_seconds(client, image: str, runs: int = 3) -> float:
    app = ROOT / "tests" / "by_image" / "minimal"
    samples = []
    for _ in range(runs):
        start = time.monotonic()
        c = client.containers.run(image, detach=True, ports={"5001/tcp": ("127.0.0.1", None)},
                                  volumes={str(app): {"bind": "/var/azureml-app", "mode": "ro"}})
        try:
            wait_healthy(c, start, 300)
            samples.append(time.monotonic() - start)
        finally:
            c.remove(force=True)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--select", action="append", default=[])
    ns = parser.parse_args()
    select = [a for s in ns.select for a in ("--select", s)]
    client = engine.client(ROOT / "build")
    out = ROOT / "build" / "bench"

    cold_s, cold = run(["test", "--no-cache", *select], out / "cold")
    noop_s, noop = run(["build", *select], out / "noop")
    noop2_s, noop2 = run(["build", *select], out / "noop2")
    print(f"cold build + smoke test (no layer cache): {cold_s:8.1f} s wall, "
          f"{sum(r['build_seconds'] or 0 for r in cold.values()):.1f} s of it building")
    for label, seconds, after, before in (("no-op rebuild after the cold build:", noop_s, noop, cold),
                                          ("second no-op rebuild:", noop2_s, noop2, noop)):
        same = sum(after[n]["image_id"] == before[n]["image_id"] for n in before)
        cached = sum(r["cached_steps"] or 0 for r in after.values())
        steps = sum(r["steps"] or 0 for r in after.values())
        print(f"{label:41} {seconds:8.1f} s wall; {same}/{len(before)} image ids unchanged; "
              f"{cached}/{steps} steps from cache (ARG and FROM steps never say so)")
    print()
    print(f"{'image':48} {'status':12} {'build s':>8} {'size MB':>9} {'healthy s':>10}")
    ids = set()
    for name, r in cold.items():
        healthy = healthy_seconds(client, r["image_id"]) if r["status"] == "tested" else float("nan")
        ids.add(r["image_id"])
        print(f"{name:48} {r['status']:12} {r['build_seconds'] or 0:8.1f} {(r['size_bytes'] or 0) / 1e6:9.1f} "
              f"{healthy:10.2f}")
    df = client.df()
    ours = [i for i in df["Images"] if i["Id"] in ids]
    total = sum(i["Size"] for i in ours)
    unique = sum(i["Size"] - max(i.get("SharedSize", 0), 0) for i in ours)
    shared = max((max(i.get("SharedSize", 0), 0) for i in ours), default=0)
    print()
    print(f"sum of image sizes:        {total / 1e6:10.1f} MB")
    print(f"unique bytes per image:    {unique / 1e6:10.1f} MB (sum of each image's layers no other image has)")
    print(f"largest shared part:       {shared / 1e6:10.1f} MB (parent layers counted once)")
    print(f"on disk, about:            {(unique + shared) / 1e6:10.1f} MB")
    print(f"all layers on this Engine: {df['LayersSize'] / 1e6:10.1f} MB")


if __name__ == "__main__":
    main()
