"""What the engine tests share: the `builder` CLI as a subprocess, a run's report, and the digest
the registry serves for a reference (read back with skopeo)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from repo import ROOT

from builder.sign import cosign

BUILDER = [sys.executable, "-m", "builder.cli"]
MINIMAL = "minimal-debian12-py311-cpu-inference"
#: The representative child image the main job publishes (with its parent, MINIMAL).
SUBSET = "sklearn-1.9-debian12-py311-cpu-inference"


def builder(*args: str, env: dict | None = None, timeout: float = 3600) -> subprocess.CompletedProcess:
    """Run ``builder *args`` from the repository root; the environment plus ``env``."""
    return subprocess.run([*BUILDER, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def report(build_dir: Path) -> dict[str, dict]:
    """``{image name: entry}`` of the run report in ``build_dir``."""
    return {r["name"]: r for r in json.loads((build_dir / "report.json").read_text())["images"]}


def builds(entry: dict) -> dict[str, dict]:
    """``{platform: its build}`` of one report entry (``platforms`` is a list of builds)."""
    return {b["platform"]: b for b in entry["platforms"]}


def raw_digest(ref: str) -> str | None:
    """The digest of the manifest or image index the registry serves for ``ref`` (sha256 of what
    ``skopeo inspect --raw`` reads), or None when the reference is absent."""
    r = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"], capture_output=True)
    return "sha256:" + hashlib.sha256(r.stdout).hexdigest() if r.returncode == 0 else None


def _listening(address: str) -> set[str]:
    """The socket inodes listening on the IPv4 ``host:port`` ``address`` (``/proc/net/tcp``: local
    address as little-endian hex ``0100007F:1388``, state ``0A`` LISTEN; proc(5))."""
    host, port = address.rsplit(":", 1)
    local = "".join(f"{int(b):02X}" for b in reversed(host.split("."))) + f":{int(port):04X}"
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    return {r[9] for r in rows if len(r) > 9 and r[1] == local and r[3] == "0A"}


def registry_log(address: str = "127.0.0.1:5000") -> Path:
    """The log of the docker-registry listening on ``address``, whoever started it and wherever:
    the file its standard output is (:func:`builder.engine.ensure_registry` sends it to
    ``registry.log`` beside its configuration), read through ``/proc/<pid>/fd/1``, so it can be
    read even when the build folder that held it is gone. Raises AssertionError when no
    docker-registry process listens there."""
    inodes = {f"socket:[{i}]" for i in _listening(address)}
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0") if proc.name.isdigit() else []
            if not (args and args[0].endswith(b"docker-registry")):
                continue
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                return proc / "fd" / "1"
        except OSError:  # the process ended meanwhile
            continue
    raise AssertionError(f"no docker-registry listening on {address}")


def names_image(digest: str, manifest: dict, image_id: str, containerd_store: bool) -> bool:
    """True when the registry's manifest ``digest`` (its JSON ``manifest``) is the local image
    ``image_id``: on the containerd image store the image id is the manifest's digest, on the
    classic store its config's digest."""
    return digest == image_id if containerd_store else manifest["config"]["digest"] == image_id


def make_key_pair(folder: Path, password: str) -> dict[str, Path | str]:
    """A new cosign key pair in ``folder`` (made when missing; it must hold no key pair), encrypted with ``password``:
    ``{"key": private key file, "pub": public key file, "password": password}``."""
    folder.mkdir(parents=True, exist_ok=True)
    tool = cosign.ensure(ROOT / "build")
    subprocess.run([str(tool), "generate-key-pair"], cwd=folder, env={**os.environ, "COSIGN_PASSWORD": password},
                   check=True, capture_output=True, timeout=120)
    return {"key": folder / "cosign.key", "pub": folder / "cosign.pub", "password": password}
