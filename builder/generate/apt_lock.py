"""Debian package locks: the packages a root image's apt step installs, with every dependency, each
pinned by version, in ``images/<name>/apt.<arch>.lock`` (one per platform: an architecture may need
other dependencies, or carry a binNMU version).

This module is the lock FILE: its format (:func:`parse`, :func:`text`), its name per platform
(:func:`file_name`), reading (:func:`read`, :func:`read_every`), the offline check against the
matrix (:func:`check`, run by ``builder lock --check``); the build log's sign that the mirror no
longer serves a locked version is :func:`builder.engine.debian_index.missing_version`. Making locks from the base image is
:mod:`builder.generate.apt_resolver` (``builder lock``).

The file: comment lines (``# image:``, ``# platform:``, ``# packages:`` the matrix's apt list it was
made for, ``# sha256:`` the digest of the entries), then one ``name=version suite`` per line,
sorted: ``name=version`` is what ``apt-get install`` takes to install one exact version
(https://manpages.debian.org/bookworm/apt/apt-get.8.en.html), ``suite`` the suite that served it
(``bookworm``, ``bookworm-updates``, ``bookworm-security``). The image's apt step installs exactly
the first words of these lines, read from the bind-mounted file for its platform. :func:`parse`
accepts that and nothing else: names after Debian policy 5.6.1, versions after policy 5.6.12 and
suites after the key grammar (:mod:`builder.matrix.grammar`), at most :data:`MAX_ENTRIES` entries
whose digest is the header's, so no line can read as an option or carry shell syntax and no entry
can be changed, added or removed by hand. The bases' own locks share this body
(:mod:`builder.generate.base_lock`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from builder.generate import lock
from builder.generate.lock import GENERATED
from builder.matrix import ImageSpec, Matrix, grammar
from builder.matrix.inputs import ConfigError, shown
from builder.matrix.platform import Platform

#: Largest lock read (bytes): a root image's packages take a few kilobytes.
MAX_BYTES = 1 << 20
#: The most entries a Debian package lock may hold (a base has about 100, a root image's apt step 30).
MAX_ENTRIES = 2000
_HEADER = re.compile(r"^# ([a-z0-9-]+): (\S+)$")
#: apt-get's error when a requested version is not in the package lists (apt's cacheset.cc).
#: Every control character but the newline (tab and carriage return included): the apt step's
#: ``sed`` and ``xargs`` split lines on newlines only.
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f\x85\u2028\u2029]")


@dataclass(frozen=True)
class AptLock:
    """A parsed Debian package lock: the header's ``image``, ``platform`` and ``packages`` (the
    matrix's apt list it was made for, in order), ``versions`` ``{package: version}`` of every
    package the apt step installs, ``suites`` ``{package: suite}`` that served each, and ``text``
    exactly as on disk."""

    image: str
    platform: Platform
    packages: tuple[str, ...]
    versions: dict[str, str]
    text: str
    suites: dict[str, str]


def file_name(platform: Platform) -> str:
    """``apt.amd64.lock``, ``apt.arm64.lock``: the lock's file name for ``platform``; the Dockerfile
    names it with ``${TARGETARCH}`` (or ``${BUILDARCH}``)."""
    return f"apt.{platform.arch}.lock"


def path_of(images: Path, name: str, platform: Platform) -> Path:
    """``images/<name>/apt.<arch>.lock``."""
    return Path(images) / name / file_name(platform)


def body(versions: dict[str, str], suites: dict[str, str]) -> str:
    """The entries' lines: ``name=version suite`` for each of ``versions`` (``{package: version}``),
    sorted by name, ``suites`` giving each one's suite."""
    return "".join(f"{name}={versions[name]} {suites[name]}\n" for name in sorted(versions))


def entries_digest(versions: dict[str, str], suites: dict[str, str]) -> str:
    """``sha256:<hex>`` of :func:`body`: the header's check that no entry was edited by hand."""
    return "sha256:" + hashlib.sha256(body(versions, suites).encode()).hexdigest()


