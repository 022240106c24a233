"""Stage 4 — build: one rendered build context -> one image on the Engine (docker-py, classic builder).

Builds run with host networking so the package sources the builder serves on loopback reach them
(see :mod:`builder.sources`). The Engine's layer cache is used; the only per-build values are
labels that are themselves deterministic (the commit that last touched the image's inputs and its
commit time), so a rerun with nothing changed reuses every layer and yields the same image id.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import docker
from docker.errors import APIError, BuildError


@dataclass
class BuildResult:
    """Outcome of one build. ``seconds`` is wall time; ``image_id`` is ``sha256:<hex>`` or None."""

    name: str
    ok: bool
    image_id: str | None
    seconds: float
    log_path: Path
    error: str | None = None
    cached_steps: int = 0
    steps: int = 0


def vcs_labels(paths: list[Path], repo: Path = Path(".")) -> dict[str, str]:
    """``org.opencontainers.image.revision`` and ``.created`` from git.

    The revision is the newest commit that touched any of ``paths`` (the image's and its ancestors'
    build contexts) and ``created`` is that commit's time (RFC 3339, UTC), so the labels change only
    when the image's inputs do (reproducible-builds' SOURCE_DATE_EPOCH idea). Outside a git checkout
    both fall back to ``unknown`` / ``$SOURCE_DATE_EPOCH`` or the Unix epoch.
    """
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%H %ct", "--", *map(str, paths)], cwd=repo,
                             capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        out = []
    revision, epoch = (out[0], int(out[1])) if len(out) == 2 else ("unknown", int(os.environ.get("SOURCE_DATE_EPOCH", "0")))
    created = datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"org.opencontainers.image.revision": revision, "org.opencontainers.image.created": created}


def build_image(client: docker.DockerClient, name: str, context: Path, tag: str,
                buildargs: dict[str, str], labels: dict[str, str], log_path: Path,
                on_line: Callable[[str], None] = lambda line: None, nocache: bool = False) -> BuildResult:
    """Build ``context`` (a directory with a Dockerfile) and tag the result ``tag``; ``name`` labels
    the result (the image's name in the matrix, or the extension's).

    ``nocache`` ignores the layer cache. Every line of the Engine's output goes to ``log_path`` and to
    ``on_line``. Never raises for a
    failed build: the result has ``ok=False`` and ``error`` set (the last error line).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    image_id = None
    error = None
    steps = cached = 0
    with log_path.open("w") as log:
        try:
            stream = client.api.build(path=str(context), tag=tag, buildargs=buildargs, labels=labels,
                                      network_mode="host", rm=True, forcerm=True, decode=True, pull=False,
                                      nocache=nocache)
            for chunk in stream:
                if "stream" in chunk:
                    text = chunk["stream"]
                    log.write(text)
                    for line in text.splitlines():
                        if line.startswith("Step "):
                            steps += 1
                        elif line.strip() == "---> Using cache":
                            cached += 1
                        if line.strip():
                            on_line(line)
                elif "error" in chunk:
                    error = chunk["error"].strip()
                    log.write(f"ERROR: {error}\n")
                elif "aux" in chunk and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
                elif "status" in chunk:
                    log.write(chunk["status"] + "\n")
        except (APIError, BuildError, docker.errors.DockerException) as exc:
            error = str(exc)
            log.write(f"ERROR: {error}\n")
    seconds = time.monotonic() - start
    if error is None and image_id is None:
        try:
            image_id = client.images.get(tag).id
        except docker.errors.ImageNotFound:
            error = "the Engine reported no image id"
    return BuildResult(name, error is None, image_id if error is None else None, seconds, log_path,
                       error, cached, steps)
