"""Debian 13 (trixie) packages for a Debian 12 machine, fetched with ``apt-get download`` through a
private apt state (its own source list and package lists under the build folder): the machine's own
apt sources are never touched. The Docker Engine (``docker.io``, ``docker-cli``) and the CLI plugins
(``docker-buildx``, ``docker-compose``) come this way from trixie, cosign 3 from forky
(:mod:`builder.sign.cosign`); they need only libc6 >= 2.34.

``download``'s ``suite`` keyword is the one of ``debian_suite.download`` on the engine28 branch."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from builder import files
from builder.engine.host import EngineError
from builder.engine.sources import apt_mirror

#: The Debian release the packages are taken from by default.
SUITE = "trixie"
#: What a suite name may be: Debian's code names and their ``-updates``/``-security``/``-backports``.
SUITE_NAME = re.compile(r"[a-z][a-z0-9]{1,31}(-[a-z]{1,16})?")


def download(packages: list[str], root: Path, mirror: str | None = None, *, suite: str = SUITE) -> list[Path]:
    """Download ``packages`` (names, not paths) from ``suite`` (a Debian code name, default
    :data:`SUITE`) of ``mirror`` (default: the one
    this machine's apt sources name, :func:`builder.engine.sources.apt_mirror`) into ``root``, an
    absolute folder the builder owns (earlier downloads of these packages in it are removed). Each
    suite keeps its own package lists (``root``/lists-<suite>). Returns the ``.deb`` files, one per
    package, in order.

    Raises ValueError for a suite that is not a Debian code name; EngineError when apt-get fails or
    leaves no file for a package.
    """
    if not SUITE_NAME.fullmatch(suite):
        raise ValueError(f"{suite!r} is not a Debian suite name")
    files.make_folder(root)
    for old in (deb for package in packages for deb in root.glob(f"{package}_*.deb")):
        old.unlink()  # an earlier download's version: exactly one file per package is left
    lists = root / f"lists-{suite}"
    files.make_folder(lists / "partial")
    sources = root / f"{suite}.sources"
    files.write_atomic(sources, f"Types: deb\nURIs: {mirror or apt_mirror()}\nSuites: {suite}\nComponents: main\n"
                       "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    opts = ["-o", f"Dir::Etc::SourceList={sources}", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={lists}", "-o", "APT::Get::List-Cleanup=0", "-q"]
    for cmd in (["apt-get", *opts, "update"], ["apt-get", *opts, "download", "--", *packages]):
        r = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        if r.returncode != 0:
            step = "download" if "download" in cmd else "update"
            raise EngineError(f"apt-get {step} failed while fetching {', '.join(packages)} from {suite}: {r.stderr.strip()[-1000:]}")
    debs = []
    for package in packages:
        found = sorted(root.glob(f"{package}_*.deb"))
        if not found:
            raise EngineError(f"apt-get download {package} left no package in {root}")
        debs.append(found[-1])
    return debs
