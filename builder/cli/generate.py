"""The ``builder`` commands of the matrix and the files made from it: ``render``, ``lock``, ``list``,
``dockerfile``, ``ci-matrix`` and ``compat refresh`` (:func:`register` adds them to the app)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from builder.cli.common import (BuildDirOpt, ImagesOpt, MatrixOpt, SelectOpt, TemplatesOpt, beside, fail, guard, load, local_path,
                                select_images, templates_dir)
from builder.generate import apt_lock, apt_resolver, base_lock, base_resolver, python_resolver, render
from builder.matrix import plan
from builder.matrix.schema import load_file
from builder.run.console import wide_console


def render_command(check: bool = typer.Option(False, "--check", help="Only compare; exit 1 listing stale, missing or extra files."),
           matrix: Path = MatrixOpt, templates: Optional[Path] = TemplatesOpt, images: Optional[Path] = ImagesOpt,
           build_dir: Path = BuildDirOpt) -> None:
    """Render images/ and docker-bake.json from matrix.yaml and templates/ (atomically; only ever
    replaces what `builder render` wrote). Writes nothing to the build folder."""
    m = load(matrix)
    images = beside(matrix, images, "images")
    folder = templates_dir(matrix, templates)
    with guard():  # render writes the layer locks: they are not checked
        rendered = render.preflight(m, folder, images, m.images(), "nothing was rendered", layers=False)
        if check:
            problems = rendered.stale()
            if problems:
                fail(problems + [f"{len(problems)} generated file(s) out of date: run `builder render`"], 1)
            typer.echo(f"images/ is fresh ({len(rendered.files)} files, {len(m.images())} images)")
            return
        bake_file = render.write_all(rendered.files, rendered.bake, images)
    typer.echo(f"rendered {len(m.images())} images ({len(rendered.files)} files) into {images}/ and {bake_file}")


def lock_command(select: Optional[list[str]] = SelectOpt,
                 upgrade_package: Optional[list[str]] = typer.Option(None, "--upgrade-package", help="Let this package move to its newest version (repeatable); every other keeps its locked version."),
                 check: bool = typer.Option(False, "--check", help="Offline: exit 1 when a lock is missing, invalid, no longer satisfies the matrix pins or disagrees with its parent's."),
                 apt: bool = typer.Option(True, "--apt/--no-apt", help="Also lock the root images' Debian packages (needs the Engine and the base images)."),
                 matrix: Path = MatrixOpt, images: Optional[Path] = ImagesOpt, build_dir: Path = BuildDirOpt) -> None:
    """Resolve each image's whole install set with uv into images/<name>/requirements.lock (hashes,
    the parent's lock as a constraint), and each selected root image's Debian packages, with every
    dependency, with its base's apt into images/<name>/apt.<arch>.lock. Needs the package index and
    the Engine, except with --check. Writes only base images' bootstrap logs to the build folder."""
    from builder.engine.sources import Sources

    from builder.matrix import grammar

    m = load(matrix)
    images = beside(matrix, images, "images")
    specs = select_images(m, select)  # checked with --check too: a bad value is never ignored
    for name in upgrade_package or []:
        try:
            grammar.distribution_name(name)
        except ValueError as exc:
            fail([f"--upgrade-package: {exc}"])
    if check:
        with guard():
            problems = (python_resolver.check(m, images) + apt_lock.check(m, images)
                        + base_lock.check(Path(m.path).resolve().parent, base_lock.used(m.images(), m.data.bases)))
        if problems:
            fail(problems + [f"{len(problems)} lock problem(s): run `builder lock`"], 1)
        typer.echo(f"locks are fresh ({len(m.images())} images)")
        return
    with guard():
        sources = Sources.from_env()
        locks = python_resolver.lock_all(m, specs, images, sources, upgrade_package or [], log=typer.echo)
        if apt:
            locks += _lock_apt(m, specs, images, build_dir)
    typer.echo(f"wrote {len(locks)} lock(s); run `builder render` and review the diff")


