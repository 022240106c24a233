"""The child processes a run starts (buildx, the smoke tests' pytest), so an interrupted run can stop
them all: each gets SIGINT (pytest then runs its fixtures' clean-up, which removes the scoring
containers; buildx cancels its build), and SIGKILL if it is still there after a grace period.

Children run in a process group of their own, so a Ctrl-C in the terminal reaches only the
builder, which then decides what to stop and records what happened.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

_running: set[subprocess.Popen] = set()
_lock = threading.Lock()
_stopping = threading.Event()


class Interrupted(Exception):
    """The run was interrupted (SIGINT); raised instead of starting new work."""


def start(cmd: list[str], **kwargs) -> subprocess.Popen:
    """``subprocess.Popen(cmd, **kwargs)`` in a new session, remembered until :func:`forget`.
    Raises Interrupted when the run is being stopped."""
    with _lock:
        if _stopping.is_set():
            raise Interrupted("the run was interrupted")
        proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
        _running.add(proc)
    return proc


def forget(proc: subprocess.Popen) -> None:
    """Stop tracking ``proc`` (it has ended)."""
    with _lock:
        _running.discard(proc)


def stopping() -> bool:
    """True once :func:`stop_all` was called."""
    return _stopping.is_set()


def stop_all(grace: float = 60.0) -> None:
    """Refuse new children and stop the running ones: SIGINT to each one's process group, then
    SIGKILL to those still alive after ``grace`` seconds."""
    _stopping.set()
    with _lock:
        procs = list(_running)
    for proc in procs:
        _signal(proc, signal.SIGINT)
    deadline = time.monotonic() + grace
    for proc in procs:
        stop(proc, max(0.0, deadline - time.monotonic()), signalled=True)


def stop(proc: subprocess.Popen, grace: float = 60.0, signalled: bool = False) -> None:
    """Stop one child: SIGINT to its process group (unless ``signalled`` already), then SIGKILL
    after ``grace`` seconds; returns once it has ended."""
    if not signalled:
        _signal(proc, signal.SIGINT)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        _signal(proc, signal.SIGKILL)
        proc.wait()


def _signal(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
