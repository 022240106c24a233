"""The ``builder`` command line (typer). Exit codes: 0 success, 1 a stale check or a failed image,
2 bad input (an invalid matrix, an unknown image name or selection)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from builder import matrix as matrix_mod
from builder import bake as bake_mod
from builder import pipeline, render as render_mod

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Render, build, smoke-test, tag and publish ML inference images from matrix.yaml.")
err = pipeline.wide_console(stderr=True)

MatrixOpt = typer.Option(Path("matrix.yaml"), "--matrix", help="The matrix file.")
TemplatesOpt = typer.Option(Path("templates"), "--templates", help="The templates folder.")
ImagesOpt = typer.Option(Path("images"), "--images", help="Where generated build contexts live.")


def _load(path: Path) -> matrix_mod.Matrix:
    try:
        return matrix_mod.load(path)
    except matrix_mod.MatrixError as exc:
        for line in exc.lines:
            err.print(line, markup=False)
        raise typer.Exit(2) from None


@app.command()
def render(check: bool = typer.Option(False, "--check", help="Only compare; exit 1 listing stale, missing or extra files."),
           matrix: Path = MatrixOpt, templates: Path = TemplatesOpt, images: Path = ImagesOpt) -> None:
    """Render images/ from matrix.yaml and templates/ (atomically; removes images no longer in the matrix)."""
    m = _load(matrix)
    files = render_mod.render_all(m, templates)
    bake_text = bake_mod.render(m, images.name)
    if check:
        problems = render_mod.check(files, images) + render_mod.check_bake(bake_text, images)
        for p in problems:
            err.print(p, markup=False)
        if problems:
            err.print(f"{len(problems)} generated file(s) out of date: run `builder render`", markup=False)
            raise typer.Exit(1)
        typer.echo(f"images/ is fresh ({len(files)} files, {len(m.images())} images)")
        return
    render_mod.write(files, images)
    bake = render_mod.write_bake(bake_text, images)
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
def dockerfile(name: str, matrix: Path = MatrixOpt, templates: Path = TemplatesOpt) -> None:
    """Print one image's rendered Dockerfile."""
    m = _load(matrix)
    try:
        spec = m.image(name)
    except KeyError as exc:
        err.print(str(exc.args[0]), markup=False)
        raise typer.Exit(2) from None
    typer.echo(render_mod.render_image(m, spec, templates)["Dockerfile"], nl=False)


def _run(stage: pipeline.Stage, select: list[str], dry_run: bool, registry: str, base_source: str,
         matrix: Path, templates: Path, images: Path, tests: Path, build_dir: Path, no_cache: bool,
         jobs: int) -> None:
    m = _load(matrix)
    opts = pipeline.Options(stage=stage, select=select or [], dry_run=dry_run, registry=registry,
                            base_source=base_source, images_dir=images, tests_root=tests, build_dir=build_dir,
                            no_cache=no_cache, jobs=jobs)
    try:
        pipeline.select(m, opts.select)
    except ValueError as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(2) from None
    if stage != "publish" and not dry_run:
        problems = (render_mod.check(render_mod.render_all(m, templates), images)
                    + render_mod.check_bake(bake_mod.render(m, images.name), images))
        if problems:
            for p in problems:
                err.print(p, markup=False)
            err.print("images/ is out of date: run `builder render` first", markup=False)
            raise typer.Exit(2)
    p = pipeline.Pipeline(m, opts)
    try:
        reports = p.run()
    except Exception as exc:  # engine or registry unavailable: nothing was built
        err.print(f"{type(exc).__name__}: {exc}", markup=False)
        raise typer.Exit(1) from None
    if not dry_run:
        pipeline.wide_console().print(p.summary())
        typer.echo(f"report: {build_dir / 'report.json'}")
    if any(r.failed for r in reports):
        raise typer.Exit(1)


def _stage_command(stage: pipeline.Stage, doc: str):
    def command(select: Optional[list[str]] = typer.Option(None, "--select", help="Glob over image names (repeatable); ancestors are included."),
                dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be done."),
                registry: str = typer.Option("", "--registry", envvar="REGISTRY", help="host:port[/namespace]; default: a local registry on 127.0.0.1:5000."),
                base_source: str = typer.Option("auto", "--base-source", help="auto, pull or bootstrap."),
                no_cache: bool = typer.Option(False, "--no-cache", help="Ignore BuildKit's layer cache (a cold build)."),
                jobs: int = typer.Option(4, "--jobs", "-j", envvar="BUILDER_JOBS", min=1, help="Images worked on at once."),
                matrix: Path = MatrixOpt, templates: Path = TemplatesOpt, images: Path = ImagesOpt,
                tests: Path = typer.Option(Path("tests/by_image"), "--tests", help="Smoke-test folders, one per framework."),
                build_dir: Path = typer.Option(Path("build"), "--build-dir", help="Logs, report, bases, registry storage.")) -> None:
        if base_source not in ("auto", "pull", "bootstrap"):
            err.print(f"--base-source: {base_source!r} is not one of auto, pull, bootstrap", markup=False)
            raise typer.Exit(2)
        _run(stage, select or [], dry_run, registry, base_source, matrix, templates, images, tests, build_dir,
             no_cache, jobs)
    command.__doc__ = doc
    return command


