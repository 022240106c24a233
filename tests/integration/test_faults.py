"""Faults on real components. In each case: one line per image saying what failed, build/report.json
written, no `latest` (nor any other tag) of an unfinished image in the registry, no scoring container
left running, and the next run completes with no manual clean-up.

- the registry is down, or refuses the credentials, during publish;
- the registry disappears in the middle of a push;
- the Engine stops during a build (the test stops dockerd and lets the builder start it again);
- SIGINT during a build, and during a smoke test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from repo import ROOT
from run_builder import BUILDER, MINIMAL, builder, report

from builder import engine

pytestmark = pytest.mark.engine

SKLEARN = "sklearn-1.9-debian12-py311-cpu-inference"
#: How BuildKit's plain progress names the root image's apt step when it starts (templates/macros.j2).
APT_STEP = "] RUN --mount=type=bind,source=apt."


def started(*args: str, log: Path) -> subprocess.Popen:
    # The builder as a script's background job starts it: SIGINT inherited ignored (POSIX XCU 2.11);
    # Ctrl-C must stop it all the same.
    return subprocess.Popen(["sh", "-c", "trap '' INT; exec \"$@\"", "sh", *BUILDER, *args], cwd=ROOT,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)


def wait_for(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def tags(registry: str, repository: str, auth: tuple | None = None) -> list[str]:
    r = requests.get(f"http://{registry}/v2/{repository}/tags/list", timeout=10, auth=auth)
    return [] if r.status_code == 404 else (r.json().get("tags") or [])


def event_lines(output: str, name: str, word: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(f"{name} ") and word in line]


def own_containers(docker_client, namespace: str, running_only: bool = False) -> list[str]:
    """This test's containers: those made from an image of the run's registry ``namespace`` (the smoke
    tests' scoring, training and probe containers all are), never the rest of the Engine's.
    ``<name> <status>`` of each."""
    return [f"{c.name} {c.status}" for c in docker_client.containers.list(all=not running_only)
            if (c.attrs.get("Config") or {}).get("Image", "").startswith(namespace + "/")]


class HoldingProxy:
    """A TCP proxy from 127.0.0.1:``port`` to a registry on 127.0.0.1:``upstream`` that forwards
    everything until a client sends the first blob upload's data (a PATCH or PUT to
    /v2/.../blobs/uploads/...): that request, and anything any client sends after it, is never
    forwarded, and ``held`` is set. So a push through it has begun and cannot have finished."""

    _UPLOAD = re.compile(rb"(?:PATCH|PUT) /v2/\S*/blobs/uploads/")

    def __init__(self, port: int, upstream: int):
        self.upstream = upstream
        self.held = threading.Event()
        self._sockets: list[socket.socket] = []
        self._server = socket.create_server(("127.0.0.1", port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
                upstream = socket.create_connection(("127.0.0.1", self.upstream), timeout=30)
                upstream.settimeout(None)
            except OSError:
                return
            self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        tail = b""
        try:
            while data := src.recv(65536):
                if from_client and not self.held.is_set():
                    match = self._UPLOAD.search(tail + data)
                    if match:
                        dst.sendall(data[:max(0, match.start() - len(tail))])  # up to the upload request
                        self.held.set()
                    tail = (tail + data)[-256:]
                if not (from_client and self.held.is_set()):
                    dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        """Stop listening and cut every connection (the pushing client sees them reset)."""
        self._server.close()
        for s in self._sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def test_registry_down_then_back(tmp_path, start_registry, docker_client):
    registry = "127.0.0.1:5991"
    namespace = f"{registry}/faults-{uuid.uuid4().hex[:8]}"
    first = builder("all", "--by-platform", "--platform", "linux/amd64", "--select", MINIMAL, "--registry", namespace, "--build-dir", str(tmp_path / "b1"))
    assert first.returncode == 1, first.stdout + first.stderr
    r = report(tmp_path / "b1")[MINIMAL]
    assert r["status"] == "publish-failed" and registry in r["error"]
    assert len(event_lines(first.stdout, MINIMAL, "publish-failed")) == 1
    proc = start_registry(tmp_path / "registry", 5991)
    try:
        assert tags(registry, f"{namespace.split('/', 1)[1]}/{MINIMAL}") == []
        again = builder("all", "--by-platform", "--platform", "linux/amd64", "--select", MINIMAL, "--registry", namespace, "--build-dir", str(tmp_path / "b2"))
        assert again.returncode == 0, again.stdout + again.stderr
        assert report(tmp_path / "b2")[MINIMAL]["status"] == "published"
        published = report(tmp_path / "b2")[MINIMAL]
        sbom_tag = "sha256-" + published["platforms"][0]["digest"].split(":", 1)[1] + ".sbom"  # the SBOM beside it
        assert sorted(tags(registry, f"{namespace.split('/', 1)[1]}/{MINIMAL}")) == sorted(published["tags"] + [sbom_tag])
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert own_containers(docker_client, namespace) == [], "a container of the runs was left behind"


def test_registry_refuses_the_credentials(tmp_path, start_registry):
    registry, user, password = "127.0.0.1:5992", "builder", "r1ght-Pa55"
    proc = start_registry(tmp_path / "registry", 5992, {user: password})
    try:
        env = {"REGISTRY_USERNAME": user, "REGISTRY_PASSWORD": "wrong"}
        first = builder("all", "--by-platform", "--platform", "linux/amd64", "--select", MINIMAL, "--registry", f"{registry}/auth", "--build-dir", str(tmp_path / "b1"),
                        env=env)
        assert first.returncode == 1, first.stdout + first.stderr
        r = report(tmp_path / "b1")[MINIMAL]
        assert r["status"] == "publish-failed" and ("401" in r["error"] or "unauthorized" in r["error"]), r["error"]
        assert "wrong" not in first.stdout + first.stderr + json.dumps(r)
        assert tags(registry, f"auth/{MINIMAL}", (user, password)) == []
        again = builder("all", "--by-platform", "--platform", "linux/amd64", "--select", MINIMAL, "--registry", f"{registry}/auth", "--build-dir", str(tmp_path / "b2"),
                        env={"REGISTRY_USERNAME": user, "REGISTRY_PASSWORD": password})
        assert again.returncode == 0, again.stdout + again.stderr
        assert "latest-amd64" in tags(registry, f"auth/{MINIMAL}", (user, password))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_registry_disappears_in_the_middle_of_a_push(tmp_path, start_registry, docker_client):
    registry = "127.0.0.1:5993"
    folder = tmp_path / "registry"
    # The run pushes to 5993 through a proxy to the registry on 5994 that holds the first blob
    # upload's data: the registry goes away at a known point, after the push began and before it
    # could have written a blob or a tag, however fast the push is.
    proc = start_registry(folder, 5994)
    proxy = HoldingProxy(5993, 5994)
    run = started("all", "--by-platform", "--platform", "linux/amd64", "--select", MINIMAL, "--registry", f"{registry}/gone", "--build-dir", str(tmp_path / "b1"),
                  log=tmp_path / "b1.log")
    try:
        wait_for(lambda: proxy.held.is_set() or run.poll() is not None, 1800, "the first blob upload")
        assert proxy.held.is_set(), f"the run ended before it uploaded a blob:\n{_log(tmp_path / 'b1.log')}"
        proc.kill()
        proc.wait(timeout=10)
        proxy.close()
        assert run.wait(timeout=600) == 1, (tmp_path / "b1.log").read_text()
    finally:
        proxy.close()
        if run.poll() is None:
            run.kill()
    r = report(tmp_path / "b1")[MINIMAL]
    assert r["status"] == "publish-failed", r
    assert len(event_lines((tmp_path / "b1.log").read_text(), MINIMAL, "publish-failed")) == 1
    proc = start_registry(folder, 5993)  # back, on the same storage, without the proxy
    try:
        assert tags(registry, f"gone/{MINIMAL}") == [], "a tag of the interrupted push is in the registry"
        again = builder("all", "--by-platform", "--platform", "linux/amd64", "--select", MINIMAL, "--registry", f"{registry}/gone", "--build-dir", str(tmp_path / "b2"))
        assert again.returncode == 0, again.stdout + again.stderr
        assert "latest-amd64" in tags(registry, f"gone/{MINIMAL}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _dockerd_pids() -> list[int]:
    out = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def test_engine_stops_during_a_build(tmp_path, docker_client):
    """Stops this machine's dockerd in the middle of an uncached build; the builder itself starts
    an Engine again for the next run (builder.engine.client)."""
    run = started("build", "--platform", "linux/amd64", "--no-cache", "--select", MINIMAL, "--registry", "127.0.0.1:5000/engine-fault",
                  "--build-dir", str(tmp_path / "b1"), log=tmp_path / "b1.log")
    try:
        wait_for(lambda: APT_STEP in _log(tmp_path / "b1" / "logs" / f"{MINIMAL}.build.log"), 300,
                 "the build's apt step")
        for pid in _dockerd_pids():
            os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not _dockerd_pids(), 120, "dockerd to stop")
        assert run.wait(timeout=300) == 1, (tmp_path / "b1.log").read_text()
    finally:
        if run.poll() is None:
            run.kill()
        engine.client(ROOT / "build")  # the Engine again, whatever happened
    r = report(tmp_path / "b1")[MINIMAL]
    assert r["status"] == "build-failed" and r["tags"] == [], r
    assert len(event_lines((tmp_path / "b1.log").read_text(), MINIMAL, "build-failed")) == 1
    again = builder("build", "--platform", "linux/amd64", "--select", MINIMAL, "--registry", "127.0.0.1:5000/engine-fault",
                    "--build-dir", str(tmp_path / "b2"))
    assert again.returncode == 0, again.stdout + again.stderr
    assert report(tmp_path / "b2")[MINIMAL]["status"] == "built"


def _log(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.mark.parametrize("moment", ["build", "smoke test"])
def test_sigint_stops_the_run_and_leaves_nothing_behind(moment, tmp_path, registry, docker_client):
    namespace = f"{registry}/sigint-{moment.replace(' ', '-')}-{uuid.uuid4().hex[:8]}"
    args = ["all", "--by-platform", "--platform", "linux/amd64", "--select", SKLEARN, "--registry", namespace]
    if moment == "build":
        args.append("--no-cache")
    run = started(*args, "--build-dir", str(tmp_path / "b1"), log=tmp_path / "b1.log")
    try:
        if moment == "build":
            wait_for(lambda: APT_STEP in _log(tmp_path / "b1" / "logs" / f"{MINIMAL}.build.log"), 300,
                     "the build's apt step")
        else:
            wait_for(lambda: f"{SKLEARN} smoke testing" in _log(tmp_path / "b1.log"), 900, "the smoke test")
            wait_for(lambda: own_containers(docker_client, namespace, running_only=True), 120,
                     "a container of the smoke test")
        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=300) == 130, _log(tmp_path / "b1.log")
    finally:
        if run.poll() is None:
            run.kill()
    output = _log(tmp_path / "b1.log")
    assert output.strip().splitlines()[-1].startswith("interrupted:"), output
    images = report(tmp_path / "b1")
    assert images[SKLEARN]["status"] == "interrupted" and not any(t.startswith("latest") for t in images[SKLEARN]["tags"])
    assert own_containers(docker_client, namespace) == [], "a container of the run was left behind"
    assert tags(registry, f"{namespace.split('/', 1)[1]}/{SKLEARN}") == []
    again = builder(*[a for a in args if a != "--no-cache"], "--build-dir", str(tmp_path / "b2"))
    assert again.returncode == 0, again.stdout + again.stderr
    assert report(tmp_path / "b2")[SKLEARN]["status"] in ("published", "unchanged")