def text(image: str, platform: Platform, packages: Iterable[str], versions: dict[str, str], suites: dict[str, str]) -> str:
    """The lock file's text for ``versions`` (``{package: version}``, written sorted by name) and
    ``suites`` (``{package: suite}``)."""
    head = (f"# {GENERATED} from the base image — do not edit. The Debian packages the image's apt step\n"
            f"# installs, with every dependency, each pinned (`apt-get install <package>=<version>`) with its suite.\n"
            f"# image: {image}\n# platform: {platform}\n# packages: {','.join(packages)}\n"
            f"# sha256: {entries_digest(versions, suites)}\n")
    return head + body(versions, suites)


def parse(content: str, where: str) -> AptLock:
    """Parse a lock's text (module doc). ``where`` names the file in errors. Raises ConfigError with
    one line per problem (line number, what was expected)."""
    header, versions, suites, errors = parse_lines(content, where, ("image", "platform", "packages"))
    packages = tuple(header.get("packages", "").split(","))
    for p in packages:
        _grammar(grammar.debian_package, p, f"{where}: # packages:", errors)
    if not errors:
        _grammar(grammar.image_name, header["image"], f"{where}: # image", errors)
        _grammar(grammar.platform, header["platform"], f"{where}: # platform", errors)
    if errors:
        raise ConfigError(errors)
    return AptLock(header["image"], Platform.parse(header["platform"]), packages, versions, content, suites)


def parse_lines(content: str, where: str, keys: tuple[str, ...]) -> tuple[dict[str, str], dict[str, str], dict[str, str], list[str]]:
    """``(header, {package: version}, {package: suite}, problems)`` of a Debian package lock's text:
    the header's ``keys`` and ``sha256`` must be there, every entry must keep the grammars, there may
    be at most :data:`MAX_ENTRIES`, and their digest must be the header's."""
    header: dict[str, str] = {}
    versions: dict[str, str] = {}
    suites: dict[str, str] = {}
    errors: list[str] = []
    for number, line in enumerate(content.split("\n"), 1):
        if bad := _CONTROL.search(line):
            errors.append(f"{where}:{number}: control character {bad[0]!r}; `sed` and `xargs` would read the line otherwise")
        elif m := _HEADER.match(line):
            header[m[1]] = m[2]
        elif not line.startswith("#"):
            _entry(line, f"{where}:{number}", versions, suites, errors)
        if len(versions) > MAX_ENTRIES:
            return header, versions, suites, [f"{where}: more than {MAX_ENTRIES} entries; not a lock `builder lock` wrote"]
    for key in (*keys, "sha256"):
        if key not in header:
            errors.append(f"{where}: the header has no '# {key}: ...' line (re-run `builder lock`)")
    if not errors and header["sha256"] != entries_digest(versions, suites):
        errors.append(f"{where}: the entries do not match the header's sha256 (edited by hand?); re-run `builder lock`")
    return header, versions, suites, errors


def entries(lines: Iterable[str], where: str) -> dict[str, str]:
    """``{package: version}`` from ``name=version`` lines (apt's or dpkg's output made into a
    lock's entries). Raises ConfigError with one line per line that breaks the grammar or repeats a
    name."""
    versions: dict[str, str] = {}
    errors: list[str] = []
    for number, line in enumerate(lines, 1):
        _entry(f"{line} -" if line.strip() else line, f"{where}:{number}", versions, {}, errors, unknown_suite=True)
    if errors:
        raise ConfigError(errors)
    return versions


