"""The ``builder`` commands that keep the images patched: ``outdated`` (what the locks lag behind)
and ``refresh`` (move the locks to the newest allowed versions). :func:`register` adds them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from builder import files
from builder.cli.common import BuildDirOpt, ImagesOpt, MatrixOpt, SelectOpt, beside, guard, load, select_images
from builder.engine import debian_index
from builder.generate import apt_lock, lock, python_resolver, outdated
from builder.generate.outdated import Update
from builder.matrix import ImageSpec, Matrix
from builder.matrix.platform import Platform

#: Where ``builder refresh`` writes its summary, in the build folder.
SUMMARY = "refresh.md"


def outdated_command(select: Optional[list[str]] = SelectOpt,
                     as_json: bool = typer.Option(False, "--json", help="Print the JSON shape of builder.generate.outdated."),
                     python: bool = typer.Option(True, "--python/--no-python", help="Also resolve the Python pins at their newest (needs the package index)."),
                     matrix: Path = MatrixOpt, images: Optional[Path] = ImagesOpt, build_dir: Path = BuildDirOpt) -> None:
    """List, per image and platform, each locked package with a newer version (old -> new, and where
    from: security, updates, point release, index). Needs no Engine: the Debian indexes come through
    a private apt state in the build folder. Exit 1 when a security update is pending (or an index
    cannot be fetched), 0 when none is."""
    m = load(matrix)
    images = beside(matrix, images, "images")
    specs = select_images(m, select)
    with guard():
        files.claim_folder(build_dir)
        updates = outdated.debian_updates(m, specs, images, build_dir / "apt-index")
        if python:
            updates += _python_updates(m, specs, images)
    if as_json:
        typer.echo(json.dumps(outdated.as_json(updates, specs), indent=2))
    else:
        for line in outdated.lines(updates):
            typer.echo(line)
        typer.echo(f"{len(updates)} update(s), {outdated.security_pending(updates)} security update(s) pending "
                   f"({len(specs)} images)")
    if outdated.security_pending(updates):
        raise typer.Exit(1)


def _python_updates(m: Matrix, specs: list[ImageSpec], images: Path) -> list[Update]:
    # The committed Python locks against the pins resolved at their newest (nothing written).
    from builder.engine.sources import Sources

    committed = [got for spec in specs for got in lock.read_platforms(images, spec).values()]
    newest = python_resolver.lock_all(m, specs, images, Sources.from_env(), log=lambda line: None, newest=True, write_locks=False)
    return outdated.python_updates(committed, newest)


def refresh_command(select: Optional[list[str]] = SelectOpt,
                    security_only: bool = typer.Option(False, "--security-only", help="Move only Debian packages the security suites serve newer; no point release, no Python release."),
                    matrix: Path = MatrixOpt, images: Optional[Path] = ImagesOpt, build_dir: Path = BuildDirOpt) -> None:
    """Move the base locks, apt locks and Python locks to the newest allowed versions, parents first
    (each base bootstrapped and loaded again; needs the Engine, root and the package indexes). Prints
    each package that moved and writes them as Markdown to <build dir>/refresh.md (a pull request's
    body). Then run `builder render`."""
    m = load(matrix)
    images = beside(matrix, images, "images")
    specs = select_images(m, select)
    with guard():
        files.claim_folder(build_dir)
        changes = _refresh(m, specs, images, build_dir, security_only)
        summary = files.write_atomic(files.claim_folder(build_dir) / SUMMARY, outdated.markdown(changes, security_only))
    for line in outdated.lines(changes):
        typer.echo(line)
    typer.echo(f"{len(changes)} package version(s) moved; wrote {summary}; run `builder render` and review the diff")


def _refresh(m: Matrix, specs: list[ImageSpec], images: Path, build_dir: Path, security_only: bool) -> list[Update]:
    # Bases, then the apt locks on them, then (unless security_only) the Python locks; what moved.
    # A lock is written only once everything that stands on it resolved.
    from builder.engine.sources import Sources

    roots = [s for s in specs if s.parent is None and not s.from_cuda_image]
    old_python = [got for spec in specs for got in lock.read_platforms(images, spec).values()]
    changes = _refresh_debian(m, roots, images, build_dir, security_only) if roots else []
    if not security_only:
        newest = python_resolver.lock_all(m, specs, images, Sources.from_env(), log=typer.echo, newest=True)
        changes += outdated.python_updates(old_python, newest)
    return changes


def _refresh_debian(m: Matrix, roots: list[ImageSpec], images: Path, build_dir: Path, security_only: bool) -> list[Update]:
    # The base locks, then the root images' apt locks: re-resolved on the new bases, or with
    # security_only each entry the security suite serves newer moved to that version.
    from builder import engine
    from builder.engine import bases
    from builder.generate import apt_resolver, base_resolver

    locks_root = Path(m.path).resolve().parent
    old_apt = {(s.name, p): apt_lock.read(images, s.name, p) for s in roots for p in s.platforms}
    client = engine.client(build_dir)
    native = engine.native_platform(client)
    written = base_resolver.lock_bases(client, m.data.bases, roots, build_dir / "bases", locks_root, typer.echo, native,
                                      refresh=True, security_only=security_only)
    if security_only:
        new_apt = [_security_moved(m, s, old_apt[s.name, p], build_dir) for s in roots for p in s.platforms]
        for new in new_apt:
            apt_resolver.write(images, new)
    else:
        refs = bases.for_roots(client, m.data.bases, roots, "bootstrap", build_dir / "bases",
                               lambda name, line: typer.echo(f"{name} {line}"), native,
                               base_resolver.pins_with(locks_root, "bootstrap", written))
        new_apt = apt_resolver.lock_roots(client, m, roots, refs, images, build_dir / "apt-index", log=typer.echo)
    base_resolver.write_all(locks_root, written)
    changes = [u for old, new in written for spec in roots if spec.base == new.base
               for u in _moved(spec.name, new.platform, old.versions if old else {}, new.versions, new.package_suites)]
    for new in new_apt:
        old = old_apt[new.image, new.platform]
        changes += _moved(new.image, new.platform, old.versions, new.versions, new.suites)
    return changes


def _security_moved(m: Matrix, spec: ImageSpec, old: apt_lock.AptLock, build_dir: Path) -> apt_lock.AptLock:
    # ``old`` with each entry the security suite serves newer moved to that version.
    release = m.data.bases[spec.base].bootstrap.suite
    arch = old.platform.arch
    index = debian_index.fetch(debian_index.Archive.of(release), arch, build_dir / "apt-index" / f"{release}-{arch}")
    versions, suites = dict(old.versions), dict(old.suites)
    for name, version in old.versions.items():
        if fix := debian_index.security_fix(index, name, version):
            versions[name], suites[name] = fix, f"{release}-security"
    return apt_lock.parse(apt_lock.text(old.image, old.platform, old.packages, versions, suites), f"{old.image} (new apt lock)")


def _moved(image: str, platform: Platform, old: dict[str, str], new: dict[str, str], suites: dict[str, str]) -> list[Update]:
    # The Debian packages whose version differs between ``old`` and ``new`` (added: locked "-";
    # removed: now "-", source "removed").
    moved = [Update(image, platform, "debian", name, old.get(name, "-"), version, debian_index.kind(suites[name]))
             for name, version in sorted(new.items()) if old.get(name) != version]
    return moved + [Update(image, platform, "debian", name, version, "-", "removed")
                    for name, version in sorted(old.items()) if name not in new]


def register(app: typer.Typer) -> None:
    """Add ``outdated`` and ``refresh`` to ``app``."""
    app.command("outdated")(outdated_command)
    app.command("refresh")(refresh_command)

