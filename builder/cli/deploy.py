"""The ``builder extend`` and ``builder serve`` commands: a prebuilt image extended with a model and
code, or run locally with them mounted (:func:`register` adds them to the ``builder`` app)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from builder import files
from builder.cli.common import BuildDirOpt, MatrixOpt, fail, guard, load, local_path, registry_option, interruptible
from builder.matrix import grammar


def _registry(registry: str) -> str:
    from builder import engine

    return registry_option(registry) or engine.LOCAL_REGISTRY


def extend(config: Path = typer.Argument(..., parser=local_path, help="Inference config: Azure ML's JSON form or the YAML equivalent."),
           out: Optional[Path] = typer.Option(None, "--out", parser=local_path, help="Build context folder [default: extend/<config folder name> in --build-dir]."),
           build_it: bool = typer.Option(False, "--build", help="Also build the image."),
           tag_: Optional[str] = typer.Option(None, "--tag", help="Name for the built image [default: <config folder name>:latest]."),
           template: Optional[Path] = typer.Option(None, "--template", parser=local_path, help='Your template; it may {% extends "extend/Dockerfile.j2" %}.'),
           allow_outside: Optional[list[Path]] = typer.Option(None, "--allow-outside", parser=local_path, help="Another folder the config's paths may point into (repeatable)."),
           registry: str = typer.Option("", "--registry", envvar="REGISTRY", help="Where matrix-named bases are published [default: 127.0.0.1:5000]."),
           verify_key: Optional[str] = typer.Option(None, "--verify-key", help="Public key (PEM file or key manager URI) the base must be signed with; build FROM the verified digest [default: the config's verify.key]."),
           no_verify: bool = typer.Option(False, "--no-verify", help="Do not verify the base even when a key is configured (prints a warning)."),
           matrix: Path = MatrixOpt, build_dir: Path = BuildDirOpt) -> None:
    """Write a Dockerfile and build context that extend a prebuilt image with a model, code and
    packages (with --build, its build log goes to logs/ in the build folder). With a verification
    key, the base is verified first (`builder verify`) and the Dockerfile starts FROM its digest."""
    from builder.engine.sources import Sources
    from builder.extend import default_name, default_out, lock_requirements, prepare, write
    from builder.extend.image import build_image

    m = load(matrix)
    reg = _registry(registry)
    name = tag_ or f"{default_name(config)}:latest"
    if tag_ is not None:
        try:
            grammar.docker_reference(tag_)
        except ValueError as exc:
            fail([f"--tag: {exc}"])
    target = out or default_out(config, build_dir)
    with guard():
        pinned = _verified_base(config, m, reg, build_dir, verify_key, no_verify, allow_outside or [])
        ext = prepare(config, m, reg, template, allow_outside=allow_outside or [], pinned=pinned)
        if build_it:
            built = build_image(config, m, reg, template, name, target, build_dir, allow_outside or [], pinned)
            typer.echo(f"wrote {target}/Dockerfile FROM {built.base}")
            if not built.result.ok:
                fail([f"build failed: {built.result.error} (log {built.result.log_path})"], 1)
            typer.echo(f"built {name} ({built.result.image_id}) in {built.result.seconds:.0f} s")
            return
        lock_requirements(ext, Path(matrix).resolve().parent / "images", Sources.from_env())
        write(ext, target)
    typer.echo(f"wrote {target}/Dockerfile FROM {ext.base.ref}")


def _verified_base(config: Path, m, registry: str, build_dir: Path, verify_key: Optional[str],
                   no_verify: bool, allow_outside: list[Path]) -> Optional[str]:
    # The base's verified digest reference when a key is configured (builder.extend.trust), else None;
    # with --no-verify, None and a warning line.
    from builder.engine.registry import Credentials
    from builder.extend import resolve_base
    from builder.extend.inference_config import load_config
    from builder.extend.trust import key_of, verified_base

    if no_verify:
        typer.echo("warning: --no-verify: the base image is not verified; the Dockerfile starts FROM its tag", err=True)
        return None
    cfg = load_config(config)
    key = key_of(cfg, config, verify_key, allow_outside)
    if key is None:
        return None
    auth = cfg.base_image_registry.credentials() if cfg.base_image_registry else None
    credentials = Credentials(auth["username"], auth["password"]) if auth else Credentials()
    pinned = verified_base(resolve_base(cfg.base_image, m, registry).ref, key, m, build_dir, credentials)
    typer.echo(f"verified {cfg.base_image} as {pinned}")
    return pinned


def serve(image: str = typer.Argument(..., help="An image reference, or a matrix image name (its latest tag)."),
          model: Optional[Path] = typer.Option(None, "--model", parser=local_path, help="Model file or folder (mounted read-only)."),
          entry_script: Path = typer.Option(..., "--entry-script", parser=local_path, help="score.py with init() and run(); its folder is mounted read-only."),
          port: int = typer.Option(8890, "--port", min=1, max=65535, help="Host port on 127.0.0.1."),
          registry: str = typer.Option("", "--registry", envvar="REGISTRY", help="Where matrix-named images are published."),
          compose_file: Optional[Path] = typer.Option(None, "--compose-file", parser=local_path, help="Write a Compose file that serves it (`docker compose -f FILE up`) instead of running."),
          matrix: Path = MatrixOpt, build_dir: Path = BuildDirOpt) -> None:
    """Run an image locally with a model and entry script until Ctrl-C, then remove the container
    (or, with --compose-file, write the Compose file that does the same). The build folder holds
    dockerd's log when an Engine has to be started."""
    from builder.extend import deploy

    m = load(matrix)
    problems = []
    if not entry_script.is_file():
        problems.append(f"--entry-script: {entry_script} is not a file")
    if model is not None and not model.exists():
        problems.append(f"--model: {model} does not exist")
    ref = _image_ref(m, image, registry)
    if compose_file is None:
        _serve(ref, model, entry_script, port, m.data.runtime, problems, build_dir)
        return
    if problems:
        fail(problems)
    rt = m.data.runtime
    _write_compose(compose_file, deploy.compose_file({"model": deploy.compose_service(
        ref, entry_script.parent, model, port=rt.port, app_root=rt.app_root, uid=rt.uid, model_mount=rt.model_mount,
        host_port=port, entry_script=entry_script.name)}))
    typer.echo(f"wrote {compose_file}; run `docker compose -f {compose_file} up`, then POST http://127.0.0.1:{port}/score")


