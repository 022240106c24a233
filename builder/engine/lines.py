"""The Docker Engine lines the builder provisions, and which one a run uses.

Two lines, each a Debian release's packages (https://packages.debian.org/docker.io):

- ``28.5`` (the default): Debian forky's ``docker.io`` and ``docker-cli`` 28.5.2, ``containerd`` 2.1 and
  ``tini-static`` (which ``docker.io`` needs there; Debian 12 has only ``tini``), with Debian 12's
  runc (forky's needs glibc 2.38), and ``docker-buildx`` 0.29 and ``docker-compose`` 2.40; its data
  root is ``/var/lib/docker-28.5``.
- ``26.1``: Debian 13 (trixie)'s ``docker.io`` and ``docker-cli`` 26.1.5, with
  Debian 12's containerd 1.6 and runc 1.1, and ``docker-buildx`` 0.13 and ``docker-compose`` 2.26;
  its data root is dockerd's default, ``/var/lib/docker``; Debian 13 stable's Engine, kept working
  and tested (CI runs the reproducibility, publish and verify tests on it).

containerd 2 migrates a containerd 1 root in place, so the two lines never share one: switching
back and forth leaves each line's images where they were.

``BUILDER_ENGINE`` names the line to provision (``26.1`` or ``28.5``). Unset, an installed Engine
>= 26 stays as it is and a missing or older one becomes the default line. This module is pure: no
file, process or network access.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

#: The environment variable that names the Engine line to provision.
ENV = "BUILDER_ENGINE"
#: Debian 12's code name: where the 26.1 line's containerd comes from when a newer one is installed.
BOOKWORM = "bookworm"
#: The upstream part of a Debian version: ``[epoch:]upstream[-revision]``
#: (https://www.debian.org/doc/debian-policy/ch-controlfields.html#version).
_UPSTREAM = re.compile(r"(?:\d+:)?(\d+)\.(\d+)[.+~]")


@dataclass(frozen=True)
class Line:
    """One Engine line. ``suite``: the Debian release ``packages`` (and the CLI plugins) come from;
    ``containerd_major``: the containerd major version the line runs with (a containerd of another
    major is replaced by Debian 12's when it is 1); ``data_root``: dockerd's ``--data-root`` (None:
    dockerd's default, /var/lib/docker); ``plugins``: CLI plugin name -> the version its package
    has there (``major.minor``)."""

    name: str
    suite: str
    packages: tuple[str, ...]
    containerd_major: int
    data_root: Path | None
    plugins: Mapping[str, str]


LINES = {
    "26.1": Line("26.1", "trixie", ("docker.io", "docker-cli"), 1, None,
                 {"buildx": "0.13", "compose": "2.26"}),
    "28.5": Line("28.5", "forky", ("docker.io", "docker-cli", "containerd", "tini-static"), 2,
                 Path("/var/lib/docker-28.5"), {"buildx": "0.29", "compose": "2.40"}),
}
#: The line provisioned when :data:`ENV` names none: the newest Engine Debian packages (Docker 26
#: and BuildKit 0.13 are past upstream support, https://docs.docker.com/engine/release-notes/).
DEFAULT = LINES["28.5"]
#: The other line: CI runs the reproducibility, publish and verify tests on it as well.
OTHER = LINES["26.1"]


class UnknownLine(ValueError):
    """:data:`ENV` names no line of :data:`LINES`."""


def chosen(environ: Mapping[str, str]) -> Line | None:
    """The line ``environ`` names in :data:`ENV` (surrounding blanks ignored), or None when it is
    unset or empty. Raises UnknownLine, one line naming the choices, for anything else."""
    value = environ.get(ENV, "").strip()
    if not value:
        return None
    if value not in LINES:
        shown = value if value.isprintable() and len(value) <= 40 else repr(value[:40])
        raise UnknownLine(f"{ENV}={shown} names no Engine line: use one of {', '.join(LINES)}")
    return LINES[value]


def major_minor(version: str) -> tuple[int, int] | None:
    """``(major, minor)`` of a Debian package version (``28.5.2+dfsg4-5`` -> ``(28, 5)``), or None
    when it does not start with ``[epoch:]major.minor``."""
    m = _UPSTREAM.match(version + ".")
    return (int(m.group(1)), int(m.group(2))) if m else None


def of_version(docker_io: str | None) -> Line | None:
    """The line an installed ``docker.io`` version belongs to, or None (not installed, or another
    version)."""
    found = major_minor(docker_io) if docker_io else None
    return next((line for line in LINES.values() if found and line.name == "%d.%d" % found), None)


def wanted(environ: Mapping[str, str], docker_io: str | None) -> Line:
    """The line a run uses: the one ``environ`` chooses, else the one the installed ``docker.io``
    belongs to, else :data:`DEFAULT`. Raises UnknownLine as :func:`chosen`."""
    return chosen(environ) or of_version(docker_io) or DEFAULT


def containerd_fits(line: Line, containerd: str | None) -> bool:
    """True when the installed ``containerd`` version (None: not installed) is of ``line``'s major,
    or none is installed (``docker.io`` brings one)."""
    found = major_minor(containerd) if containerd else None
    return found is None or found[0] == line.containerd_major


def plugin_fits(line: Line, name: str, version_line: str) -> bool:
    """True when a plugin's ``docker <name> version`` first line names ``line``'s version of it
    (``github.com/docker/buildx 0.29.1+ds1 ...``, ``Docker Compose version 2.40.3-3``), or
    ``line`` names no version for it."""
    want = line.plugins.get(name)
    return want is None or re.search(rf"(?<![\w.])v?{re.escape(want)}\.", version_line) is not None
