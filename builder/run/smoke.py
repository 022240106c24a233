"""Smoke test: takes a built image, serves a real model from it and checks its predictions; gives a
:class:`TestResult`.

Test selection comes from the matrix: an image runs the test folders (``tests/by_image/<framework>``)
of its own framework and of every ancestor, so a child keeps its parent's serving contract. pytest
runs in a subprocess with ``BUILDER_TEST_IMAGE`` set; its output and a JUnit XML file go to the logs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

from pydantic import TypeAdapter, ValidationError

from builder import files
from builder.engine import children
from builder.generate.lock import Lock
from builder.matrix import ImageSpec, inputs
from builder.matrix.schema import Runtime
from builder.run.report import GpuKey, GpuValue


def process_table(container) -> list[dict]:
    """Every process of ``container`` (docker-py) as the host's ``ps`` sees it through ``docker top``:
    ``[{"pid": int, "ppid": int, "uid": int, "args": str}]`` (host pids; the Engine needs the pid
    column to match processes to the container). One reading: the table of that instant."""
    top = container.top(ps_args="-o pid,ppid,uid,args")
    titles = [t.strip().upper() for t in top["Titles"]]
    col = {name: titles.index(name) for name in ("PID", "PPID", "UID")}
    args = titles.index("COMMAND") if "COMMAND" in titles else len(titles) - 1
    return [{"pid": int(row[col["PID"]]), "ppid": int(row[col["PPID"]]), "uid": int(row[col["UID"]]),
             "args": row[args]} for row in top["Processes"]]


def process_uids(container) -> list[int]:
    """The uids of every process in ``container`` (see :func:`process_table`)."""
    return [p["uid"] for p in process_table(container)]


def gunicorn_workers(table: list[dict]) -> list[dict]:
    """The worker processes in a :func:`process_table` of a serving container, found by role:
    the container's init (tini: the one process whose parent is outside the container) starts the
    server, whose process is gunicorn's master (azmlinfsrv runs gunicorn in-process), and the
    master's children are its workers (https://docs.gunicorn.org/en/stable/design.html). Helpers
    a worker starts (ctypes' ``ldconfig -p``, say) are the worker's children, so they never count."""
    pids = {p["pid"] for p in table}
    init = [p["pid"] for p in table if p["ppid"] not in pids]
    masters = [p["pid"] for p in table if p["ppid"] in init]
    return [p for p in table if p["ppid"] in masters]


def wait_workers(container, count: int, timeout: float, poll: float = 0.5) -> list[dict]:
    """Wait until ``container``'s gunicorn master has exactly ``count`` workers
    (:func:`gunicorn_workers`): the event that the last worker was forked and no extra one remains.
    A worker that boots slowly, or is replaced, only delays it. ``timeout`` is in seconds.

    Returns the workers. Raises AssertionError with the last process table and the log tail when
    the count was not reached in time, or when the container exits."""
    deadline = time.monotonic() + timeout
    table: list[dict] = []
    while True:
        container.reload()
        if container.status in ("exited", "dead"):
            break
        table = process_table(container)
        workers = gunicorn_workers(table)
        if len(workers) == count:
            return workers
        if time.monotonic() >= deadline:
            break
        time.sleep(poll)
    shown = "\n".join(f"  pid {p['pid']} ppid {p['ppid']} uid {p['uid']}: {p['args']}" for p in table)
    raise AssertionError(f"not exactly {count} gunicorn worker(s) within {timeout:.0f} s (container "
                         f"{container.status}); last process table:\n{shown}\n"
                         f"log tail:\n{container.logs().decode(errors='replace')[-3000:]}")


@dataclass
class TestResult:
    """Outcome of one image's smoke test. ``seconds`` is wall time; ``summary`` is pytest's last line;
    ``container_logs`` are the scoring containers' logs (one file per test folder)."""

    __test__ = False  # not a pytest test class

    name: str
    ok: bool
    seconds: float
    log_path: Path
    summary: str
    container_logs: list[Path] = field(default_factory=list)
    seconds_to_healthy: float | None = None
    gpu: dict[str, str] = field(default_factory=dict)

    def log_tail(self, lines: int = 100) -> str:
        """The last ``lines`` lines of each scoring container's log, each under ``== <file name>``."""
        return "".join(f"== {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-lines:]) + "\n"
                       for p in self.container_logs)


def folders(spec: ImageSpec, tests_root: Path) -> list[Path]:
    """The test folders for ``spec``: its ancestors' and its own, root first; a GPU image adds
    ``gpu`` (CUDA checks every GPU image shares) and ``<framework>-gpu`` (what the framework links).

    Raises FileNotFoundError naming a framework that has no folder (every framework must be tested).
    """
    out = []
    names = list(spec.ancestors) + (["gpu", f"{spec.framework}-gpu"] if spec.device == "gpu" else [])
    for framework in names:
        folder = tests_root / framework
        if not folder.is_dir():
            raise FileNotFoundError(f"no smoke tests for framework {framework!r}: {folder} is missing")
        out.append(folder)
    return out


#: Seconds from a scoring container's start to a healthy ``GET /`` on the machine's own platform
#: (TensorFlow imports slowly).
HEALTH_TIMEOUT = 180.0
#: How much longer every wait is for an image of another platform, run under QEMU user emulation.
#: Measured here: three workers of the Debian 13 scikit-learn image booted and imported
#: scikit-learn under QEMU (arm64 on 2 x86_64 cores, another smoke test beside them) in more than
#: 120 s; the whole arm64 test folder took 633 s against 30-60 s natively.
EMULATION_SLOWDOWN = 4


def expectations(spec: ImageSpec, runtime: Runtime, image_lock: Lock, emulated: bool = False) -> dict:
    """What the tests may check an image against and how to run it (passed as JSON in
    BUILDER_TEST_SPEC): its name, framework, version, device, python, CUDA/cuDNN, the minimum NVIDIA
    driver (``driver_min``, compat.yaml's ``drivers``) and NCCL of its pins, the nvidia-* wheels
    it pins (from compat.yaml, through the spec's requirements), its lock (``{name: version}``) and
    the lock's digest, from the matrix's runtime the server's port, the app root, the venv, the
    user id and where models are mounted, ``slowdown`` (:data:`EMULATION_SLOWDOWN` when the image
    runs ``emulated``, else 1: the factor of the tests' own waits) and ``health_timeout``: the
    seconds a scoring container gets to answer ``GET /`` (:data:`HEALTH_TIMEOUT` times ``slowdown``)."""
    wheels = {n: v for n, v in spec.pins().items() if n.startswith("nvidia-")}
    slowdown = EMULATION_SLOWDOWN if emulated else 1
    return {"name": spec.name, "framework": spec.framework, "version": spec.version, "device": spec.device,
            "python": spec.python, "cuda": spec.cuda, "cudnn": spec.cudnn, "driver_min": spec.driver_min,
            "nccl": spec.nccl, "wheels": wheels,
            "package": spec.package, "port": runtime.port, "app_root": runtime.app_root, "uid": runtime.uid,
            "model_mount": runtime.model_mount, "venv": runtime.venv, "lock": image_lock.versions(),
            "lock_digest": image_lock.digest, "slowdown": slowdown, "health_timeout": HEALTH_TIMEOUT * slowdown}


def run(spec: ImageSpec, runtime: Runtime, image_lock: Lock, image: str, tests_root: Path, logs_dir: Path,
        timeout: float = 1800.0, label: str | None = None, emulated: bool = False) -> TestResult:
    """Run ``spec``'s smoke tests against ``image`` (a reference the Engine knows), built from
    ``image_lock``; ``label`` names the logs (default: the image's name; ``<name>-arm64`` for
    another platform's image). An image of another platform runs under QEMU emulation: say so
    with ``emulated``, which makes every wait :data:`EMULATION_SLOWDOWN` times longer.

    ``timeout`` (seconds) bounds the whole pytest run. Never raises for a failing test; the result
    has ``ok=False`` and the log holds pytest's report, including the failing container's output.
    """
    files.make_folder(logs_dir)
    label = label or spec.name
    log_path = logs_dir / f"{label}.test.log"
    junit = logs_dir / f"{label}.junit.xml"
    container_logs = logs_dir / f"{label}.containers"
    files.make_folder(container_logs)
    expected = expectations(spec, runtime, image_lock, emulated)
    env = {**os.environ, "BUILDER_TEST_IMAGE": image, "BUILDER_TEST_LOGS": str(container_logs.resolve()),
           "BUILDER_TEST_SPEC": json.dumps(expected)}
    timeout *= expected["slowdown"]
    start = time.monotonic()
    private = Path(tempfile.mkdtemp(prefix=f".{label[:40]}-junit-", dir=logs_dir))  # pytest's own writes
    try:
        code = _pytest(spec, tests_root, private / "junit.xml", log_path, env, timeout)
        healthy = _healthy_seconds(private / "junit.xml")  # this run's figure, never an earlier run's
        gpu = gpu_properties(private / "junit.xml")
        if (private / "junit.xml").is_file():
            files.copy_atomic(private / "junit.xml", junit)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    return TestResult(spec.name, code == 0, time.monotonic() - start, log_path,
                      inputs.one_line(lines[-1]) if lines else "", sorted(container_logs.glob("*.log")), healthy, gpu)


def _pytest(spec: ImageSpec, tests_root: Path, junit: Path, log_path: Path, env: dict[str, str],
            timeout: float) -> int:
    # Run the image's test folders in a pytest child (output to log_path); its exit code, or -1
    # when it could not start or ran out of time (said at the end of the log).
    try:
        paths = [str(p) for p in folders(spec, tests_root)]
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "-q", "-rfE",
               f"--rootdir={tests_root}", f"--junitxml={junit}", *paths]
        with files.open_log(log_path) as log:
            proc = children.start(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                children.stop(proc)  # SIGINT first: the fixtures remove their scoring containers
                raise
            finally:
                children.forget(proc)
    except FileNotFoundError as exc:
        with files.open_log(log_path) as log:
            log.write(f"{exc}\n".encode())
        code = -1
    except subprocess.TimeoutExpired:
        with files.open_log(log_path, append=True) as log:
            log.write(f"\nsmoke test timed out after {timeout:.0f} s\n".encode())
        code = -1
    return code


def _healthy_seconds(junit: Path) -> float | None:
    # The smoke tests record seconds-to-healthy as a JUnit property (see tests/by_image/conftest.py).
    if not junit.exists():
        return None
    try:  # a pytest stopped at its deadline may leave half a file
        values = [float(p.get("value")) for p in ET.parse(junit).iter("property")
                  if p.get("name") == "seconds_to_healthy"]
    except (ET.ParseError, TypeError, ValueError):
        return None
    return round(min(values), 2) if values else None


_GPU_VALUE = TypeAdapter(GpuValue)


def gpu_properties(junit: Path) -> dict[str, str]:
    """``{key: value}`` of the ``gpu.<key>`` properties the GPU smoke tests recorded in ``junit``
    (tests/by_image/gpu/test_gpu_ready.py; keys :data:`builder.run.report.GpuKey`). A key not among
    them, or a value not of :data:`builder.run.report.GpuValue`'s grammar, is left out; ``verified-on``
    is ``gpu`` when any test recorded it so (a GPU test passed), else ``cpu``. ``{}`` for a missing
    or broken file (a pytest stopped at its deadline may leave half a file)."""
    if not junit.exists():
        return {}
    try:
        found = [(p.get("name") or "", p.get("value") or "") for p in ET.parse(junit).iter("property")]
    except ET.ParseError:
        return {}
    out: dict[str, str] = {}
    keys = set(get_args(GpuKey))
    for name, value in found:
        key = name.removeprefix("gpu.")
        if not name.startswith("gpu.") or key not in keys:
            continue
        try:
            _GPU_VALUE.validate_python(value)
        except ValidationError:
            continue
        if key == "verified-on" and out.get(key) == "gpu":
            continue
        out[key] = value
    return out
