"""Extend a prebuilt image: an inference config -> a Dockerfile and build context FROM that image.

Reads Azure ML's inference config — the CLI JSON form (``entryScript``, ``runtime``, ``condaFile``,
``extraDockerfileSteps``, ``sourceDirectory``, ``enableGpu``, ``baseImage``, ``baseImageRegistry``)
or a YAML file with the same keys plus ``requirements`` (pip), ``apt``, ``model`` (paths) and
``env`` — and writes ``Dockerfile``, ``app/``, ``model/`` and ``requirements.txt`` into an output
folder. Paths in the config are relative to the config file; ``entryScript`` is relative to
``sourceDirectory`` when one is given (as in Azure ML).

Conda files are accepted for their ``pip:`` section only: conda channels are not reachable from
this project's machines, so any other package is refused by name. The Dockerfile comes from
``templates/extend/Dockerfile.j2``, whose named blocks a user's own template can override with
``{% extends "extend/Dockerfile.j2" %}``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import jinja2
from packaging.version import Version

from builder.engine.sources import Sources
from builder.extend.inference_config import (ExtendError, InferenceConfig, Paths, RegistryAuth, conda_pip_requirements,
                                             load_config)
from builder.generate import render
from builder.matrix import Matrix, inputs, naming
from builder.matrix.platform import DEFAULT

__all__ = ["Base", "ExtendError", "Extension", "InferenceConfig", "RegistryAuth", "conda_pip_requirements",
           "default_name", "default_out", "load_config", "lock_requirements", "prepare", "resolve_base", "write"]

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
MIN_PYTHON = Version("3.9")  # azureml-inference-server-http's Requires-Python
#: The file that marks an output folder as written by `builder extend` (it may then be replaced).
MARKER = ".builder-extend"


@dataclass(frozen=True)
class Base:
    """The resolved base: ``ref`` for FROM; ``device`` and ``python`` when known from the matrix."""

    ref: str
    matrix_name: str | None
    device: str | None
    python: str | None


@dataclass
class Extension:
    """A validated extension, ready to render: ``files`` maps context paths to contents."""

    config: InferenceConfig
    config_path: Path
    base: Base
    dockerfile: str
    files: dict[str, str | bytes]


def resolve_base(reference: str, matrix: Matrix, registry: str) -> Base:
    """A matrix image name (``NAME`` -> its ``latest`` tag, ``NAME@sha256:...`` -> that digest) or
    any image reference. A name shaped like ours (``*-inference``) that the matrix lacks is an error."""
    name, _, digest = reference.partition("@")
    try:
        spec = matrix.image(name)
    except KeyError:
        if "/" not in name and ":" not in name and name.endswith("-inference"):
            names = ", ".join(s.name for s in matrix.images())
            raise ExtendError([f"baseImage: unknown base name {inputs.shown(name)} (expected an image reference or "
                               f"one of: {names})"]) from None
        return Base(reference, None, None, None)
    return Base(naming.reference(registry, spec.name, digest or "latest"), spec.name, spec.device, spec.python)


def prepare(config_path: Path, matrix: Matrix, registry: str, template: Path | None = None,
            image_python: str | None = None, image_device: str | None = None,
            allow_outside: list[Path] = (), pinned: str | None = None) -> Extension:
    """Validate the config and render its Dockerfile and context (nothing is written).

    ``image_python``/``image_device`` are what the base image really holds when the caller could
    inspect it (the ``--build`` path); ``image_python=""`` means it has no python3. Every path in
    the config must resolve, symlinks followed, inside the config's folder or one of
    ``allow_outside``. ``pinned`` (``repository@digest``, :func:`builder.extend.trust.verified_base`)
    is what the Dockerfile starts FROM instead of the config's reference. Raises ExtendError listing
    every problem.
    """
    cfg = load_config(config_path)
    base = resolve_base(cfg.base_image, matrix, registry)
    if pinned is not None:
        base = Base(pinned, base.matrix_name, base.device, base.python)
    errors = _base_problems(cfg, config_path.name, base, image_python, image_device)
    paths = Paths(config_path, list(allow_outside))
    files, entry_rel, has_model, requirements = _context(cfg, config_path, paths)
    steps = paths.resolve("extraDockerfileSteps", cfg.extra_dockerfile_steps) if cfg.extra_dockerfile_steps else None
    extra_steps = _steps_text(steps, paths) if steps else ""
    errors += paths.errors
    if errors:
        raise ExtendError(errors)
    if requirements:
        files["requirements.txt"] = "\n".join(requirements) + "\n"
    ctx = {"config_name": config_path.name, "base": base.ref, "apt": cfg.apt, "requirements": bool(requirements),
           "extra_steps": extra_steps,
           "extra_steps_name": steps.name if steps else "", "entry_script": entry_rel,
           "has_model": has_model, "env": cfg.env, "runtime": matrix.data.runtime}
    files["Dockerfile"] = _render(template, ctx)
    return Extension(cfg, config_path, base, files["Dockerfile"], files)


def lock_requirements(ext: Extension, images: Path, sources: Sources, image_python: str | None = None) -> Extension:
    """Add ``requirements.lock`` to the extension's files: its pip requirements (config and conda
    file) resolved with uv like an image's (:func:`builder.generate.python_resolver.resolve`, hashes, wheels only), with the
    base's lock as the constraint when the base is a matrix image (``images/<name>/requirements.lock``),
    so the extension never changes a package the base installed. Needs the package index. Returns
    ``ext`` unchanged when there are no requirements. Raises ExtendError when the base's Python is
    unknown (a foreign base without ``--build``) or the set does not resolve."""
    from builder.generate import lock, python_resolver

    if "requirements.txt" not in ext.files:
        return ext
    python = ext.base.python or (".".join(image_python.split(".")[:2]) if image_python else None)
    if python is None:
        raise ExtendError([f"requirements: cannot lock them for {ext.base.ref}, whose Python is unknown; use --build "
                           "(the base is inspected) or a matrix image as baseImage"])
    parent = lock.read(images, ext.base.matrix_name) if ext.base.matrix_name else None
    requirements = [line for line in str(ext.files["requirements.txt"]).splitlines() if line]
    try:
        body = python_resolver.resolve(requirements, python, parent, sources)
    except inputs.ConfigError as exc:
        raise ExtendError([f"requirements: {exc.lines[0]}", *exc.lines[1:]]) from None
    head = (f"# Generated by `builder extend` from {ext.config_path.name} — do not edit; change the config and re-run.\n"
            f"# image: {default_name(ext.config_path)}\n# python: {python}\n# platform: {DEFAULT}\n"
            + (f"# parent: {ext.base.matrix_name}\n" if parent else ""))
    ext.files[lock.FILE] = lock.parse(head + body, lock.FILE).text
    return ext


def _base_problems(cfg: InferenceConfig, name: str, base: Base, image_python: str | None,
                   image_device: str | None) -> list[str]:
    errors = []
    if cfg.runtime.lower() != "python":
        errors.append(f"{name}: runtime: {inputs.shown(cfg.runtime)} is not supported (expected 'python')")
    if cfg.enable_gpu and (image_device or base.device) == "cpu":
        errors.append(f"{name}: enableGpu: true, but base {cfg.base_image} is a CPU image")
    python = image_python or base.python
    if image_python == "":
        errors.append(f"{name}: baseImage: {cfg.base_image} has no python3; the inference server needs Python >= {MIN_PYTHON}")
    elif python is not None and Version(python) < MIN_PYTHON:
        errors.append(f"{name}: baseImage: {cfg.base_image} has Python {python}; the inference server needs >= {MIN_PYTHON}")
    return errors


def _context(cfg: InferenceConfig, config_path: Path, paths: Paths) -> tuple[dict, str, bool, list[str]]:
    """The build context's app/ and model/ files, the entry script's path inside app/, whether
    there is a model, and the pip requirements (config plus the conda file's pip section)."""
    files: dict[str, str | bytes] = {}
    source = paths.resolve("sourceDirectory", cfg.source_directory, kind="dir") if cfg.source_directory else None
    inside = _entry_in_source(cfg, paths) if source is not None else cfg.entry_script
    entry = paths.resolve("entryScript", inside, base=source) if inside is not None else None
    entry_rel = ""
    if entry is not None:
        if source is not None:
            for p in paths.files("sourceDirectory", source):
                if p.resolve() != config_path.resolve():  # the config itself stays out of the image
                    files[f"app/{p.relative_to(source).as_posix()}"] = p.read_bytes()
            entry_rel = inside
        else:
            files[f"app/{entry.name}"] = entry.read_bytes()
            entry_rel = entry.name
    models = [m for m in (paths.resolve("model", v, kind="any") for v in cfg.model) if m is not None]
    for m in models:
        items = [m] if m.is_file() else paths.files("model", m)
        for p in items:
            rel = f"model/{p.name}" if m.is_file() else f"model/{m.name}/{p.relative_to(m).as_posix()}"
            if rel in files:
                paths.errors.append(f"{paths.name}: model: two model files would both be {rel[6:]}; rename one")
            files[rel] = p.read_bytes()
    requirements = list(cfg.requirements)
    if cfg.conda_file:
        conda = paths.resolve("condaFile", cfg.conda_file)
        if conda is not None:
            try:
                requirements += conda_pip_requirements(conda)
            except ExtendError as exc:
                paths.errors += exc.lines
    return files, entry_rel, bool(models), requirements


def _steps_text(steps: Path, paths: Paths) -> str:
    # The extra Dockerfile steps as text (inputs.read_text: UTF-8, no NUL or control characters,
    # at most 1 MiB), or "" after recording why not.
    try:
        return inputs.read_text(steps).rstrip()
    except inputs.ConfigError as exc:
        paths.errors += [f"{paths.name}: extraDockerfileSteps: {line}" for line in exc.lines]
        return ""


def _entry_in_source(cfg: InferenceConfig, paths: Paths) -> str | None:
    # entryScript relative to sourceDirectory, normalised; None (recorded) when it leaves it: only
    # sourceDirectory is copied into the image, so a script beside it would not be there.
    rel = os.path.normpath(cfg.entry_script)
    if os.path.isabs(rel) or rel.split(os.sep)[0] == "..":
        paths.errors.append(f"{paths.name}: entryScript: {inputs.shown(cfg.entry_script)} is outside "
                            f"sourceDirectory {cfg.source_directory}; only that folder is copied into the image")
        return None
    return Path(rel).as_posix()


def _render(template: Path | None, ctx: dict) -> str:
    folders = ([template.parent] if template else []) + [TEMPLATES]
    try:
        text = render.environment(*folders).get_template(template.name if template else "extend/Dockerfile.j2").render(ctx)
    except jinja2.TemplateNotFound as exc:
        raise ExtendError([f"--template: {exc.name} not found in {', '.join(map(str, folders))}"]) from None
    except jinja2.TemplateSyntaxError as exc:
        raise ExtendError([f"--template: {exc.filename or exc.name}: line {exc.lineno}: {exc.message}"]) from None
    except (jinja2.TemplateError, ValueError) as exc:
        raise ExtendError([f"--template: cannot render: {inputs.shown(str(exc))}"]) from None
    return render._tidy(text)


def write(ext: Extension, out: Path) -> None:
    """Write the extension's build context to ``out`` atomically (a temporary folder, then a
    rename), with a marker file. Raises ExtendError when ``out`` is the config's folder or one
    above it, or a non-empty folder that `builder extend` did not write."""
    out_real = Path(out).resolve()
    here = ext.config_path.parent.resolve()
    if out_real == here or here.is_relative_to(out_real):
        raise ExtendError([f"--out: {out} is the config's folder or one above it; choose a folder of its own"])
    if out_real.exists() and any(out_real.iterdir()) and not (out_real / MARKER).is_file():
        raise ExtendError([f"--out: {out} is not empty and was not written by `builder extend`; refusing to replace it"])
    render.write({**ext.files, MARKER: "written by `builder extend`; this folder is replaced on the next run\n"}, out)


def default_name(config_path: Path) -> str:
    """The name of an extension: its config's folder (``examples/sklearn-iris/extend.yml`` ->
    ``sklearn-iris``), used for the default output folder and image tag."""
    return config_path.resolve().parent.name.lower()


def default_out(config_path: Path, build_dir: Path) -> Path:
    """``build_dir``/extend/<extension name> (see :func:`default_name`)."""
    return build_dir / "extend" / default_name(config_path)