def _lock_apt(m, specs: list, images: Path, build_dir: Path) -> list:
    # The selected root images' Debian package locks, from their bases (made as a build makes them).
    from builder import engine
    from builder.engine import bases

    roots = [s for s in specs if s.parent is None]
    if not roots:
        return []
    client = engine.client(build_dir)
    native = engine.native_platform(client)
    locks = Path(m.path).resolve().parent
    written = base_resolver.lock_bases(client, m.data.bases, roots, build_dir / "bases", locks, typer.echo, native)
    refs = bases.for_roots(client, m.data.bases, roots, "bootstrap", build_dir / "bases",
                           lambda name, line: typer.echo(f"{name} {line}"), native,
                           base_resolver.pins_with(locks, "bootstrap", written))
    done = apt_resolver.lock_roots(client, m, roots, refs, images, build_dir / "apt-index", log=typer.echo)
    base_resolver.write_all(locks, written)  # once every apt lock on them resolved
    for _, new in written:
        typer.echo(f"wrote {base_lock.path_of(locks, new.base, new.platform)}: {len(new.versions)} Debian packages")
    return done


def list_(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
          matrix: Path = MatrixOpt, build_dir: Path = BuildDirOpt) -> None:
    """Print the expanded matrix: name, parent, framework, version, device, python, os, tags.
    Writes nothing to the build folder."""
    m = load(matrix)
    policy = m.data.tags
    rows = [{"name": s.name, "parent": s.parent, "framework": s.framework, "version": s.version,
             "device": s.device, "python": s.python, "os": s.base, "cuda": s.cuda,
             "tags": [*policy.moving, policy.immutable]} for s in m.images()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False, show_edge=False)
    for header in ("NAME", "PARENT", "FRAMEWORK", "VERSION", "DEVICE", "PYTHON", "OS", "TAGS"):
        table.add_column(header, no_wrap=True)
    for r in rows:
        table.add_row(r["name"], r["parent"] or "-", r["framework"], r["version"], r["device"], r["python"], r["os"],
                      ", ".join(r["tags"]))
    wide_console().print(table)


def dockerfile(name: str, matrix: Path = MatrixOpt, templates: Optional[Path] = TemplatesOpt,
               build_dir: Path = BuildDirOpt) -> None:
    """Print one image's rendered Dockerfile. Writes nothing to the build folder."""
    m = load(matrix)
    try:
        spec = m.image(name)
    except KeyError as exc:
        fail([str(exc.args[0])])
    with guard():
        files = render.render_committed(m, templates_dir(matrix, templates), beside(matrix, None, "images"))
    typer.echo(files[f"{spec.name}/Dockerfile"], nl=False)


def ci_matrix(select: Optional[list[str]] = SelectOpt, matrix: Path = MatrixOpt,
              by_platform: bool = typer.Option(False, "--by-platform", help="One job per image tree and platform, each on its platform's native runner (then `builder merge`)."),
              build_dir: Path = BuildDirOpt) -> None:
    """Print a GitHub Actions strategy.matrix (JSON): one job per image tree, parents inside the job.
    Writes nothing to the build folder."""
    specs = select_images(load(matrix), select)
    split = {s.name: s.platforms for s in specs} if by_platform else None
    typer.echo(json.dumps(plan.ci_matrix({s.name: s.parent for s in specs}, split)))




def compat_refresh(matrix: Path = MatrixOpt,
                   compat: Path = typer.Option(Path("compat.yaml"), "--compat", parser=local_path, help="The table to rewrite."),
                   build_dir: Path = BuildDirOpt) -> None:
    """Re-resolve every framework version in the matrix from package metadata (uv; needs the index).
    Writes nothing to the build folder."""
    from builder.matrix.compat import refresh

    with guard():
        data = load_file(matrix)
        versions = {key: list(dict.fromkeys(v.version for v in fw.versions)) for key, fw in data.frameworks.items()}
        refresh(compat, versions, log=typer.echo)
    typer.echo(f"wrote {compat}; run `builder render` and review the diff")


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    for name, command in (("render", render_command), ("lock", lock_command), ("list", list_),
                          ("dockerfile", dockerfile), ("ci-matrix", ci_matrix)):
        app.command(name)(command)
    compat_app = typer.Typer(help="The compatibility table (compat.yaml) the matrix is validated against.",
                             rich_markup_mode=None, no_args_is_help=True)
    compat_app.command("refresh")(compat_refresh)
    app.add_typer(compat_app, name="compat")
