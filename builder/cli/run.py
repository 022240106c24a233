"""The ``builder`` commands that run images on the Engine: ``build``, ``test``, ``publish``, ``all``, and
those that read their reports or clean up after them: ``catalog``, ``merge``, ``prune``
(:func:`register` adds them to the app)."""

from __future__ import annotations

import enum
import signal
import typing
from pathlib import Path
from typing import Optional

import typer

from builder import engine, files
from builder.cli.common import (BuildDirOpt, ImagesOpt, MatrixOpt, SelectOpt, TemplatesOpt, beside, byte_size, fail, guard, load, local_path,
                                registry_option, select_images, interruptible, templates_dir)
from builder.engine import disk, plugins, prune
from builder.generate import render
from builder.matrix import grammar
from builder.matrix.platform import DEFAULT, Platform
from builder.run import context, pipeline
from builder.run.console import wide_console
from builder.sign import cosign


#: ``--base-source``'s choices: :data:`builder.run.context.BaseSource`'s values, as the enum typer
#: offers (where a base image comes from: :mod:`builder.engine.bases`).
BaseSource = enum.Enum("BaseSource", {v: v for v in typing.get_args(context.BaseSource)}, type=str)


def _run(opts: pipeline.Options, matrix: Path, templates: Optional[Path]) -> None:
    if opts.by_platform and not opts.steps.build:
        fail(["--by-platform: publish the builds in the run that tests them (`builder all --by-platform`)"])
    m = load(matrix)
    specs = select_images(m, opts.select)
    registry_option(opts.registry)
    split = [s.name for s in specs if opts.platforms and set(s.platforms) - set(opts.platforms)]
    if opts.steps.publish and split and not opts.by_platform:
        fail([f"--platform {' '.join(map(str, opts.platforms))} would publish {split[0]} without its other platforms under "
              f"tags that name all of them: add --by-platform (per-platform tags, then `builder merge`), "
              f"or narrow `builder build` or `builder test` only"])
    if opts.steps.build and not opts.dry_run:
        with guard():
            problems = render.preflight(m, templates_dir(matrix, templates), opts.images_dir, specs,
                                        "nothing was built").stale()
        if problems:
            fail(problems + ["images/ is out of date: run `builder render` first"])
    previous = interruptible()  # a cancelled CI job stops like Ctrl-C
    try:
        with guard():
            reports = pipeline.run(m, opts)
    except KeyboardInterrupt:
        fail([f"interrupted: running builds and smoke tests were stopped; no image that was not done got latest "
              f"or was pushed; report: {opts.build_dir / 'report.json'}"], 130)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if not opts.dry_run:
        wide_console().print(pipeline.summary(opts.stage, reports))
        typer.echo(f"report: {opts.build_dir / 'report.json'}")
    if any(r.failed for r in reports):
        raise typer.Exit(1)


def _check_repository(option: str, value: str) -> None:
    # An empty value, or one in the reference grammar's repository form; else one line and exit 2.
    try:
        if value:
            grammar.repository(value)
    except ValueError as exc:
        fail([f"{option}: {exc}"])


def _check_platforms(platform: list[str], by_platform: bool) -> tuple[Platform, ...]:
    # --platform values parsed: the matrix's platforms, with linux/amd64 unless --by-platform; else one line and exit 2.
    try:
        parsed = tuple(dict.fromkeys(Platform.parse(p) for p in platform))
    except ValueError as exc:
        fail([f"--platform: {exc}"])
    if parsed and DEFAULT not in parsed and not by_platform:
        fail([f"--platform: must include {DEFAULT} (the build platform, where uv runs), or add --by-platform"])
    return parsed


def _signing_key(value: str, keyless: bool) -> str:
    # --signing-key as cosign takes it (builder.sign.cosign.key_reference); one line and exit 2 otherwise.
    if keyless and value:
        fail(["--keyless: leave out --signing-key (and BUILDER_SIGNING_KEY) to sign keyless"])
    try:
        return cosign.key_reference(value) if value else ""
    except ValueError as exc:
        fail([f"--signing-key: {exc}"])