app.command("build")(_stage_command("build", "Build the selected images (bases first) and give each its immutable tag."))
app.command("test")(_stage_command("test", "Build, then smoke-test the selected images; a passing image is tagged latest."))
app.command("publish")(_stage_command("publish", "Push the selected images already tagged latest, and verify their digests."))
app.command("all")(_stage_command("all", "Build, smoke-test, tag and publish the selected images."))


@app.command("ci-matrix")
def ci_matrix(select: Optional[list[str]] = typer.Option(None, "--select", help="Glob over image names (repeatable); ancestors are included."),
              matrix: Path = MatrixOpt) -> None:
    """Print a GitHub Actions strategy.matrix (JSON): one job per image tree, parents inside the job."""
    from builder import plan

    m = _load(matrix)
    try:
        specs = pipeline.select(m, select or [])
    except ValueError as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(plan.ci_matrix({s.name: s.parent for s in specs})))


def _registry(registry: str) -> str:
    from builder import engine
    return registry or engine.LOCAL_REGISTRY


@app.command()
def extend(config: Path = typer.Argument(..., help="Inference config: Azure ML's JSON form or the YAML equivalent."),
           out: Optional[Path] = typer.Option(None, "--out", help="Build context folder [default: build/extend/<config folder name>]."),
           build_it: bool = typer.Option(False, "--build", help="Also build the image."),
           tag_: Optional[str] = typer.Option(None, "--tag", help="Name for the built image [default: <config folder name>:latest]."),
           template: Optional[Path] = typer.Option(None, "--template", help='Your template; it may {% extends "extend/Dockerfile.j2" %}.'),
           registry: str = typer.Option("", "--registry", envvar="REGISTRY", help="Where matrix-named bases are published [default: 127.0.0.1:5000]."),
           matrix: Path = MatrixOpt) -> None:
    """Write a Dockerfile and build context that extend a prebuilt image with a model, code and packages."""
    from builder import extend as ext_mod

    m = _load(matrix)
    reg = _registry(registry)
    try:
        ext = ext_mod.prepare(config, m, reg, template)
        if build_it:
            from builder import engine
            client = engine.client()
            auth = ext.config.base_image_registry.credentials() if ext.config.base_image_registry else None
            python, device = ext_mod.inspect_base(client, ext.base, auth, m.data.project.label_prefix)
            ext = ext_mod.prepare(config, m, reg, template, image_python=python, image_device=device)
    except ext_mod.ExtendError as exc:
        for line in exc.lines:
            err.print(line, markup=False)
        raise typer.Exit(2) from None
    target = out or ext_mod.default_out(config)
    ext_mod.write(ext, target)
    typer.echo(f"wrote {target}/Dockerfile FROM {ext.base.ref}")
    if not build_it:
        return
    from builder import build as build_mod
    from builder.sources import Sources, wheelhouse_image
    name = tag_ or f"{ext_mod.default_name(config)}:latest"
    engine.ensure_buildx()
    sources = Sources.from_env()
    with sources.secrets() as secrets:
        result = build_mod.build(name, target, name,
                                 {"WHEELHOUSE_IMAGE": wheelhouse_image(client, sources.wheelhouse)}, secrets,
                                 Path("build/logs") / f"extend-{ext_mod.default_name(config)}.build.log")
    if not result.ok:
        err.print(f"build failed: {result.error} (log {result.log_path})", markup=False)
        raise typer.Exit(1)
    typer.echo(f"built {name} ({result.image_id}) in {result.seconds:.0f} s")


def _stop_on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt


@app.command()
def serve(image: str = typer.Argument(..., help="An image reference, or a matrix image name (its latest tag)."),
          model: Optional[Path] = typer.Option(None, "--model", help="Model file or folder (mounted read-only)."),
          entry_script: Path = typer.Option(..., "--entry-script", help="score.py with init() and run(); its folder is mounted read-only."),
          port: int = typer.Option(8890, "--port", help="Host port on 127.0.0.1."),
          registry: str = typer.Option("", "--registry", envvar="REGISTRY", help="Where matrix-named images are published."),
          matrix: Path = MatrixOpt) -> None:
    """Run an image locally with a model and entry script until Ctrl-C, then remove the container."""
    import signal

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
    client = engine.client()
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        problems.append(f"image {ref} is not on this Engine (build or pull it first)")
    for p in problems:
        err.print(p, markup=False)
    if problems:
        raise typer.Exit(2)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)  # `docker stop`-style shutdown cleans up like Ctrl-C
    try:
        with serve_mod.running(client, ref, model, entry_script, port, m.data.runtime.app_root) as served:
            typer.echo(f"serving {ref} (healthy after {served.seconds_to_healthy:.1f} s)")
            typer.echo(f"scoring URI: {served.scoring_uri}")
            typer.echo(f"swagger URI: {served.swagger_uri}")
            typer.echo("press Ctrl-C to stop", err=True)
            code = served.container.wait()["StatusCode"]
            err.print(served.container.logs(tail=40).decode(errors="replace"), markup=False)
            err.print(f"the container exited with code {code}", markup=False)
            raise typer.Exit(1)
    except NotHealthy as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(1) from None
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

    try:
        data = matrix_mod.load_file(matrix)
    except matrix_mod.MatrixError as exc:
        for line in exc.lines:
            err.print(line, markup=False)
        raise typer.Exit(2) from None
    versions = {key: list(dict.fromkeys(v.version for v in fw.versions)) for key, fw in data.frameworks.items()}
    compat_mod.refresh(compat, versions, log=typer.echo)
    typer.echo(f"wrote {compat}; run `builder render` and review the diff")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
