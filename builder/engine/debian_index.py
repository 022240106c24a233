"""Debian's package indexes of a release and its ``-updates`` and ``-security`` suites, fetched
through a private apt state and read as hostile input.

A release's images take their packages from three suites (https://wiki.debian.org/DebianUpdates,
https://www.debian.org/security/faq#updatesforstable): the release itself (``bookworm``, moved
only by point releases), ``bookworm-updates`` (urgent point-release changes) and
``bookworm-security``. :class:`Archive` says where each comes from: the Debian mirror of
:func:`builder.engine.sources.apt_mirror` and the security archive of
:func:`builder.engine.sources.apt_security_mirror`; neither URL is ever printed.

:func:`fetch` runs ``apt-get update`` with its own source list, list folder and cache under the
build folder (the machine's apt state is never touched), so apt checks every index against the
archive's signed ``InRelease`` (https://wiki.debian.org/SecureApt). :func:`read` then reads what
apt left, or the same files a bootstrapped root file system holds: each ``Packages`` file's stanzas
(deb822, https://www.debian.org/doc/debian-policy/ch-controlfields.html) with python-debian, every
name and version checked by Debian's grammars (:mod:`builder.matrix.grammar`), and each suite's
``Date`` from its ``InRelease``. Versions compare with ``debian.debian_support.Version`` (dpkg's
order, policy 5.6.12).
"""

from __future__ import annotations

import datetime
import email.utils
import os
import re
import urllib.parse
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from debian import deb822
from debian.debian_support import Version

from builder import files
from builder.engine.sources import apt_mirror, apt_security_mirror, apt_snapshot
from builder.matrix import grammar
from builder.matrix.inputs import ConfigError

#: The largest index file read (bytes): bookworm's amd64 Packages is about 45 MB.
MAX_INDEX = 256 << 20
#: The largest InRelease file read (bytes).
MAX_RELEASE = 1 << 20
#: The most stanzas one Packages file may hold (bookworm main amd64 has about 63,000).
MAX_STANZAS = 500_000
#: The kind of an update by the suite it comes from.
KINDS = {"security": "security", "updates": "updates", "": "point release"}
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
#: apt-get's error when a requested version is not in the package lists (apt's cacheset.cc).
_MISSING = re.compile(r"E: Version '([^'\n]{1,200})' for '([^'\n]{1,200})' was not found")


class IndexUnavailable(RuntimeError):
    """An index could not be fetched (network, mirror, signature); the message never holds a URL."""


@dataclass(frozen=True)
class Archive:
    """Where a Debian release's three suites come from: ``mirror`` serves the release and its
    ``-updates`` suite, ``security`` its ``-security`` suite (URLs, never printed)."""

    release: str
    mirror: str = field(repr=False)
    security: str = field(repr=False)
    snapshot: bool = False

    @classmethod
    def of(cls, release: str) -> "Archive":
        """The archive of ``release`` (a suite name such as ``bookworm``) from the environment and
        the machine's apt sources. Raises ConfigError when no mirror is known."""
        snapshot = apt_snapshot()
        if snapshot:
            return cls(grammar.key_name(release), *snapshot, snapshot=True)
        mirror = apt_mirror()
        return cls(grammar.key_name(release), mirror, apt_security_mirror(mirror))

    @property
    def suites(self) -> tuple[str, str, str]:
        """``(release, release-updates, release-security)``."""
        return self.release, f"{self.release}-updates", f"{self.release}-security"

    def uri(self, suite: str) -> str:
        """The URL that serves ``suite``."""
        return self.security if suite.endswith("-security") else self.mirror

    def sources(self, public: bool = False) -> str:
        """apt's source list (deb822, https://manpages.debian.org/bookworm/apt/sources.list.5.en.html)
        of the three suites, main component; from a snapshot (:func:`builder.engine.sources.apt_snapshot`)
        without the validity check, since a snapshot's Release has expired. ``public``: the URLs
        without their user information (what an image may carry)."""
        extra = "Check-Valid-Until: no\n" if self.snapshot else ""
        uri = (lambda suite: _bare(self.uri(suite))) if public else self.uri
        return "\n".join(f"Types: deb\nURIs: {uri(suite)}\nSuites: {suite}\nComponents: main\nSigned-By: {KEYRING}\n{extra}"
                         for suite in self.suites)

    def redact(self, text: str) -> str:
        """``text`` with the archive's URLs, in every form apt prints them (with and without their
        user information and trailing slash), replaced by ``<mirror>`` and ``<security mirror>``."""
        for url, name in ((self.security, "<security mirror>"), (self.mirror, "<mirror>")):
            for form in sorted(_forms(url), key=len, reverse=True):
                text = text.replace(form, name)
        return text