def _stage_command(stage: pipeline.Stage, doc: str):
    def command(select: Optional[list[str]] = SelectOpt,
                dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be done."),
                registry: str = typer.Option("", "--registry", envvar="REGISTRY", help="host:port[/namespace]; default: a local registry on 127.0.0.1:5000."),
                base_source: BaseSource = typer.Option(BaseSource.auto, "--base-source", help="Where bases come from."),
                no_cache: bool = typer.Option(False, "--no-cache", help="Ignore BuildKit's layer cache (a cold build; implies --force)."),
                accept_size: bool = typer.Option(False, "--accept-size", help="Pass images that grew more than 10 % over the catalog's size (the catalog made from this run records the new size)."),
                force: bool = typer.Option(False, "--force", help="Build, test and push every image even when the registry already publishes its build id."),
                jobs: int = typer.Option(pipeline.Options.jobs, "--jobs", "-j", envvar="BUILDER_JOBS", min=1, max=grammar.MAX_COUNT, help="Tasks run at once (an image's preparation, one platform's build and test, its tags and push)."),
                test_jobs: int = typer.Option(pipeline.Options.test_jobs, "--test-jobs", envvar="BUILDER_TEST_JOBS", min=1, max=grammar.MAX_COUNT,
                                              help="Smoke tests run at once [default: one per CPU]."),
                emulated_jobs: int = typer.Option(pipeline.Options.emulated_jobs, "--emulated-jobs", envvar="BUILDER_EMULATED_JOBS", min=1, max=grammar.MAX_COUNT,
                                                  help="Builds and smoke tests of another platform (under QEMU) run at once."),
                matrix: Path = MatrixOpt, templates: Optional[Path] = TemplatesOpt, images: Optional[Path] = ImagesOpt,
                tests: Optional[Path] = typer.Option(None, "--tests", parser=local_path, help="Smoke-test folders, one per framework [default: tests/by_image beside the matrix]."),
                build_dir: Path = BuildDirOpt,
                platform: Optional[list[str]] = typer.Option(None, "--platform", help="Narrow images to these of their platforms (repeatable; must include linux/amd64 unless --by-platform); all/publish need --by-platform then."),
                by_platform: bool = typer.Option(False, "--by-platform", help="One job of a run split by platform: publish each build under <tag>-<arch> and latest-<arch> only; `builder merge` makes the indexes."),
                no_space_check: bool = typer.Option(False, "--no-space-check", help="Run even when the disk looks too small for it (see docs: disk)."),
                max_disk_growth: Optional[str] = typer.Option(None, "--max-disk-growth", envvar="BUILDER_MAX_DISK_GROWTH", parser=byte_size, metavar="SIZE",
                                                              help="Keep the file system of the Engine's data root within this growth over the run's start (45GB, 40GiB): builds wait for what finished images free; a build waiting for space lets --prune-cache take uv's wheels too."),
                cache_registry: str = typer.Option("", "--cache-registry", envvar="BUILDER_CACHE_REGISTRY",
                                                   help="host:port/path where builds import and export BuildKit's cache (one ref per image and platform; containerd image store)."),
                keep_last: int = typer.Option(pipeline.Options.keep_last, "--keep-last", min=1, max=grammar.MAX_COUNT, help="Local builds kept per image after the run, the new one included; older ones (never one with latest, or in use) are removed."),
                prune_cache: bool = typer.Option(False, "--prune-cache", envvar="BUILDER_PRUNE_CACHE",
                                                 help="Remove the BuildKit cache this run makes after each build (uv's wheel cache mount stays): the full matrix fits a smaller disk; a later rebuild starts cold but for wheels."),
                signing_key: str = typer.Option("", "--signing-key", envvar="BUILDER_SIGNING_KEY",
                                                help="cosign key file or key manager URI: sign and attest what is published (password: COSIGN_PASSWORD)."),
                keyless: bool = typer.Option(False, "--keyless", help="Sign with Sigstore's Fulcio and Rekor instead of a key (a machine that reaches them).")) -> None:
        platforms = _check_platforms(platform or [], by_platform)
        if no_space_check and max_disk_growth is not None:  # the growth is kept by the schedule --no-space-check turns off
            fail(["--max-disk-growth: leave out --no-space-check (it turns the disk schedule off)"])
        _check_repository("--cache-registry", cache_registry)
        key = _signing_key(signing_key, keyless)  # checked in every stage: a bad key is never ignored
        signing_key = key if context.Steps.of(stage).publish else ""
        opts = pipeline.Options(stage=stage, select=tuple(select or ()), dry_run=dry_run, registry=registry,
                                platforms=platforms, by_platform=by_platform,
                                base_source=base_source.value, images_dir=beside(matrix, images, "images"),
                                tests_root=beside(matrix, tests, "tests/by_image"), build_dir=build_dir,
                                no_cache=no_cache, force=force, accept_size=accept_size, jobs=jobs, test_jobs=test_jobs, emulated_jobs=emulated_jobs, space_check=not no_space_check, max_disk_growth=max_disk_growth,
                                keep_last=keep_last, prune_cache=prune_cache, cache_registry=cache_registry, catalog=beside(matrix, None, "docs") / "images.json",
                                signing_key=signing_key, keyless=keyless)
        _run(opts, matrix, templates)
    command.__doc__ = doc
    return command