def _entry(line: str, where: str, versions: dict[str, str], suites: dict[str, str], errors: list[str],
           unknown_suite: bool = False) -> None:
    # One ``name=version suite`` line into ``versions`` and ``suites`` (a blank line is nothing);
    # else a line in ``errors``. ``entries`` passes ``-`` as the suite (``unknown_suite``); a file never may.
    if not line.strip():
        return
    pin, sep, suite = line.partition(" ")
    name, eq, version = pin.partition("=")
    if not sep or not eq:
        errors.append(f"{where}: {shown(line)} is not <package>=<version> <suite>")
        return
    ok = (_grammar(grammar.debian_package, name, where, errors) and _grammar(grammar.debian_version, version, where, errors)
          and ((unknown_suite and suite == "-") or _grammar(grammar.key_name, suite, where, errors)))
    if ok and name in versions:
        errors.append(f"{where}: {name} is locked twice")
    elif ok:
        versions[name] = version
        suites[name] = suite


def _grammar(check, value: str, where: str, errors: list[str]) -> bool:
    try:
        check(value)
        return True
    except ValueError as exc:
        errors.append(f"{where}: {exc}")
        return False


def read(images: Path, name: str, platform: Platform) -> AptLock:
    """The Debian package lock of root image ``name`` for ``platform``. Raises ConfigError when it is
    missing, not a lock, or made for another image or platform."""
    path = path_of(images, name, platform)
    lock.refuse_link(path, name)
    if not path.is_file():
        raise ConfigError([f"{path}: missing; run `builder lock --select {name}`"])
    got = parse(lock.read_text(path, MAX_BYTES), str(path))
    if (got.image, got.platform) != (name, platform):
        raise ConfigError([f"{path}: made for {got.image} {got.platform}, not {name} {platform}; "
                           f"run `builder lock --select {name}`"])
    return got


def read_every(images: Path, specs: Iterable[ImageSpec]) -> dict[str, dict[Platform, AptLock]]:
    """``{root image: {platform: AptLock}}`` for every image of ``specs`` without a parent (the
    images with an apt step). Raises ConfigError listing every problem."""
    out: dict[str, dict[Platform, AptLock]] = {}
    errors: list[str] = []
    for spec in (s for s in specs if s.parent is None):
        for platform in spec.platforms:
            try:
                out.setdefault(spec.name, {})[platform] = read(images, spec.name, platform)
            except ConfigError as exc:
                errors.extend(exc.lines)
    if errors:
        raise ConfigError(errors)
    return out


def check(matrix: Matrix, images: Path, specs: Iterable[ImageSpec] | None = None) -> list[str]:
    """Offline problems of the Debian package locks of the root images among ``specs`` (default:
    every image of ``matrix``; ``builder lock --check``): a lock missing, invalid, made for another
    apt list than matrix.yaml's ``runtime.apt``, or not locking one of its packages. Empty when all
    hold."""
    wanted = tuple(matrix.data.runtime.apt)
    problems: list[str] = []
    for spec in (s for s in (matrix.images() if specs is None else specs) if s.parent is None):
        for platform in spec.platforms:
            try:
                got = read(images, spec.name, platform)
            except ConfigError as exc:
                problems.extend(exc.lines)
                continue
            where = path_of(images, spec.name, platform)
            if got.packages != wanted:
                problems.append(f"{where}: made for the apt packages {','.join(got.packages)}, matrix.yaml's "
                                f"runtime.apt is {','.join(wanted)}; run `builder lock --select {spec.name}`")
            problems.extend(f"{where}: {p} (runtime.apt) is not locked; run `builder lock --select {spec.name}`"
                            for p in wanted if p not in got.versions)
    return problems


def verify(matrix: Matrix, images: Path, specs: Iterable[ImageSpec], stopped: str) -> None:
    """:func:`check` before a render or a run: raises ConfigError with one line, the first problem,
    how many more there are and ``stopped`` (what the caller did not do)."""
    found = check(matrix, images, specs)
    if found:
        more = f" ({len(found) - 1} more: `builder lock --check` lists them)" if len(found) > 1 else ""
        raise ConfigError([f"lock check: {found[0]}{more}; {stopped}"])
