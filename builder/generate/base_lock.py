"""Base locks: every Debian package of a bootstrapped base, per base and platform, in
``bases/<key>.<arch>.lock`` beside matrix.yaml.

A bootstrapped base (:mod:`builder.engine.bases`) is debootstrap's system of the release, brought to
the versions of its lock from the release and its ``-updates`` and ``-security`` suites
(:mod:`builder.engine.debian_index`); the lock's digest names the base image, so a changed lock
names a new base and new build ids for exactly the images on it. ``builder lock`` writes a lock at
the suites' newest versions when there is none; ``builder refresh`` moves it.

The file: comment lines (``# base:``, ``# platform:``, ``# suites:`` the three suites,
``# date:`` the newest suite's ``InRelease`` Date in epoch seconds, which is the bootstrap's
``SOURCE_DATE_EPOCH`` and the image's index date, ``# security-pending:`` how many of its packages
the security suite served newer when it was written, ``# sha256:`` the entries' digest), then one
``name=version suite`` per line, the body of :mod:`builder.generate.apt_lock` and its grammar.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from pathlib import Path

from builder.generate import apt_lock, lock
from builder.matrix import grammar
from builder.matrix.inputs import ConfigError
from builder.matrix.platform import DEFAULT, Platform

#: The folder of the base locks, beside matrix.yaml.
FOLDER = "bases"
#: Dates a lock may hold (epoch seconds): from Debian 1.1's release year to 2100.
MIN_DATE, MAX_DATE = 820_454_400, 4_102_444_800


@dataclass(frozen=True)
class BaseLock:
    """A parsed base lock: its ``base`` key, ``platform``, ``suites`` (release, -updates,
    -security), ``date`` (epoch seconds), ``security_pending`` (a count), ``versions``
    ``{package: version}``, ``package_suites`` ``{package: suite}`` and ``text`` as on disk."""

    base: str
    platform: Platform
    suites: tuple[str, ...]
    date: int
    security_pending: int
    versions: dict[str, str]
    package_suites: dict[str, str]
    text: str

    @property
    def digest(self) -> str:
        """The entries' digest (``sha256:<hex>``), as in the header."""
        return apt_lock.entries_digest(self.versions, self.package_suites)

    @property
    def date_iso(self) -> str:
        """:attr:`date` as ``YYYY-MM-DDTHH:MM:SSZ`` (UTC)."""
        return datetime.datetime.fromtimestamp(self.date, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def path_of(root: Path, key: str, platform: Platform) -> Path:
    """``<root>/bases/<key>.<arch>.lock`` (``root``: the folder of matrix.yaml)."""
    return Path(root) / FOLDER / f"{grammar.key_name(key)}.{platform.arch}.lock"


def context_name(platform: Platform) -> str:
    """``base.<arch>.lock``: the name of a base lock in a root image's build context, whose apt step
    installs its versions too (on a pulled base they are not there yet)."""
    return f"base.{platform.arch}.lock"


def text(key: str, platform: Platform, suites: tuple[str, ...], date: int, security_pending: int,
         versions: dict[str, str], package_suites: dict[str, str]) -> str:
    """The lock file's text (module doc)."""
    head = (f"# {lock.GENERATED} — do not edit; `builder refresh` moves it. Every Debian package of the\n"
            f"# bootstrapped base, pinned (`apt-get install <package>=<version>`) with the suite that served it.\n"
            f"# base: {key}\n# platform: {platform}\n# suites: {','.join(suites)}\n# date: {date}\n"
            f"# security-pending: {security_pending}\n# sha256: {apt_lock.entries_digest(versions, package_suites)}\n")
    return head + apt_lock.body(versions, package_suites)


def parse(content: str, where: str) -> BaseLock:
    """Parse a base lock's text. Raises ConfigError, one line per problem, for anything but what
    :func:`text` writes: the header's fields, suites of the key grammar that every entry's suite is
    one of, a date between 1996 and 2100 and a count up to 10**6."""
    header, versions, suites, errors = apt_lock.parse_lines(
        content, where, ("base", "platform", "suites", "date", "security-pending"))
    if errors:
        raise ConfigError(errors)
    names = tuple(header["suites"].split(","))
    date, pending = _number(header["date"], MIN_DATE, MAX_DATE, f"{where}: # date:", errors), \
        _number(header["security-pending"], 0, 10**6, f"{where}: # security-pending:", errors)
    for value, check in ((header["base"], grammar.key_name), (header["platform"], grammar.platform), *((n, grammar.key_name) for n in names)):
        try:
            check(value)
        except ValueError as exc:
            errors.append(f"{where}: {exc}")
    errors.extend(f"{where}: {name} comes from {suite}, not one of the suites {','.join(names)}"
                  for name, suite in sorted(suites.items()) if suite not in names)
    if errors:
        raise ConfigError(errors[:1])
    return BaseLock(header["base"], Platform.parse(header["platform"]), names, date, pending, versions, suites, content)


def _number(value: str, low: int, high: int, where: str, errors: list[str]) -> int:
    # ASCII digits only: str.isdigit() takes "²", which int() refuses.
    if not re.fullmatch(r"[0-9]{1,12}", value) or not low <= int(value) <= high:
        errors.append(f"{where} {value[:40]!r} is not a whole number from {low} to {high}")
        return low
    return int(value)


def read(root: Path, key: str, platform: Platform) -> BaseLock | None:
    """The lock of base ``key`` for ``platform``, or None when there is none. Raises ConfigError
    when the file is not a regular file, too large, not UTF-8, not a base lock, or made for another
    base or platform."""
    path = path_of(root, key, platform)
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_symlink() or not path.is_file():
        raise ConfigError([f"{path}: not a regular file; not a lock `builder lock` wrote"])
    got = parse(lock.read_text(path, apt_lock.MAX_BYTES), str(path))
    if (got.base, got.platform) != (key, platform):
        raise ConfigError([f"{path}: made for base {got.base} {got.platform}, not {key} {platform}"])
    return got


def write(root: Path, new: BaseLock) -> Path:
    """Write ``new`` to its path atomically. Raises ConfigError, writing nothing, when a file is
    there that ``builder lock`` did not write."""
    path = path_of(root, new.base, new.platform)
    lock.ensure_ours(path)
    from builder import files

    files.write_atomic(path, new.text)
    return path


def check(root: Path, bases: dict[str, tuple[str, tuple[Platform, ...]]]) -> list[str]:
    """Offline problems of the base locks (``builder lock --check``): ``bases`` maps each base key
    used by a bootstrapped image to ``(release suite, platforms)``. A lock missing, invalid, or made
    for other suites is a problem. Empty when all hold."""
    problems = []
    for key, (release, platforms) in sorted(bases.items()):
        for platform in platforms:
            try:
                got = read(root, key, platform)
            except ConfigError as exc:
                problems.extend(exc.lines)
                continue
            if got is None:
                problems.append(f"{path_of(root, key, platform)}: missing; run `builder lock`")
            elif got.suites != (release, f"{release}-updates", f"{release}-security"):
                problems.append(f"{path_of(root, key, platform)}: made for the suites {','.join(got.suites)}, not "
                                f"{release} and its -updates and -security; run `builder refresh`")
    return problems


def used(specs, bases: dict) -> dict[str, tuple[str, tuple[Platform, ...]]]:
    """``{base key: (release suite, platforms)}`` of the bootstrapped bases the root images among
    ``specs`` (``ImageSpec``) stand on: each root image's platforms and the build platform."""
    out: dict[str, tuple[str, tuple[Platform, ...]]] = {}
    for spec in (s for s in specs if s.parent is None and not s.from_cuda_image):
        release, platforms = out.get(spec.base, (bases[spec.base].bootstrap.suite, ()))
        out[spec.base] = (release, tuple(dict.fromkeys((*platforms, DEFAULT, *spec.platforms))))
    return out


def read_every(root: Path, specs, bases: dict) -> dict[str, dict[Platform, BaseLock]]:
    """``{base key: {platform: BaseLock}}`` of every lock :func:`used` names that exists. Raises
    ConfigError for one that is invalid."""
    out: dict[str, dict[Platform, BaseLock]] = {}
    for key, (_, platforms) in used(specs, bases).items():
        for platform in platforms:
            got = read(root, key, platform)
            if got is not None:
                out.setdefault(key, {})[platform] = got
    return out
