"""Package sources for builds: extra CA bundle, pip index URL, extra index URLs, wheelhouse.

Configured outside matrix.yaml, from the environment (each ``BUILDER_*`` variable wins over pip's
own one):

===========================  ===================================  ==============================
setting                      variables, first set wins            meaning
===========================  ===================================  ==============================
CA bundle                    BUILDER_CA_BUNDLE, PIP_CERT,         PEM file pip trusts in builds
                             SSL_CERT_FILE                        (replaces pip's default bundle)
index URL                    BUILDER_INDEX_URL, PIP_INDEX_URL     pip's index (default: pip's own)
extra index URLs             BUILDER_EXTRA_INDEX_URL,             space-separated
                             PIP_EXTRA_INDEX_URL
wheelhouse                   BUILDER_WHEELHOUSE, PIP_FIND_LINKS   a local directory of wheels
===========================  ===================================  ==============================

The classic builder has no build secrets, so during a build :func:`serve` publishes them on
loopback (``http://127.0.0.1:<port>``, default port 5098, ``BUILDER_SOURCES_PORT``; concurrent
builders take turns on it) and builds run
with host networking. The images' ``pip-install`` helper fetches them into a temporary directory
and deletes it in the same RUN, so nothing of them is committed to a layer; only the fixed URL is
passed as the build argument ``BUILD_SOURCES_URL`` (a stable value keeps the layer cache valid).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import http.server
import os
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


def _first(*names: str) -> str | None:
    for n in names:
        if os.environ.get(n):
            return os.environ[n]
    return None


@dataclass(frozen=True)
class Sources:
    """Package sources for builds; all optional. ``wheelhouse`` must be a directory on this host."""

    ca_bundle: Path | None = None
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    wheelhouse: Path | None = None
    port: int = 5098

    @classmethod
    def from_env(cls) -> "Sources":
        """Read the settings from the environment (see the module doc). Missing files are ignored
        only when unset; a named CA bundle or wheelhouse that does not exist raises ValueError."""
        ca = _first("BUILDER_CA_BUNDLE", "PIP_CERT", "SSL_CERT_FILE")
        wh = _first("BUILDER_WHEELHOUSE", "PIP_FIND_LINKS")
        if ca and not Path(ca).is_file():
            raise ValueError(f"CA bundle {ca} (from the environment) is not a file")
        if wh and "://" not in wh and not Path(wh).is_dir():
            raise ValueError(f"wheelhouse {wh} (from the environment) is not a directory")
        extra = _first("BUILDER_EXTRA_INDEX_URL", "PIP_EXTRA_INDEX_URL")
        return cls(
            ca_bundle=Path(ca) if ca else None,
            index_url=_first("BUILDER_INDEX_URL", "PIP_INDEX_URL"),
            extra_index_urls=tuple(extra.split()) if extra else (),
            wheelhouse=Path(wh) if wh and "://" not in wh else None,
            port=int(os.environ.get("BUILDER_SOURCES_PORT", "5098")),
        )

    @property
    def empty(self) -> bool:
        """True when nothing needs serving (builds then use pip's defaults)."""
        return not (self.ca_bundle or self.index_url or self.extra_index_urls or self.wheelhouse)

    def pip_conf(self, url: str) -> str:
        """The pip.conf served to builds from ``url`` (https://pip.pypa.io/en/stable/topics/configuration/)."""
        lines = ["[global]"]
        if self.index_url:
            lines.append(f"index-url = {self.index_url}")
        if self.extra_index_urls:
            lines.append("extra-index-url = " + " ".join(self.extra_index_urls))
        if self.wheelhouse:
            lines.append(f"find-links = {url}/wheels/")
        return "\n".join(lines) + "\n"

    def secrets(self) -> list[str]:
        """Strings that must never appear in a built image or its history (credentials in URLs)."""
        out = []
        for u in (self.index_url, *self.extra_index_urls):
            if u and "@" in u.split("://", 1)[-1]:
                out.append(u.split("://", 1)[-1].split("@", 1)[0])
        return out


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # builds run often; the build log shows pip's view
        pass


LOCK_DIR = Path(tempfile.gettempdir())


@contextlib.contextmanager
def _port_lock(port: int) -> Iterator[None]:
    # One builder at a time serves on a port: concurrent builders on a machine take turns per build
    # instead of moving to another port, which would change BUILD_SOURCES_URL and so the cache key.
    with open(LOCK_DIR / f"builder-sources-{port}.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another builder serving package sources on port {port}", file=sys.stderr)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def serve(sources: Sources) -> Iterator[str]:
    """Serve ``sources`` on 127.0.0.1 for the duration of the ``with`` block; yields the URL.

    Uses the standard library's ThreadingHTTPServer over a temporary directory holding pip.conf,
    ca.pem and wheels/ (a link to the wheelhouse). Yields "" when there is nothing to serve.
    The URL is a build argument and so part of the layer cache key: it must not change between
    runs. Builders on one machine therefore take turns on the port (a file lock in the temporary
    directory; the caller waits). Serve around one build at a time. Raises OSError when a process
    that is not a builder holds the port.
    """
    if sources.empty:
        yield ""
        return
    with tempfile.TemporaryDirectory(prefix="builder-sources-") as tmp:
        root = Path(tmp)
        if sources.ca_bundle:
            shutil.copyfile(sources.ca_bundle, root / "ca.pem")
        if sources.wheelhouse:
            (root / "wheels").symlink_to(sources.wheelhouse.resolve(), target_is_directory=True)
        url = f"http://127.0.0.1:{sources.port}"
        (root / "pip.conf").write_text(sources.pip_conf(url))
        handler = functools.partial(_Quiet, directory=str(root))
        with _port_lock(sources.port):
            try:
                server = http.server.ThreadingHTTPServer(("127.0.0.1", sources.port), handler)
            except OSError as exc:
                raise OSError(f"cannot serve package sources on 127.0.0.1:{sources.port} ({exc.strerror}); "
                              "set BUILDER_SOURCES_PORT to a free port") from None
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            try:
                yield url
            finally:
                server.shutdown()
                server.server_close()