def catalog_command(report: Optional[list[Path]] = typer.Option(None, "--report", parser=local_path, help="A run's report.json (repeatable) [default: report.json in --build-dir]."),
                    out: Path = typer.Option(Path("docs/images.md"), "--out", parser=local_path, help="The Markdown table."),
                    json_out: Path = typer.Option(Path("docs/images.json"), "--json", parser=local_path, help="The same rows as JSON."),
                    matrix: Path = MatrixOpt, images: Optional[Path] = ImagesOpt, build_dir: Path = BuildDirOpt) -> None:
    """Write the image catalog (docs/images.md and JSON) from run reports, the locks and the built
    images (pulled when not on this machine). Lists the images whose run passed. Reads the build
    folder's report.json unless --report is given."""
    from builder import catalog, engine

    if out.resolve() == json_out.resolve():
        fail([f"--out and --json name the same file ({out}); give each its own"])
    m = load(matrix)
    with guard():
        reports = catalog.read_reports(report or [build_dir / "report.json"], m)
        previous = catalog.previous_rows([beside(matrix, None, "docs") / "images.json", json_out])
        found = catalog.rows(m, reports, beside(matrix, images, "images"), engine.client(build_dir), previous)
        catalog.write(found, out, json_out)
    typer.echo(f"wrote {out} and {json_out} ({len(found)} images)")


def merge_command(report: list[Path] = typer.Option(..., "--report", parser=local_path, help="One job's report.json (repeatable): every job of a run split by platform."),
                  out: Optional[Path] = typer.Option(None, "--out", parser=local_path, help="The merged report (read by `builder catalog`) [default: report.json in --build-dir]."),
                  registry: str = typer.Option("", "--registry", envvar="REGISTRY", help="host:port[/namespace] the jobs pushed to; every report's repository must be the one it gives [default: 127.0.0.1:5000]."),
                  matrix: Path = MatrixOpt, build_dir: Path = BuildDirOpt,
                  signing_key: str = typer.Option("", "--signing-key", envvar="BUILDER_SIGNING_KEY",
                                                  help="cosign key file or key manager URI: sign each index before latest moves (password: COSIGN_PASSWORD)."),
                  keyless: bool = typer.Option(False, "--keyless", help="Sign with Sigstore's Fulcio and Rekor instead of a key.")) -> None:
    """Join the per-platform builds of a run split by platform (`builder all --by-platform` jobs) into
    image indexes: latest and the immutable tag move only for an image whose every platform passed."""
    from builder.engine.registry import Credentials, Registry, host_of
    from builder.run import merge, preparation, report_file
    from builder.run.report import PUSHED, write

    m = load(matrix)
    signing_key = _signing_key(signing_key, keyless)
    target = registry_option(registry) or engine.LOCAL_REGISTRY  # as the pipeline's default
    out = out if out is not None else build_dir / "report.json"
    with guard():
        found = report_file.read_all(report, [s.name for s in m.images()])
        merge.check_repositories(found, target)  # the push target is --registry's, never a report's
        report_file.refuse_foreign(out)  # before anything is pushed
        plugins.ensure_buildx(build_dir)  # docker buildx imagetools makes the indexes
        signer = preparation.signer(build_dir, signing_key, keyless)
        merged = merge.merge(m, found, Registry(host_of(target), Credentials.from_env()), log=typer.echo, signer=signer)
        write(out, "merge", merged)
    typer.echo(f"report: {out}")
    if any(r.status not in PUSHED for r in merged):
        raise typer.Exit(1)


