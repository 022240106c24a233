"""The ``builder`` command line (typer). Exit codes: 0 success, 1 a stale check, a failed image or an
Engine/registry that cannot be reached, 2 bad input (an invalid matrix or config, an unknown image
name or selection, a path the tool will not write to).

Errors are one plain line each on stderr (never wrapped, values cut to 80 characters). Only the
project's own error types and OSError on a user's path are caught; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import signal
import sys
from pathlib import Path
from typing import Iterator, NoReturn, Optional

import typer

from builder import bake as bake_mod
from builder import inputs, pipeline
from builder import matrix as matrix_mod
from builder import render as render_mod
from builder.bases import BaseError
from builder.engine import EngineError
from builder.inputs import InputError
from builder.publish import PublishError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False,
                  help="Render, build, smoke-test, tag and publish ML inference images from matrix.yaml.")
#: The templates that ship with the project (a checkout or an editable install).
PACKAGE_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

MatrixOpt = typer.Option(Path("matrix.yaml"), "--matrix", help="The matrix file.")
TemplatesOpt = typer.Option(None, "--templates", help="The templates folder [default: templates/ beside the matrix].")
ImagesOpt = typer.Option(None, "--images", help="Where generated build contexts live [default: images/ beside the matrix].")
SelectOpt = typer.Option(None, "--select", help="Glob over image names (repeatable); ancestors are included.")


def fail(lines: list[str], code: int = 2) -> NoReturn:
    """Print ``lines`` to stderr as they are (no wrapping, no markup) and exit with ``code``."""
    for line in lines:
        sys.stderr.write(line + "\n")
    raise typer.Exit(code)


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """Turn the project's own errors into one line each and an exit code (see the module doc)."""
    try:
        yield
    except InputError as exc:
        fail(exc.lines, 2)
    except OSError as exc:  # a user's path that cannot be read or written
        where = f"{exc.filename}: " if exc.filename else ""
        fail([f"{where}{exc.strerror or exc}"], 2)
    except (EngineError, BaseError, PublishError) as exc:
        fail([f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"], 1)


def _load(path: Path) -> matrix_mod.Matrix:
    with guard():
        return matrix_mod.load(path)


def _beside(matrix: Path, given: Optional[Path], name: str) -> Path:
    """``given``, or the folder ``name`` beside the matrix file (never the current directory's)."""
    return given if given is not None else Path(matrix).resolve().parent / name


def _templates(matrix: Path, given: Optional[Path]) -> Path:
    folder = _beside(matrix, given, "templates")
    if given is None and not folder.is_dir():
        folder = PACKAGE_TEMPLATES
    if not (folder / "layers").is_dir():
        fail([f"--templates: {folder} holds no layers/ templates"])
    return folder


def _select(m: matrix_mod.Matrix, patterns: Optional[list[str]]) -> list[matrix_mod.ImageSpec]:
    try:
        return pipeline.select(m, patterns or [])
    except ValueError as exc:
        fail([str(exc)])


@app.command()
def render(check: bool = typer.Option(False, "--check", help="Only compare; exit 1 listing stale, missing or extra files."),
           matrix: Path = MatrixOpt, templates: Optional[Path] = TemplatesOpt, images: Optional[Path] = ImagesOpt) -> None:
    """Render images/ and docker-bake.json from matrix.yaml and templates/ (atomically; only ever
    replaces what `builder render` wrote)."""
    m = _load(matrix)
    images = _beside(matrix, images, "images")
    with guard():
        files = render_mod.render_all(m, _templates(matrix, templates))
        bake_text = bake_mod.render(m, images.name)
        if check:
            problems = render_mod.check(files, images) + render_mod.check_bake(bake_text, images)
            if problems:
                fail(problems + [f"{len(problems)} generated file(s) out of date: run `builder render`"], 1)
            typer.echo(f"images/ is fresh ({len(files)} files, {len(m.images())} images)")
            return
        bake = render_mod.write_all(files, bake_text, images)
    typer.echo(f"rendered {len(m.images())} images ({len(files)} files) into {images}/ and {bake}")


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
          matrix: Path = MatrixOpt) -> None:
    """Print the expanded matrix: name, parent, framework, version, device, python, os, tags."""
    m = _load(matrix)
    policy = m.data.tags
    rows = [{"name": s.name, "parent": s.parent, "framework": s.framework, "version": s.version,
             "device": s.device, "python": s.python, "os": s.base, "cuda": s.cuda,
             "tags": [*policy.moving, policy.immutable]} for s in m.images()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    header = ["NAME", "PARENT", "FRAMEWORK", "VERSION", "DEVICE", "PYTHON", "OS", "TAGS"]
    table = [header] + [[r["name"], r["parent"] or "-", r["framework"], r["version"], r["device"],
                         r["python"], r["os"], ", ".join(r["tags"])] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


@app.command()
def dockerfile(name: str, matrix: Path = MatrixOpt, templates: Optional[Path] = TemplatesOpt) -> None:
    """Print one image's rendered Dockerfile."""
    m = _load(matrix)
    try:
        spec = m.image(name)
    except KeyError as exc:
        fail([str(exc.args[0])])
    typer.echo(render_mod.render_image(m, spec, _templates(matrix, templates))["Dockerfile"], nl=False)


class BaseSource(str, enum.Enum):
    """Where a base image comes from (see builder.bases)."""

    auto = "auto"
    pull = "pull"
    bootstrap = "bootstrap"


def _run(stage: pipeline.Stage, opts: pipeline.Options, matrix: Path, templates: Optional[Path]) -> None:
    m = _load(matrix)
    _select(m, opts.select)
    if opts.registry:
        with guard():
            try:
                inputs.registry(opts.registry)
            except ValueError as exc:
                fail([f"--registry: {exc}"])
    if stage != "publish" and not opts.dry_run:
        with guard():
            problems = (render_mod.check(render_mod.render_all(m, _templates(matrix, templates)), opts.images_dir)
                        + render_mod.check_bake(bake_mod.render(m, opts.images_dir.name), opts.images_dir))
        if problems:
            fail(problems + ["images/ is out of date: run `builder render` first"])
    p = pipeline.Pipeline(m, opts)
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)  # a cancelled CI job stops like Ctrl-C
    try:
        with guard():
            reports = p.run()
    except KeyboardInterrupt:
        fail([f"interrupted: running builds and smoke tests were stopped; no image that was not done got latest "
              f"or was pushed; report: {opts.build_dir / 'report.json'}"], 130)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not opts.dry_run:
        pipeline.wide_console().print(p.summary())
        typer.echo(f"report: {opts.build_dir / 'report.json'}")
    if any(r.failed for r in reports):
        raise typer.Exit(1)


def _stage_command(stage: pipeline.Stage, doc: str):
    def command(select: Optional[list[str]] = SelectOpt,
                dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be done."),
                registry: str = typer.Option("", "--registry", envvar="REGISTRY", help="host:port[/namespace]; default: a local registry on 127.0.0.1:5000."),
                base_source: BaseSource = typer.Option(BaseSource.auto, "--base-source", help="Where bases come from."),
                no_cache: bool = typer.Option(False, "--no-cache", help="Ignore BuildKit's layer cache (a cold build)."),
                jobs: int = typer.Option(8, "--jobs", "-j", envvar="BUILDER_JOBS", min=1, help="Images worked on at once."),
                test_jobs: int = typer.Option(max(1, os.cpu_count() or 1), "--test-jobs", envvar="BUILDER_TEST_JOBS", min=1,
                                              help="Smoke tests run at once [default: one per CPU]."),
                matrix: Path = MatrixOpt, templates: Optional[Path] = TemplatesOpt, images: Optional[Path] = ImagesOpt,
                tests: Optional[Path] = typer.Option(None, "--tests", help="Smoke-test folders, one per framework [default: tests/by_image beside the matrix]."),
                build_dir: Path = typer.Option(Path("build"), "--build-dir", help="Logs, report, bases, registry storage.")) -> None:
        opts = pipeline.Options(stage=stage, select=select or [], dry_run=dry_run, registry=registry,
                                base_source=base_source.value, images_dir=_beside(matrix, images, "images"),
                                tests_root=_beside(matrix, tests, "tests/by_image"), build_dir=build_dir,
                                no_cache=no_cache, jobs=jobs, test_jobs=test_jobs)
        _run(stage, opts, matrix, templates)
    command.__doc__ = doc
    return command


app.command("build")(_stage_command("build", "Build the selected images (bases first) and give each its immutable tag."))
app.command("test")(_stage_command("test", "Build, then smoke-test the selected images; a passing image is tagged latest."))
app.command("publish")(_stage_command("publish", "Push the selected images already tagged latest, and verify their digests."))
app.command("all")(_stage_command("all", "Build, smoke-test, tag and publish the selected images."))


@app.command("ci-matrix")
def ci_matrix(select: Optional[list[str]] = SelectOpt, matrix: Path = MatrixOpt) -> None:
    """Print a GitHub Actions strategy.matrix (JSON): one job per image tree, parents inside the job."""
    from builder import plan

    specs = _select(_load(matrix), select)
    typer.echo(json.dumps(plan.ci_matrix({s.name: s.parent for s in specs})))


def _registry(registry: str) -> str:
    from builder import engine

    if registry:
        try:
            inputs.registry(registry)
        except ValueError as exc:
            fail([f"--registry: {exc}"])
    return registry or engine.LOCAL_REGISTRY


@app.command()
def extend(config: Path = typer.Argument(..., help="Inference config: Azure ML's JSON form or the YAML equivalent."),
           out: Optional[Path] = typer.Option(None, "--out", help="Build context folder [default: build/extend/<config folder name>]."),
           build_it: bool = typer.Option(False, "--build", help="Also build the image."),
           tag_: Optional[str] = typer.Option(None, "--tag", help="Name for the built image [default: <config folder name>:latest]."),
           template: Optional[Path] = typer.Option(None, "--template", help='Your template; it may {% extends "extend/Dockerfile.j2" %}.'),
           allow_outside: Optional[list[Path]] = typer.Option(None, "--allow-outside", help="Another folder the config's paths may point into (repeatable)."),
           registry: str = typer.Option("", "--registry", envvar="REGISTRY", help="Where matrix-named bases are published [default: 127.0.0.1:5000]."),
           matrix: Path = MatrixOpt) -> None:
    """Write a Dockerfile and build context that extend a prebuilt image with a model, code and packages."""
    from builder import extend as ext_mod

    m = _load(matrix)
    reg = _registry(registry)
    name = tag_ or f"{ext_mod.default_name(config)}:latest"
    if tag_ is not None:
        try:
            inputs.docker_reference(tag_)
        except ValueError as exc:
            fail([f"--tag: {exc}"])
    target = out or ext_mod.default_out(config)
    with guard():
        ext = ext_mod.prepare(config, m, reg, template, allow_outside=allow_outside or [])
        if build_it:
            result = ext_mod.build(config, m, reg, template, name, target, allow_outside or [])
            typer.echo(f"wrote {target}/Dockerfile FROM {result.base}")
            if not result.build.ok:
                fail([f"build failed: {result.build.error} (log {result.build.log_path})"], 1)
            typer.echo(f"built {name} ({result.build.image_id}) in {result.build.seconds:.0f} s")
            return
        ext_mod.write(ext, target)
    typer.echo(f"wrote {target}/Dockerfile FROM {ext.base.ref}")


def _stop_on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt


@app.command()
def serve(image: str = typer.Argument(..., help="An image reference, or a matrix image name (its latest tag)."),
          model: Optional[Path] = typer.Option(None, "--model", help="Model file or folder (mounted read-only)."),
          entry_script: Path = typer.Option(..., "--entry-script", help="score.py with init() and run(); its folder is mounted read-only."),
          port: int = typer.Option(8890, "--port", min=1, max=65535, help="Host port on 127.0.0.1."),
          registry: str = typer.Option("", "--registry", envvar="REGISTRY", help="Where matrix-named images are published."),
          matrix: Path = MatrixOpt) -> None:
    """Run an image locally with a model and entry script until Ctrl-C, then remove the container."""
    import docker

    from builder import engine, serve as serve_mod, tag as tag_mod
    from builder.smoke import NotHealthy

    m = _load(matrix)
    problems = []
    if not entry_script.is_file():
        problems.append(f"--entry-script: {entry_script} is not a file")
    if model is not None and not model.exists():
        problems.append(f"--model: {model} does not exist")
    try:
        ref = f"{tag_mod.repository(_registry(registry), m.image(image).name)}:latest"
    except KeyError:
        ref = image
        try:
            inputs.docker_reference(image)
        except ValueError as exc:
            fail([f"IMAGE: {exc}"])
    with guard():
        client = engine.client()
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        problems.append(f"image {ref} is not on this Engine (build or pull it first)")
    if problems:
        fail(problems)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)  # `docker stop`-style shutdown cleans up like Ctrl-C
    try:
        with serve_mod.running(client, ref, model, entry_script, port, m.data.runtime.app_root) as served:
            typer.echo(f"serving {ref} (healthy after {served.seconds_to_healthy:.1f} s)")
            typer.echo(f"scoring URI: {served.scoring_uri}")
            typer.echo(f"swagger URI: {served.swagger_uri}")
            typer.echo("press Ctrl-C to stop", err=True)
            code = served.container.wait()["StatusCode"]
            sys.stderr.write(served.container.logs(tail=40).decode(errors="replace"))
            fail([f"the container exited with code {code}"], 1)
    except NotHealthy as exc:
        fail([str(exc)], 1)
    except KeyboardInterrupt:
        typer.echo("stopped; container removed", err=True)


compat_app = typer.Typer(help="The compatibility table (compat.yaml) the matrix is validated against.",
                         rich_markup_mode=None, no_args_is_help=True)
app.add_typer(compat_app, name="compat")


@compat_app.command("refresh")
def compat_refresh(matrix: Path = MatrixOpt,
                   compat: Path = typer.Option(Path("compat.yaml"), "--compat", help="The table to rewrite.")) -> None:
    """Re-resolve every framework version in the matrix from package metadata (uv; needs the index)."""
    from builder import compat as compat_mod

    with guard():
        data = matrix_mod.load_file(matrix)
        versions = {key: list(dict.fromkeys(v.version for v in fw.versions)) for key, fw in data.frameworks.items()}
        compat_mod.refresh(compat, versions, log=typer.echo)
    typer.echo(f"wrote {compat}; run `builder render` and review the diff")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
