"""An image's size as the Engine stores it, the same on either image store.

``docker image inspect``'s ``Size`` means different things by store and version: the uncompressed
layers on the classic store, the compressed blobs of one platform on the containerd store in Engine
26 (moby/moby#53398, changed again in moby/moby#53426). So the uncompressed size is counted from
the image itself: :func:`uncompressed_bytes` streams ``docker image save`` (``GET
/images/{name}/get``) and adds up each layer's tar, decompressed where the store keeps it
compressed — the bytes the image config's ``rootfs.diff_ids`` hash
(https://github.com/opencontainers/image-spec/blob/main/config.md). The compressed size is what a
registry serves (``layers[].size`` of the pushed manifest, :func:`builder.engine.registry.Registry.layer_bytes`).
"""

from __future__ import annotations

import io
import itertools
import json
import tarfile
import zlib
from typing import Iterator

import docker
import zstandard

from builder.engine.host import EngineError

_GZIP = b"\x1f\x8b"
_ZSTD = b"\x28\xb5\x2f\xfd"  # a zstd frame's magic number (RFC 8878, 3.1.1)
#: Bytes asked of the Engine's streams at a time.
CHUNK = 1 << 20


class _Chunks(io.RawIOBase):
    # A file-like over the Engine's response chunks, for tarfile's stream mode.
    def __init__(self, chunks: Iterator[bytes]):
        self._chunks, self._rest = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._rest:
            self._rest = next(self._chunks, b"")
            if not self._rest:
                return 0
        n = min(len(buffer), len(self._rest))
        buffer[:n], self._rest = self._rest[:n], self._rest[n:]  # a chunk at a time: reader()'s buffer is one
        return n


def reader(chunks: Iterator[bytes]) -> io.BufferedReader:
    """A binary file over an Engine response's chunks (``docker image save``, a container's
    archive), for tarfile's stream mode (``mode="r|"``)."""
    return io.BufferedReader(_Chunks(chunks), buffer_size=CHUNK)


def _length(member: io.BufferedReader) -> int | None:
    # The member's bytes, decompressed when they are gzip or zstd (RFC 1952, RFC 8878).
    head = member.read(4)
    if head == _ZSTD:
        rest = reader(itertools.chain([head], iter(lambda: member.read(CHUNK), b"")))
        stream = zstandard.ZstdDecompressor().stream_reader(rest, read_across_frames=True)
        return sum(len(c) for c in iter(lambda: stream.read(CHUNK), b""))
    if head[:2] != _GZIP:
        return len(head) + sum(len(c) for c in iter(lambda: member.read(CHUNK), b""))
    inflate, n, data = zlib.decompressobj(16 + zlib.MAX_WBITS), 0, head
    while data:
        n += len(inflate.decompress(data))
        while inflate.unused_data:  # a gzip stream of several members
            rest, inflate = inflate.unused_data, zlib.decompressobj(16 + zlib.MAX_WBITS)
            n += len(inflate.decompress(rest))
        data = member.read(CHUNK)
    return n + len(inflate.flush())


def uncompressed_bytes(client: docker.DockerClient, ref: str) -> int | None:
    """The sum of ``ref``'s layer tars uncompressed (gzip and zstd layers decompressed), in bytes
    (see the module doc). Raises docker.errors.ImageNotFound for an unknown
    ``ref``, ValueError when the saved image has no ``manifest.json`` naming its layers."""
    sizes: dict[str, int | None] = {}
    manifest = None
    with tarfile.open(fileobj=reader(client.api.get_image(ref, chunk_size=CHUNK)), mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            f = tar.extractfile(member)
            if member.name == "manifest.json":
                manifest = json.load(f)
            else:
                sizes[member.name] = _length(f)
    if not manifest or "Layers" not in manifest[0]:
        raise ValueError(f"docker image save {ref} gave no manifest.json naming its layers")
    layers = [sizes.get(name) for name in manifest[0]["Layers"]]
    return None if None in layers else sum(layers)


def explained(exc: docker.errors.DockerException) -> str:
    """What the Engine said of a failed request: the Engine's own message (``explanation``), else
    the HTTP status, else the error's type. Never docker-py's text, which names the request URL
    (``404 Client Error for http+docker://…``)."""
    explanation = getattr(exc, "explanation", None)
    if explanation:
        return " ".join(str(explanation).split())
    status = getattr(exc, "status_code", None)
    return f"HTTP {status}" if status else type(exc).__name__


def pull(client: docker.DockerClient, ref: str, auth: dict | None = None):
    """The image ``ref`` pulled by the Engine (with ``auth``, docker-py's ``auth_config``, for this
    pull only). Raises EngineError, one line: the reference and :func:`explained` (an unknown image,
    a registry that refuses or cannot be reached: exit 1, as any Engine failure)."""
    try:
        return client.images.pull(ref, auth_config=auth)
    except docker.errors.DockerException as exc:
        raise EngineError(f"the Engine cannot pull {ref}: {explained(exc)}") from None