def _bare(url: str) -> str:
    # ``url`` without its user information (``user:password@``).
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def _forms(url: str) -> set[str]:
    # ``url`` as given and without its user information, each with and without the trailing slash.
    return {u for form in (url, _bare(url)) for u in (form, form.rstrip("/")) if u}


def kind(suite: str) -> str:
    """``security``, ``updates`` or ``point release``: what moved a package to ``suite``'s version."""
    _, _, tail = suite.partition("-")
    return KINDS.get(tail, "point release")


@dataclass(frozen=True)
class Index:
    """The packages of one release on one architecture: ``versions[suite][package]`` is the newest
    version ``suite`` serves (architecture ``arch`` or ``all``); ``dates[suite]`` its ``InRelease``
    Date (epoch seconds)."""

    release: str
    arch: str
    suites: tuple[str, ...]
    dates: dict[str, int]
    versions: dict[str, dict[str, str]]

    @property
    def date(self) -> int:
        """The newest suite's Date (epoch seconds): the state of the indexes, a bootstrap's
        ``SOURCE_DATE_EPOCH``."""
        return max(self.dates.values())

    def newest(self, package: str) -> tuple[str, str] | None:
        """``(version, suite)`` of the newest version of ``package`` in any suite (the first suite
        in order on a tie), or None when no suite has it."""
        best: tuple[str, str] | None = None
        for suite in self.suites:
            v = self.versions.get(suite, {}).get(package)
            if v is not None and (best is None or Version(v) > Version(best[0])):
                best = (v, suite)
        return best

    def suite_of(self, package: str, version: str) -> str | None:
        """The suite that serves ``package`` at exactly ``version``, or None; the last in order when
        several do (a security update a point release folded into the release is still the
        security suite's)."""
        return next((s for s in reversed(self.suites) if self.versions.get(s, {}).get(package) == version), None)


def fetch(archive: Archive, arch: str, root: Path) -> Index:
    """Fetch ``archive``'s three suites for ``arch`` (Debian's name: amd64, arm64) with
    ``apt-get update`` into ``root`` (a folder of the build folder's; its own source list, lists and
    cache), then :func:`read` them. Raises
    IndexUnavailable (one line, no URL) when apt fails, ConfigError when an index breaks its grammar."""
    grammar.key_name(arch)
    root = files.claim_folder(Path(root).resolve())
    lists = root / "lists"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    (root / "cache").mkdir(exist_ok=True)
    source_list = files.write_atomic(root / "index.sources", archive.sources())
    opts = ["-o", f"Dir::Etc::SourceList={source_list}", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={lists}", "-o", f"Dir::Cache={root / 'cache'}",
            "-o", "Dir::State::status=/dev/null", "-o", f"APT::Architecture={arch}", "-o", f"APT::Architectures={arch}",
            "-o", "Acquire::Languages=none", "-o", "Acquire::GzipIndexes=false", "-o", "APT::Get::List-Cleanup=1", "-q"]
    r = subprocess.run(["apt-get", *opts, "update"], capture_output=True, text=True,
                       env={**os.environ, "LC_ALL": "C"})
    failed = [line for line in (r.stdout + r.stderr).splitlines() if line.startswith(("E:", "Err:"))]
    if r.returncode != 0 or failed:
        reasons = [line for line in r.stderr.splitlines() if line.startswith(("E:", "W:"))] or failed
        first = archive.redact(reasons[0] if reasons else f"exit {r.returncode}")
        raise IndexUnavailable(f"the {archive.release} package indexes ({arch}) could not be fetched: {first[:300]}")
    return read(lists, archive.suites, arch)


def read(lists: Path, suites: Iterable[str], arch: str) -> Index:
    """The :class:`Index` of ``suites`` on ``arch`` from apt's list folder ``lists`` (one
    ``*_dists_<suite>_InRelease`` and one ``*_dists_<suite>_main_binary-<arch>_Packages`` each).
    Raises ConfigError, one line naming the suite's index (never its file, whose name holds the
    mirror's host), when one is missing, too large, not UTF-8 text, or holds a stanza outside
    Debian's grammars."""
    suites = tuple(suites)
    dates, versions = {}, {}
    for suite in suites:
        dates[suite] = release_date(_one(lists, f"*_dists_{suite}_InRelease", suite, arch), suite)
        versions[suite] = packages(_one(lists, f"*_dists_{suite}_main_binary-{arch}_Packages", suite, arch),
                                   f"the {suite} index ({arch})", arch)
    return Index(suites[0], arch, suites, dates, versions)


