"""What the committed locks lag behind (``builder outdated``) and what a refresh moved (``builder
refresh``): per image and platform, each package with a newer version, where it comes from.

Debian packages: an image's are its root image's base lock and apt lock
(:mod:`builder.generate.base_lock`, :mod:`builder.generate.apt_lock`; a child inherits them),
compared with the indexes of the base's release and its ``-updates`` and ``-security`` suites
(:mod:`builder.engine.debian_index`). Python packages: each image's ``requirements.lock`` compared
with a resolution of matrix.yaml's pins at their newest (:func:`builder.generate.python_resolver.lock_all`,
nothing written). The JSON shape (:func:`as_json`)::

    {"schema": 1, "security_pending": <count>,
     "images": [{"image": str, "platform": str,
                 "updates": [{"ecosystem": "debian" | "python", "package": str, "locked": str,
                              "newest": str, "source": "security" | "updates" | "point release" | "index"}]}]}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from builder.engine import debian_index
from builder.generate import apt_lock, base_lock, lock
from builder.matrix import ImageSpec, Matrix
from builder.matrix.platform import Platform

#: The JSON shape's version.
SCHEMA = 1


@dataclass(frozen=True)
class Update:
    """One package of one image and platform at a newer version than its lock's: ``locked`` →
    ``newest``, ``source`` one of security, updates, point release (Debian) or index (Python)."""

    image: str
    platform: Platform
    ecosystem: str
    package: str
    locked: str
    newest: str
    source: str


def debian_packages(matrix: Matrix, root: ImageSpec, platform: Platform, images: Path) -> dict[str, str]:
    """``{package: version}`` locked for root image ``root`` on ``platform``: its base lock's, then
    its apt lock's. Raises ConfigError for a lock that is missing or invalid."""
    versions: dict[str, str] = {}
    base = base_lock.read(Path(matrix.path).resolve().parent, root.base, platform)
    if base is not None:
        versions.update(base.versions)
    versions.update(apt_lock.read(images, root.name, platform).versions)
    return versions


def debian_updates(matrix: Matrix, specs: Iterable[ImageSpec], images: Path, workdir: Path) -> list[Update]:
    """The Debian updates of each of ``specs`` and its platforms, the indexes fetched once per
    release and architecture under ``workdir``. Raises ConfigError, IndexUnavailable."""
    indexes: dict[tuple[str, str], debian_index.Index] = {}
    found: dict[tuple[str, Platform], dict] = {}
    out = []
    for spec in specs:
        root = matrix.image(matrix.lineage(spec.name)[-1])  # whose apt step and base it stands on
        if root.from_cuda_image:
            continue
        release = matrix.data.bases[root.base].bootstrap.suite
        for platform in spec.platforms:
            arch = platform.arch
            if (release, arch) not in indexes:
                indexes[release, arch] = debian_index.fetch(debian_index.Archive.of(release), arch,
                                                            workdir / f"{release}-{arch}")
            if (root.name, platform) not in found:
                found[root.name, platform] = debian_index.newer(indexes[release, arch],
                                                                debian_packages(matrix, root, platform, images))
            out.extend(Update(spec.name, platform, "debian", name, old, new, debian_index.kind(suite))
                       for name, (old, new, suite) in found[root.name, platform].items())
    return out


def python_updates(committed: Iterable[lock.Lock], newest: Iterable[lock.Lock]) -> list[Update]:
    """The Python updates: each package whose version in ``newest`` (the pins resolved at their
    newest, same images and platforms) differs from ``committed``'s."""
    now = {(n.image, n.platform): n for n in newest}
    out = []
    for old in committed:
        new = now.get((old.image, old.platform))
        for name, entry in sorted(old.entries.items()):
            moved = new.entries.get(name) if new else None
            if moved is not None and moved.version != entry.version:
                out.append(Update(old.image, old.platform, "python", name, entry.version, moved.version, "index"))
    return out


def security_pending(updates: Iterable[Update]) -> int:
    """How many (image, platform, package) security updates ``updates`` holds."""
    return sum(1 for u in updates if u.source == "security")


def as_json(updates: list[Update], specs: Iterable[ImageSpec]) -> dict:
    """The JSON shape of the module doc, an entry for each image and platform of ``specs``."""
    rows = []
    for spec in specs:
        for platform in spec.platforms:
            mine = [u for u in updates if (u.image, u.platform) == (spec.name, platform)]
            rows.append({"image": spec.name, "platform": platform.name,
                         "updates": [{k: v for k, v in asdict(u).items() if k not in ("image", "platform")} for u in mine]})
    return {"schema": SCHEMA, "security_pending": security_pending(updates), "images": rows}


def lines(updates: list[Update]) -> list[str]:
    """One line per update: ``<image> <platform> <ecosystem> <package> <locked> -> <newest> (<source>)``."""
    return [f"{u.image} {u.platform} {u.ecosystem} {u.package} {u.locked} -> {u.newest} ({u.source})" for u in updates]


def markdown(changes: list[Update], security_only: bool) -> str:
    """A pull request's body for what a refresh moved: a table per image and platform (Markdown;
    every value is a package name or version, checked by Debian's or Python's grammar)."""
    head = ["## Refreshed locks", "",
            ("Debian security updates only." if security_only
             else "Debian security and point-release updates, and Python releases the matrix's pins allow."), ""]
    if not changes:
        return "\n".join(head + ["Nothing moved: every lock was already current.", ""])
    body: list[str] = []
    for key in dict.fromkeys((c.image, c.platform) for c in changes):
        body += [f"### {key[0]} ({key[1]})", "", "| package | ecosystem | locked | now | source |", "|---|---|---|---|---|"]
        body += [f"| {c.package} | {c.ecosystem} | {c.locked} | {c.newest} | {c.source} |"
                 for c in changes if (c.image, c.platform) == key]
        body.append("")
    pending = security_pending(changes)
    return "\n".join(head + [f"{len(changes)} package version(s) moved, {pending} of them security updates.", ""] + body)
