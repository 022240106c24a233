"""Locking: takes the image specs and their locks; checks them offline, or makes them with uv.

Checking (:func:`check` for ``builder lock --check``, :func:`verify` before a render or a run):
every lock exists, parses (:func:`builder.generate.lock.parse`), satisfies its image's pins and agrees with
its parent's lock, and a child's ``layer.<arch>.lock`` is derived from it.

Making (:func:`lock_all` for ``builder lock``): an updater, separate from the offline renderer
(docker-library's ``versions.sh`` beside ``apply-templates.sh``), like ``builder compat refresh``:
:func:`lock_image` resolves with uv (``uv pip compile --generate-hashes --only-binary :all:``,
https://docs.astral.sh/uv/pip/compile/) for the image's Python and platform. The parent's lock is a
constraint and is carried over verbatim, so a child never changes a package its parent installed and
every lock names its image's whole install set.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from builder import files
from builder.engine.sources import Sources
from builder.generate.lock import GENERATED, Lock, ensure_ours, file_name, layer, layer_file, parse, path_of, read
from builder.matrix import ImageSpec, Matrix
from builder.matrix.inputs import ConfigError
from builder.matrix.platform import DEFAULT, Platform


def problems(spec: ImageSpec, lock: Lock, parent: Lock | None) -> list[str]:
    """Why ``lock`` does not fit ``spec`` (empty when it does): a header naming another image, Python
    or parent; a pin of the image (or of an ancestor) the locked version does not satisfy (PEP 440
    ``==``, https://peps.python.org/pep-0440/#version-matching); a parent entry missing or changed."""
    where = f"images/{spec.name}/{file_name(lock.platform)}"
    out = []
    if lock.image != spec.name or lock.python != spec.python or lock.parent != spec.parent:
        out.append(f"{where}: made for image {lock.image} (Python {lock.python}, parent {lock.parent}), not for "
                   f"{spec.name} (Python {spec.python}, parent {spec.parent})")
    for req in spec.requirements:
        got = lock.entries.get(canonicalize_name(req.name))
        if got is None:
            out.append(f"{where}: {req.name} is not locked (the matrix pins {req})")
        elif not req.specifier.contains(got.version, prereleases=True):
            out.append(f"{where}: {req.name} is locked at {got.version}, the matrix pins {req}")
    for name, entry in (parent.entries.items() if parent else ()):
        got = lock.entries.get(name)
        if got is None or got.version != entry.version or set(got.hashes) != set(entry.hashes):
            out.append(f"{where}: {name} differs from the parent's lock ({spec.parent}: {entry.version}); "
                       f"re-run `builder lock`")
    return out


def check(matrix: Matrix, images: Path) -> list[str]:
    """Offline: one line per lock that is missing, invalid, or does not fit (:func:`problems`)."""
    out: list[str] = []
    locks: dict[tuple[str, Platform], Lock] = {}
    for spec in matrix.images():
        for platform in spec.platforms:
            try:
                locks[spec.name, platform] = read(images, spec.name, platform)
            except ConfigError as exc:
                out += exc.lines
                continue
            if spec.parent is not None and (spec.parent, platform) not in locks:
                continue  # the parent's own problem is reported already
            out += problems(spec, locks[spec.name, platform], locks.get((spec.parent, platform)))
        stray = {p.name for p in (Path(images) / spec.name).glob("requirements*.lock")} - {
            file_name(p) for p in spec.platforms}
        out += [f"images/{spec.name}/{f}: a lock for a platform the image is not built for; delete it"
                for f in sorted(stray)]
    return out


def layer_problems(images: Path, spec: ImageSpec, own: Lock, parent: Lock) -> list[str]:
    """Why ``images/<name>/layer.<arch>.lock`` is not :func:`builder.generate.lock.layer` of ``own`` and
    ``parent`` (empty when it is): the child's layer installs from that file, so it must be derived
    from the lock."""
    path = Path(images) / spec.name / layer_file(own.platform)
    try:
        text = path.read_text(encoding="utf-8") if path.is_file() and not path.is_symlink() else None
    except (OSError, UnicodeDecodeError):
        text = None
    if text != layer(own, parent):
        return [f"images/{spec.name}/{layer_file(own.platform)}: not derived from {file_name(own.platform)} "
                f"(edited, or stale); run `builder render`"]
    return []


def verify(images: Path, specs: Iterable[ImageSpec], layers: bool = True, stopped: str = "nothing was built") -> None:
    """The offline check of the locks a run uses, before anything is built: for each of ``specs``
    (ancestors first, as :func:`builder.matrix.plan.select` gives them) and each of its platforms, the lock
    parses (:func:`builder.generate.lock.parse`), fits the image (:func:`problems`: header, matrix pins,
    parent agreement) and, with ``layers``, its ``layer.<arch>.lock`` is derived from it
    (:func:`layer_problems`).

    Raises ConfigError with one line: the first image that fails, its first mismatch, how many more
    images fail, and ``stopped`` (what the caller did not do). Returns None when every lock holds."""
    seen: dict[tuple[str, Platform], Lock] = {}
    failed: list[str] = []
    for spec in specs:
        for platform in spec.platforms:
            try:
                own = seen[spec.name, platform] = read(images, spec.name, platform)
                parent = (seen.get((spec.parent, platform)) or read(images, spec.parent, platform)) if spec.parent else None
            except ConfigError as exc:
                failed.append(exc.lines[0])
                break
            found = problems(spec, own, parent) + (layer_problems(images, spec, own, parent) if layers and parent else [])
            if found:
                failed.append(found[0])
                break
    if failed:
        more = f" ({len(failed) - 1} more image(s) fail: `builder lock --check` lists them)" if len(failed) > 1 else ""
        raise ConfigError([f"lock check: {failed[0]}{more}; {stopped}"])


def uv_environment(sources: Sources) -> dict[str, str]:
    """uv's environment for ``sources`` (uv reads no pip configuration): ``UV_INDEX_URL``,
    ``UV_EXTRA_INDEX_URL`` with ``UV_INDEX_STRATEGY=unsafe-best-match`` (pip's behaviour),
    ``UV_FIND_LINKS`` for a wheelhouse and ``SSL_CERT_FILE`` for a CA bundle
    (https://docs.astral.sh/uv/reference/environment/)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UV_")}
    if sources.index_url:
        env["UV_INDEX_URL"] = sources.index_url
    if sources.extra_index_urls:
        env["UV_EXTRA_INDEX_URL"] = " ".join(sources.extra_index_urls)
        env["UV_INDEX_STRATEGY"] = "unsafe-best-match"
    if sources.wheelhouse:
        env["UV_FIND_LINKS"] = str(sources.wheelhouse)
    if sources.ca_bundle:
        env["SSL_CERT_FILE"] = str(sources.ca_bundle)
    env["UV_NO_PROGRESS"] = "1"
    return env


def header(spec: ImageSpec, own: list[Requirement], platform: Platform) -> str:
    """The lock's comment header: ownership notice, the facts :func:`builder.generate.lock.parse` reads back,
    the pins."""
    lines = [f"# {GENERATED} from matrix.yaml — do not edit.",
             "# Change matrix.yaml, then run `builder lock` (`--upgrade-package NAME` moves one package).",
             f"# image: {spec.name}",
             f"# python: {spec.python}",
             f"# platform: {platform}"]
    if spec.parent:
        lines.append(f"# parent: {spec.parent}")
        lines.append("# Every package of the parent's lock is here unchanged (it was the resolution's constraint).")
    lines.append("# The image's own pins: " + " ".join(str(r) for r in own))
    return "\n".join(lines) + "\n"


def resolve(requirements: Iterable[str], python: str, parent: Lock | None, sources: Sources,
            previous: Lock | None = None, upgrade: Iterable[str] = (), platform: Platform = DEFAULT) -> str:
    """Resolve ``requirements`` (PEP 508 strings) with uv for ``python`` on ``platform`` from wheels
    only, and return the lock's body: ``name==version`` entries with every ``--hash``, sorted by name.

    ``parent`` is the lock of the image installed beneath (its packages are requirements and
    constraints, and its entries are copied verbatim); ``previous`` a lock whose versions uv keeps
    unless ``upgrade`` names the package. Raises ConfigError with uv's last lines when the set does
    not resolve.
    """
    with tempfile.TemporaryDirectory(prefix="builder-lock-") as tmp:
        root = Path(tmp)
        (root / "requirements.in").write_text("".join(f"{r}\n" for r in requirements))
        args = [sys.executable, "-m", "uv", "pip", "compile", "--quiet", "--no-config", "--generate-hashes",
                "--only-binary", ":all:", "--no-header", "--no-annotate", "--python-version", python,
                "--python-platform", platform.uv_triple, "-o", "out.lock", "requirements.in"]
        if parent is not None:
            pins = "".join(f"{n}=={e.version}\n" for n, e in parent.entries.items())
            (root / "parent.txt").write_text(pins)
            args[-1:] = ["-c", "parent.txt", "requirements.in", "parent.txt"]
        if previous is not None:
            (root / "out.lock").write_text(previous.text)  # uv prefers the versions already in the output file
        for name in upgrade:
            args[-1:-1] = ["--upgrade-package", name]
        r = subprocess.run(args, cwd=root, env=uv_environment(sources), capture_output=True, text=True)
        if r.returncode != 0:
            tail = [line for line in r.stderr.splitlines() if line.strip()][-6:]
            raise ConfigError(["uv pip compile failed:"] + [f"  {line}" for line in tail])
        body = (root / "out.lock").read_text()
    resolved = parse(f"# image: uv-output\n# python: {python}\n# platform: {platform}\n" + body, "uv's output")
    for text in requirements:  # uv writes ==; keep the matrix's arbitrary equality (===)
        req = Requirement(text)
        name = canonicalize_name(req.name)
        if any(s.operator == "===" for s in req.specifier) and name in resolved.entries:
            resolved.entries[name] = replace(resolved.entries[name], operator="===")
    return _body(resolved, parent)


def lock_image(spec: ImageSpec, parent: Lock | None, sources: Sources, previous: Lock | None,
               upgrade: Iterable[str] = (), platform: Platform = DEFAULT) -> Lock:
    """Resolve ``spec``'s whole install set (:func:`resolve`) and return the new lock (not written).
    Raises ConfigError naming the image when it does not resolve."""
    own = list(spec.requirements)
    try:
        body = resolve([str(r) for r in own], spec.python, parent, sources, previous, upgrade, platform)
    except ConfigError as exc:
        raise ConfigError([f"{spec.name}: {exc.lines[0]}", *exc.lines[1:]]) from None
    return parse(header(spec, own, platform) + body, f"{spec.name} (new lock)")


def _body(resolved: Lock, parent: Lock | None) -> str:
    # Entries sorted by name; the parent's entries replace uv's for the same package (same version).
    entries = dict(resolved.entries)
    for name, entry in (parent.entries.items() if parent else ()):
        entries[name] = entry
    return "".join(entries[name].line() for name in sorted(entries))


def write(images: Path, lock: Lock) -> Path:
    """Write ``lock`` to ``images/<image>/<file_name(platform)>`` atomically. Raises ConfigError,
    writing nothing, when a file is there that `builder lock` did not write."""
    path = path_of(images, lock.image, lock.platform)
    ensure_ours(path)
    files.write_atomic(path, lock.text)
    return path


def lock_all(matrix: Matrix, specs: list[ImageSpec], images: Path, sources: Sources, upgrade: Iterable[str] = (),
             log: Callable[[str], None] = print, newest: bool = False, write_locks: bool = True) -> list[Lock]:
    """Lock ``specs`` (build order; parents of a selection are read from disk when not selected) and
    write each lock as soon as it resolves (not with ``write_locks``: ``builder outdated``). With
    ``newest`` every package moves to the newest version the pins allow (``builder refresh``).
    Raises ConfigError on the first image that fails."""
    upgrade = list(upgrade)
    done: dict[tuple[str, Platform], Lock] = {}
    for spec in specs:
        for platform in spec.platforms:
            parent = None
            if spec.parent is not None:
                parent = done.get((spec.parent, platform)) or read(images, spec.parent, platform)
            try:
                previous = None if newest else read(images, spec.name, platform)
            except ConfigError:
                previous = None
            new = lock_image(spec, parent, sources, previous, upgrade, platform)
            if write_locks:
                write(images, new)
            done[spec.name, platform] = new
            log(f"locked {spec.name} ({platform}): {len(new.entries)} packages")
    return list(done.values())
