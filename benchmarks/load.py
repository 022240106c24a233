"""Served load on the scikit-learn image: wrk drives ``POST /score`` of a random-forest model.

Trains a RandomForestClassifier (100 trees) on the iris data inside the image, serves it with
tests/by_image/sklearn/score.py, and runs wrk (Debian's package, installed when missing) on
loopback at 32 connections for 30 s: once with WORKER_COUNT=1 and once with the image's default
(the container's CPU quota, else its CPUs). Prints requests/s, latency percentiles and errors
(socket errors plus non-2xx answers). Asserts nothing; the loops are bounded by wrk's duration.

Usage: python benchmarks/load.py [IMAGE] [--seconds 30] [--connections 32]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from builder import engine, files  # noqa: E402
from builder.extend.deploy import wait_healthy  # noqa: E402
from builder.matrix import load as load_matrix  # noqa: E402

#: The server's port, the app root and where a model is mounted: the matrix's runtime, as every image has them.
RUNTIME = load_matrix(ROOT / "matrix.yaml").data.runtime

IMAGE = "127.0.0.1:5000/sklearn-1.9-debian12-py311-cpu-inference:latest"
TRAIN = """
import joblib, numpy as np
from sklearn.ensemble import RandomForestClassifier
t = np.loadtxt('/data/iris.csv', delimiter=',', skiprows=1)
joblib.dump(RandomForestClassifier(n_estimators=100, random_state=0).fit(t[:, :4], t[:, 4].astype(int)),
            '/model/model.joblib')
"""
BODY = '{"data": [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]]}'


def wrk_script(folder: Path) -> Path:
    path = folder / "post.lua"
    path.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                    f"wrk.body = '{BODY}'\n")
    return path


def run_wrk(url: str, script: Path, seconds: int, connections: int) -> dict:
    out = subprocess.run(["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s",
                          "--latency", "-s", str(script), f"{url}/score"], capture_output=True, text=True,
                         timeout=seconds + 60, check=True).stdout
    def seconds_of(text: str) -> float:
        value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
        return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]
    pct = {p: seconds_of(v) for p, v in re.findall(r"^\s+(50|90|99)%\s+(\S+)$", out, flags=re.M)}
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "requests": int(re.search(r"(\d+) requests in", out).group(1)),
            "p50": pct.get("50"), "p99": pct.get("99"),
            "errors": (sum(map(int, socket.groups())) if socket else 0) + (int(non2xx.group(1)) if non2xx else 0),
            "raw": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", default=IMAGE)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--build-dir", type=Path, default=ROOT / files.BUILD_DIR, help="The build folder (dockerd's log).")
    ns = parser.parse_args()
    engine.apt_install("wrk")
    client = engine.client(ns.build_dir)
    with tempfile.TemporaryDirectory(prefix="load-") as tmp:
        model = Path(tmp) / "model"
        model.mkdir()
        model.chmod(0o777)
        client.containers.run(ns.image, entrypoint=["python3", "-c", TRAIN], remove=True, network_disabled=True,
                              volumes={str(ROOT / "tests" / "data"): {"bind": "/data", "mode": "ro"},
                                       str(model): {"bind": "/model", "mode": "rw"}})
        script = wrk_script(Path(tmp))
        for label, env in (("WORKER_COUNT=1", {"WORKER_COUNT": "1"}), ("default workers", {})):
            start = time.monotonic()
            container = client.containers.run(
                ns.image, detach=True, ports={f"{RUNTIME.port}/tcp": ("127.0.0.1", None)},
                environment={**env, "AZUREML_MODEL_DIR": RUNTIME.model_mount},
                volumes={str(ROOT / "tests" / "by_image" / "sklearn"): {"bind": RUNTIME.app_root, "mode": "ro"},
                         str(model): {"bind": RUNTIME.model_mount, "mode": "ro"}})
            try:
                url = wait_healthy(container, start, 120, RUNTIME.port)
                workers = re.search(r"serve: (\d+) worker", container.logs().decode()).group(1)
                r = run_wrk(url, script, ns.seconds, ns.connections)
                print(f"{label:16} ({workers} workers): {r['rps']:8.1f} requests/s, {r['requests']} requests, "
                      f"p50 {r['p50'] * 1000:.1f} ms, p99 {r['p99'] * 1000:.1f} ms, {r['errors']} errors")
                if r["errors"]:
                    print(r["raw"])
                    print(container.logs(tail=30).decode(errors="replace"))
            finally:
                container.remove(force=True)


if __name__ == "__main__":
    main()