def prune_command(build_dir: Path = BuildDirOpt,
                  registry: str = typer.Option("", "--registry", envvar="REGISTRY", help="host:port[/namespace] the builder tagged for, besides the local registry 127.0.0.1:5000."),
                  keep_bases: bool = typer.Option(False, "--keep-bases", help="Keep the bases (bootstrapping them again takes minutes)."),
                  matrix: Path = MatrixOpt) -> None:
    """Remove what the builder made on this machine, and only that: its images' tags (matrix images
    under the local registry or --registry, bases, the wheelhouse image), the BuildKit cache its runs
    recorded, the local registry it started with this build folder, and the build folder (--build-dir;
    only one it made). Prints the bytes freed."""
    m = load(matrix)
    registries = tuple(dict.fromkeys(r for r in (engine.LOCAL_REGISTRY, registry_option(registry)) if r))
    if build_dir.exists() and not files.owned_folder(build_dir):
        fail([f"--build-dir: {build_dir} was not made by `builder` (it has no {files.MARKER} of its own); refusing "
              f"to remove it: remove it yourself, or pass --build-dir"])
    with guard():
        records = prune.read_ledger()  # before anything is removed: a ledger that is not ours stops here
        client = engine.client(build_dir)
        watched = [engine.data_root(client), build_dir]
        before = disk.free_space(watched)
        names = {s.name for s in m.images()}
        images = prune.remove_images(client, names, m.data.project.label_prefix, registries, typer.echo, keep_bases)
        cache = prune.remove_cache(client, records)
        stopped = files.owned_folder(build_dir) and prune.stop_registry(build_dir)
        folder = prune.folder_bytes(build_dir) if files.owned_folder(build_dir) else 0
        files.remove_owned(build_dir)
        after = disk.free_space(watched)
    typer.echo(_freed_line(sum(after[d] - before.get(d, after[d]) for d in after), watched[0] is not None,
                           images, cache, folder, build_dir, stopped))


def _freed_line(measured: int, whole: bool, images: int, cache: int, folder: int, build_dir: Path,
                stopped: bool) -> str:
    # prune's last line: the free space gained on the file systems of the data root and the build
    # folder (``whole``: the data root's is among them), then what each removal reported (an
    # image's size counts layers it shared with an image kept, so those are upper bounds).
    where = "the Engine's data root and " if whole else ""
    return (f"freed {measured / 1e9:.2f} GB (free space gained on the file systems of {where}{build_dir}); "
            f"removed images of up to {images / 1e9:.2f} GB, BuildKit cache BuildKit counts {cache / 1e9:.2f} GB, "
            f"{build_dir} {folder / 1e9:.2f} GB" + (" (its registry stopped)" if stopped else ""))


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("build")(_stage_command("build", "Build the selected images (bases first) and give each its immutable tag."))
    app.command("test")(_stage_command("test", "Build, then smoke-test the selected images; a passing image is tagged latest."))
    app.command("publish")(_stage_command("publish", "Push the selected images already tagged latest, and verify their digests."))
    app.command("all")(_stage_command("all", "Build, smoke-test, tag and publish the selected images."))
    for name, command in (("catalog", catalog_command), ("merge", merge_command), ("prune", prune_command)):
        app.command(name)(command)