def _one(lists: Path, pattern: str, suite: str, arch: str) -> Path:
    found = [p for p in Path(lists).glob(pattern) if p.is_file() and not p.is_symlink()]
    if len(found) != 1:
        raise ConfigError([f"the {suite} index ({arch}): {len(found)} files match, expected one; fetch it again"])
    return found[0]


def _text(path: Path, limit: int, where: str) -> str:
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ConfigError([f"{where}: larger than {limit} bytes; not a Debian index"])
    if b"\0" in data:
        raise ConfigError([f"{where}: binary data (a NUL byte); not a Debian index (compressed?)"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([f"{where}: not UTF-8 text; not a Debian index"]) from None


def release_date(path: Path, suite: str) -> int:
    """The ``Date`` (RFC 2822, https://wiki.debian.org/DebianRepository/Format#Date) of an
    ``InRelease`` (or ``Release``) file as epoch seconds. Raises ConfigError when it has none."""
    where = f"the {suite} InRelease"
    text = _text(path, MAX_RELEASE, where)
    try:
        date = email.utils.parsedate_to_datetime(deb822.Release(text.splitlines())["Date"])
        if date.tzinfo is None:  # "-0000": UTC, its zone unknown (RFC 2822 3.3), never the host's
            date = date.replace(tzinfo=datetime.timezone.utc)
        return int(date.timestamp())
    except (KeyError, TypeError, ValueError, OverflowError):
        raise ConfigError([f"{where}: no RFC 2822 Date field"]) from None


def packages(path: Path, where: str, arch: str) -> dict[str, str]:
    """``{package: newest version}`` of a ``Packages`` file's stanzas for ``arch`` or ``all``.
    Raises ConfigError (one line, ``where`` and the stanza's number) for a stanza whose Package or
    Version breaks Debian's grammar, or a file over :data:`MAX_INDEX` bytes or :data:`MAX_STANZAS`
    stanzas."""
    out: dict[str, str] = {}
    text = _text(path, MAX_INDEX, where)
    for number, stanza in enumerate(deb822.Packages.iter_paragraphs(text.splitlines(), use_apt_pkg=False,
                                                                      fields=["Package", "Version", "Architecture"]), 1):
        if number > MAX_STANZAS:
            raise ConfigError([f"{where}: more than {MAX_STANZAS} stanzas; not a Debian index"])
        try:
            name = grammar.debian_package(stanza.get("Package"))
            version = grammar.debian_version(stanza.get("Version"))
        except ValueError as exc:
            raise ConfigError([f"{where}: stanza {number}: {exc}"]) from None
        if stanza.get("Architecture") not in (arch, "all"):
            continue
        if name not in out or Version(version) > Version(out[name]):
            out[name] = version
    return out


def newer(index: Index, locked: dict[str, str]) -> dict[str, tuple[str, str, str]]:
    """``{package: (locked version, newest version, suite)}`` for each of ``locked``
    (``{package: version}``) that some suite of ``index`` serves newer. ``suite`` is the security
    suite whenever it serves a version newer than the locked one (a point release that folded a
    security update into the release keeps it a security update), else the newest version's."""
    out = {}
    security = next((s for s in index.suites if s.endswith("-security")), None)
    for name, version in sorted(locked.items()):
        best = index.newest(name)
        if best is None or Version(best[0]) <= Version(version):
            continue
        fix = index.versions.get(security, {}).get(name) if security else None
        out[name] = (version, best[0], security if fix and Version(fix) > Version(version) else best[1])
    return out


def security_fix(index: Index, name: str, version: str) -> str | None:
    """The security suite's version of ``name`` when it is newer than ``version``, else None."""
    security = next((s for s in index.suites if s.endswith("-security")), None)
    fix = index.versions.get(security, {}).get(name) if security else None
    return fix if fix and Version(fix) > Version(version) else None


def missing_version(log: str) -> tuple[str, str] | None:
    """``(package, version)`` when apt's output in ``log`` says a locked version is not in the
    mirror's package lists (``E: Version '<v>' for '<p>' was not found``), else None."""
    m = _MISSING.search(log)
    if not m:
        return None
    try:
        return grammar.debian_package(m[2]), grammar.debian_version(m[1])
    except ValueError:  # not a version a lock can hold: some other failure
        return None


def pins(lines: Iterable[str], where: str) -> dict[str, str]:
    """``{package: version}`` of ``name=version`` lines (dpkg's or apt's output), each checked by
    Debian's grammars. Raises ConfigError (one line) for the first that breaks them or repeats."""
    out: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        name, _, version = line.strip().partition("=")
        try:
            grammar.debian_package(name)
            grammar.debian_version(version)
        except ValueError as exc:
            raise ConfigError([f"{where}:{number}: {exc}"]) from None
        if name in out:
            raise ConfigError([f"{where}:{number}: {name} twice"])
        out[name] = version
    return out