def _image_ref(m, image: str, registry: str) -> str:
    # A matrix name is its latest tag in the registry; anything else must be an image reference.
    from builder.matrix import naming

    try:
        return naming.reference(_registry(registry), m.image(image).name)
    except KeyError:
        try:
            return grammar.docker_reference(image)
        except ValueError as exc:
            fail([f"IMAGE: {exc}"])


def _serve(ref: str, model: Optional[Path], entry_script: Path, port: int, runtime, problems: list[str],
           build_dir: Path) -> None:
    # Run until Ctrl-C (or SIGTERM), then remove the container.
    import docker

    from builder import engine
    from builder.extend import deploy

    with guard():
        client = engine.client(build_dir)
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        problems.append(f"image {ref} is not on this Engine (build or pull it first)")
    if problems:
        fail(problems)
    interruptible()  # Ctrl-C, or a `docker stop`-style SIGTERM, cleans up
    try:
        with deploy.running(client, ref, model, entry_script, port, runtime) as served:
            typer.echo(f"serving {ref} (healthy after {served.seconds_to_healthy:.1f} s)")
            typer.echo(f"scoring URI: {served.scoring_uri}")
            typer.echo(f"swagger URI: {served.swagger_uri}")
            typer.echo("press Ctrl-C to stop", err=True)
            code = served.container.wait()["StatusCode"]
            sys.stderr.write(served.container.logs(tail=40).decode(errors="replace"))
            fail([f"the container exited with code {code}"], 1)
    except deploy.NotHealthy as exc:
        fail([str(exc)], 1)
    except KeyboardInterrupt:
        typer.echo("stopped; container removed", err=True)


def register(app: typer.Typer) -> None:
    """Add ``extend`` and ``serve`` to ``app``."""
    app.command()(extend)
    app.command()(serve)


def _write_compose(path: Path, text: str) -> None:
    # Never overwrite a file `builder serve` did not write, a folder or a symlink (files.write_atomic).
    from builder.extend.deploy import COMPOSE_HEADER

    if path.is_dir() and not path.is_symlink():
        fail([f"--compose-file: {path} is a folder; name the Compose file to write"])
    with guard():
        ours = path.is_file() and not path.is_symlink() and _head(path).startswith(COMPOSE_HEADER)
    if (path.exists() or path.is_symlink()) and not ours:
        fail([f"--compose-file: {path} exists and was not written by `builder serve`; refusing to replace it"])
    with guard():
        files.write_atomic(path, text)


def _head(path: Path) -> str:
    # The first bytes of a file, as text (enough to see the Compose header).
    with open(path, "rb") as f:
        return f.read(400).decode("utf-8", "replace")
