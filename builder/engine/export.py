"""Reproducible export: a BuildKit build's image straight into the Engine's image store, each layer
written once.

BuildKit's ``rewrite-timestamp`` dates every file of the new layers, and the image, to
``SOURCE_DATE_EPOCH`` (https://github.com/moby/buildkit/blob/master/docs/build-repro.md). On the
containerd image store the ``image`` and ``docker`` exporters refuse it ("conflicts with unpack",
moby/buildkit#4230; measured on Engines 26.1.5 and 28.5.2), so the build writes an OCI archive with
rewritten timestamps to its standard output (``dest=-``) and that stream is the body of the Engine's
``POST /images/load`` (``docker load``): no archive is written to disk, so a layer is in flight once
(in the Engine's content store) beside its unpacked snapshot. The containerd store keeps the
archive's manifest as it is, so the image id is the reproducible manifest digest.

On the classic store BuildKit's ``docker`` driver has no OCI exporter: the build is stored with the
``image`` exporter, whose pushed digests are not reproducible (the store recompresses on push).
"""

from __future__ import annotations

import itertools
import re
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import docker

from builder.engine import children
from builder.engine.images import explained

#: The layer compressions matrix.yaml's ``compression`` takes; the first is BuildKit's default.
COMPRESSIONS = ("gzip", "zstd")
#: Bytes read from buildx's standard output at a time.
CHUNK = 1 << 20
#: What a value in BuildKit's output specification (CSV) must not hold.
_CSV_UNSAFE = re.compile(r'[,"=\x00-\x1f\x7f]')


@dataclass(frozen=True)
class Exported:
    """How a build ended: ``code`` is buildx's exit code (-1: it could not be started, and
    ``start_error`` says why); ``load_error`` is what the Engine said when it refused the streamed
    image, or why the stream could not reach it (None when it loaded it, or nothing was streamed)."""

    code: int
    load_error: str | None = None
    start_error: str | None = None


def output(ref: str, containerd_store: bool, compression: str = "gzip") -> str:
    """The buildx ``--output`` value (https://docs.docker.com/reference/cli/docker/buildx/build/#output)
    storing the build as ``ref`` (``repository:tag``): on the containerd store an OCI archive with
    rewritten timestamps on standard output, for :func:`run` to load; on the classic store the
    Engine's ``image`` exporter. ``compression`` ``zstd`` compresses every layer with zstd
    (``force-compression``: BuildKit otherwise keeps a blob it holds in another compression, such
    as a base's or a cached gzip layer; one already zstd is kept as it is); BuildKit's default,
    gzip, adds nothing (https://docs.docker.com/build/exporters/oci-docker/). Raises ValueError for a ``ref`` holding
    a comma, a quote, ``=`` or a control character, which the CSV cannot carry, for another
    compression, and for zstd on the classic store (whose push recompresses every layer with gzip)."""
    if _CSV_UNSAFE.search(ref):
        raise ValueError(f"{ref!r} cannot be written into BuildKit's output specification")
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression {compression!r} is not one of {', '.join(COMPRESSIONS)}")
    if not containerd_store:
        if compression != "gzip":
            raise ValueError(f"compression {compression} needs the Engine's containerd image store "
                             "(the classic store pushes gzip layers)")
        return f"type=image,name={ref}"
    extra = "" if compression == "gzip" else f",compression={compression},force-compression=true"
    return f"type=oci,dest=-,name={ref},rewrite-timestamp=true{extra}"


def run(cmd: list[str], cwd: Path, env: dict[str, str], on_line: Callable[[str], None],
        load_into: docker.DockerClient | None = None) -> Exported:
    """Run the buildx command ``cmd`` (a child of :mod:`builder.engine.children`) and pass each line
    of its progress, without the newline, to ``on_line``. With ``load_into``, ``cmd``'s output is
    :func:`output` on the containerd store: its standard output (the OCI archive) streams into that
    Engine's ``docker load`` while it is written; a build that wrote nothing loads nothing. Without,
    standard output joins the progress.

    Returns :class:`Exported`. Raises children.Interrupted when the run is being stopped; whatever
    ``on_line`` raises is raised once buildx was stopped and the stream closed."""
    pipes = {"stderr": subprocess.PIPE} if load_into else {"stderr": subprocess.STDOUT, "text": True, "errors": "replace"}
    try:
        proc = children.start(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, **pipes)
    except OSError as exc:
        return Exported(-1, start_error=str(exc))
    with proc:  # closes both pipes and reaps buildx, whatever happens
        if load_into is None:
            return Exported(_follow(proc, proc.stdout, on_line))
        said: list[str] = []
        loader = threading.Thread(target=_load, args=(load_into, proc.stdout, said), daemon=True)
        loader.start()
        try:
            code = _follow(proc, (line.decode(errors="replace") for line in proc.stderr), on_line)
        finally:
            loader.join()
        return Exported(code, said[0] if said else None)


def _follow(proc: subprocess.Popen, lines, on_line: Callable[[str], None]) -> int:
    # Every line to ``on_line`` until the stream ends; then buildx's exit code. When ``on_line``
    # fails (a full disk under the log), buildx is stopped first: nobody would read it any more.
    try:
        for line in lines:
            on_line(line.rstrip("\n"))
        return proc.wait()
    except BaseException:
        children.stop(proc)
        raise
    finally:
        children.forget(proc)


def _load(client: docker.DockerClient, stream, said: list[str]) -> None:
    # ``stream`` (an image archive as it is written) into ``docker load``, once it holds a first
    # chunk; the Engine's error, or why the stream could not reach it, into ``said``. The stream is
    # read to its end whatever happens, so buildx never blocks writing it.
    try:
        first = stream.read(CHUNK)
        if not first:
            return  # nothing was exported (the build failed): nothing to load
        for message in client.api.load_image(itertools.chain([first], _chunks(stream))):
            if "error" in message:
                said.append(" ".join(str(message["error"]).split()))
    except docker.errors.DockerException as exc:
        said.append(explained(exc))
    except Exception as exc:  # noqa: BLE001 - a thread's error is said, never lost
        said.append(f"the connection to the Engine failed ({type(exc).__name__})")
    finally:
        for _ in _chunks(stream):
            pass


def _chunks(stream) -> Iterator[bytes]:
    return iter(lambda: stream.read(CHUNK), b"")

