"""Benchmark: the arm64 build of one image against its amd64 build and against a fully emulated
pip install. Prints figures; asserts nothing.

For IMAGE (default: the scikit-learn 1.9 image on Debian 12), whose parent must already be built
for both platforms (``builder test --select IMAGE`` once), three builds of IMAGE's own layer with the
layer cache off (``--no-cache``; the parent images are reused):

1. linux/amd64, as the builder builds it (uv on the build platform);
2. linux/arm64, as the builder builds it: uv runs on the build platform (amd64) and cross-installs
   the arm64 wheels of ``layer.arm64.lock``; only the image's own steps run under QEMU;
3. linux/arm64 with pip run inside the arm64 parent under QEMU (``pip install --require-hashes
   --no-deps -r layer.arm64.lock``), the way a Dockerfile without a cross stage does it.

Usage: python benchmarks/platforms.py [IMAGE] [--build-dir DIR] (from the repository root).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from builder import engine, files  # noqa: E402
from builder.engine import plugins  # noqa: E402
from builder.engine.sources import Sources, wheelhouse_image  # noqa: E402
from builder.generate import lock  # noqa: E402
from builder.matrix import load as load_matrix  # noqa: E402
from builder.matrix import naming  # noqa: E402
from builder.matrix.platform import PLATFORMS, Platform  # noqa: E402

AMD64, ARM64 = PLATFORMS["linux/amd64"], PLATFORMS["linux/arm64"]

IMAGE = "sklearn-1.9-debian12-py311-cpu-inference"


def timed_build(context: Path, platform: Platform, args: dict[str, str], secrets: list[str]) -> float:
    cmd = ["docker", "buildx", "build", "--no-cache", "--progress=plain", "--platform", platform.name, "--load",
           "-t", f"builder-bench-platforms:{platform.arch}"]
    cmd += [a for k, v in args.items() for a in ("--build-arg", f"{k}={v}")]
    cmd += [a for s in secrets for a in ("--secret", s)]
    start = time.monotonic()
    r = subprocess.run([*cmd, str(context)], capture_output=True, text=True)
    seconds = time.monotonic() - start
    if r.returncode != 0:
        raise SystemExit(f"build for {platform} failed:\n{r.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", default=IMAGE)
    parser.add_argument("--build-dir", type=Path, default=ROOT / files.BUILD_DIR, help="The build folder.")
    ns = parser.parse_args()
    name = ns.image
    m = load_matrix(ROOT / "matrix.yaml")
    spec = m.image(name)
    if ARM64 not in spec.platforms or spec.parent is None:
        raise SystemExit(f"{name} must be a child image built for linux/arm64")
    client = engine.client(ns.build_dir)
    plugins.ensure_buildx(ns.build_dir)
    engine.ensure_emulation(ARM64)
    repo = naming.repository(engine.LOCAL_REGISTRY, spec.parent)
    parent = {p: f"{repo}:latest" + p.suffix for p in spec.platforms}
    for ref in parent.values():
        client.images.get(ref)  # raises ImageNotFound: run `builder test --select IMAGE` first
    sources = Sources.from_env()
    wheelhouse = wheelhouse_image(client, sources.wheelhouse)
    context = ROOT / "images" / name
    figures = {}
    with sources.secrets() as secrets:
        for platform in (AMD64, ARM64):
            figures[platform.name] = timed_build(context, platform, {"PARENT_IMAGE": parent[platform],
                                                                     "BUILD_PARENT_IMAGE": parent[AMD64],
                                                                "WHEELHOUSE_IMAGE": wheelhouse}, secrets)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / lock.layer_file(ARM64)).write_text((context / lock.layer_file(ARM64)).read_text())
            (Path(tmp) / "Dockerfile").write_text(
                "ARG PARENT_IMAGE\nFROM ${PARENT_IMAGE}\nUSER 0\n"
                f"COPY {lock.layer_file(ARM64)} /tmp/layer.lock\n"
                "RUN --mount=type=secret,id=pip.conf --mount=type=secret,id=ca.pem \\\n"
                "    pip-install --require-hashes --no-deps --only-binary :all: -r /tmp/layer.lock\nUSER 1000\n")
            figures["emulated pip"] = timed_build(Path(tmp), ARM64, {"PARENT_IMAGE": parent[ARM64]},
                                                  secrets)
    amd, arm, pip = figures["linux/amd64"], figures["linux/arm64"], figures["emulated pip"]
    print(json.dumps({"image": name, "seconds": {k: round(v, 1) for k, v in figures.items()}}))
    print(f"{name}, its own layer, uncached:")
    print(f"  linux/amd64                          {amd:7.1f} s")
    print(f"  linux/arm64, cross-installed wheels  {arm:7.1f} s  ({arm / amd:.2f}x amd64)")
    print(f"  linux/arm64, pip under QEMU          {pip:7.1f} s  ({pip / arm:.2f}x the cross-installed build)")


if __name__ == "__main__":
    main()
