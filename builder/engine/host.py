"""This machine's package manager: whether the builder may install what is missing (as root on
Debian), what dpkg has installed, and ``apt-get install``. Every Engine module raises
:class:`EngineError` with one line saying what to do."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


class EngineError(RuntimeError):
    """No Docker Engine or registry could be reached or started; the message says what to do."""


def can_provision() -> bool:
    """True where the builder installs what is missing itself: as root on Debian with apt."""
    return os.geteuid() == 0 and Path("/etc/debian_version").exists() and shutil.which("apt-get") is not None


def installed_version(package: str) -> str | None:
    """The Debian version dpkg has installed of ``package`` (status ``install ok installed``; a
    removed package whose configuration files remain does not count), or None."""
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}\t${Version}", package], capture_output=True, text=True)
    status, _, version = r.stdout.strip().partition("\t")
    return version if r.returncode == 0 and status == "install ok installed" else None


def installed(package: str) -> bool:
    """True when dpkg has ``package`` installed (:func:`installed_version`)."""
    return installed_version(package) is not None


def version_at_least(version: str, minimum: str) -> bool:
    """Debian version order, from dpkg itself (``dpkg --compare-versions``,
    https://www.debian.org/doc/debian-policy/ch-controlfields.html#version)."""
    return subprocess.run(["dpkg", "--compare-versions", version, "ge", minimum]).returncode == 0


def apt_install(*packages: str, allow_downgrades: bool = False) -> None:
    """Install Debian packages (as root) unless all are already installed. A package may also be the
    path of a downloaded ``.deb`` (``./x.deb`` or absolute), installed with its dependencies from the
    machine's own apt sources. ``allow_downgrades`` lets such a ``.deb`` replace a newer version
    (apt-get's ``--allow-downgrades``: switching Engine lines goes both ways).

    Raises EngineError when not root on Debian, or when apt-get fails (its output is included).
    """
    missing = [p for p in packages if p.endswith(".deb") or not installed(p)]
    if not missing:
        return
    if not can_provision():
        raise EngineError(f"{', '.join(missing)} not installed, and this is not a Debian machine "
                          "where I am root: install them and try again")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    downgrades = ["--allow-downgrades"] if allow_downgrades else []
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *downgrades, "--", *missing]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise EngineError(f"{' '.join(cmd)} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
