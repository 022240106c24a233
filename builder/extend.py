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

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import jinja2
import yaml
from packaging.version import Version
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from builder import render, tag
from builder.matrix import Matrix

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
MIN_PYTHON = Version("3.9")  # azureml-inference-server-http's Requires-Python
# Conda dependencies that are not packages to install: the interpreter and pip itself.
CONDA_IGNORED = re.compile(r"^(python|pip)\b")


class ExtendError(Exception):
    """Bad extension input. ``lines`` holds one line per problem (file, key, what was expected)."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


class RegistryAuth(BaseModel):
    """A private base-image registry. ``password`` may be ``${VAR}``, read from the environment."""

    model_config = ConfigDict(extra="forbid")
    address: str
    username: str | None = None
    password: str | None = None

    def credentials(self) -> dict | None:
        """docker-py auth_config for pulling the base, or None. Raises ExtendError for an unset ${VAR}."""
        if not (self.username and self.password):
            return None
        password = self.password
        m = re.fullmatch(r"\$\{(\w+)\}", password)
        if m:
            if m.group(1) not in os.environ:
                raise ExtendError([f"baseImageRegistry.password: environment variable {m.group(1)} is not set"])
            password = os.environ[m.group(1)]
        return {"username": self.username, "password": password}


class InferenceConfig(BaseModel):
    """The inference config (JSON keys as in Azure ML's CLI form; YAML adds the last four)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    entry_script: str = Field(alias="entryScript")
    runtime: str = "python"
    conda_file: str | None = Field(None, alias="condaFile")
    extra_dockerfile_steps: str | None = Field(None, alias="extraDockerfileSteps")
    source_directory: str | None = Field(None, alias="sourceDirectory")
    enable_gpu: bool = Field(False, alias="enableGpu")
    base_image: str = Field(alias="baseImage")
    base_image_registry: RegistryAuth | None = Field(None, alias="baseImageRegistry")
    requirements: list[str] = []
    apt: list[str] = []
    model: list[str] = []
    env: dict[str, str] = {}

    @field_validator("base_image_registry", mode="before")
    @classmethod
    def _registry_host(cls, value):
        # The CLI JSON form gives just the host; the SDK form gives address/username/password.
        return {"address": value} if isinstance(value, str) else value


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


def load_config(path: Path) -> InferenceConfig:
    """Parse a JSON or YAML inference config. Raises ExtendError (one line per problem)."""
    name = path.name
    try:
        text = path.read_text()
    except OSError as exc:
        raise ExtendError([f"{name}: cannot read: {exc.strerror}"]) from None
    try:
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ExtendError([f"{name}: malformed {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}"]) from None
    if not isinstance(raw, dict):
        raise ExtendError([f"{name}: expected a mapping of inference config keys"])
    try:
        return InferenceConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            msg = {"missing": "required field is missing", "extra_forbidden": "unknown key"}.get(err["type"], err["msg"])
            lines.append(f"{name}: {where}: {msg}")
        raise ExtendError(lines) from None


def resolve_base(reference: str, matrix: Matrix, registry: str) -> Base:
    """A matrix image name (``NAME`` -> its ``latest`` tag, ``NAME@sha256:...`` -> that digest) or
    any image reference. A name shaped like ours (``*-inference``) that the matrix lacks is an error."""
    name, _, digest = reference.partition("@")
    try:
        spec = matrix.image(name)
    except KeyError:
        if "/" not in name and ":" not in name and name.endswith("-inference"):
            names = ", ".join(s.name for s in matrix.images())
            raise ExtendError([f"baseImage: unknown base name {name!r} (expected an image reference or one of: "
                               f"{names})"]) from None
        return Base(reference, None, None, None)
    repo = tag.repository(registry, spec.name)
    return Base(f"{repo}@{digest}" if digest else f"{repo}:latest", spec.name, spec.device, spec.python)


def conda_pip_requirements(path: Path) -> list[str]:
    """The ``pip:`` section of a conda environment file. Raises ExtendError naming every conda-only
    package (conda channels cannot be reached; move them to the pip section)."""
    try:
        env = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ExtendError([f"condaFile {path.name}: cannot read: {exc}"]) from None
    pip: list[str] = []
    conda_only: list[str] = []
    for dep in env.get("dependencies", []) or []:
        if isinstance(dep, dict) and "pip" in dep:
            pip.extend(str(p) for p in dep["pip"] or [])
        elif isinstance(dep, str) and not CONDA_IGNORED.match(dep):
            conda_only.append(dep)
    if conda_only:
        raise ExtendError([f"condaFile {path.name}: conda-only packages cannot be installed (conda channels are not "
                           f"reachable): {', '.join(conda_only)}; list them under the pip: section instead"])
    return pip


def prepare(config_path: Path, matrix: Matrix, registry: str, template: Path | None = None,
            image_python: str | None = None, image_device: str | None = None) -> Extension:
    """Validate the config and render its Dockerfile and context (nothing is written).

    ``image_python``/``image_device`` are what the base image really holds when the caller could
    inspect it (the ``--build`` path); ``image_python=""`` means it has no python3. Raises
    ExtendError listing every problem.
    """
    cfg = load_config(config_path)
    here = config_path.parent
    errors: list[str] = []
    name = config_path.name
    if cfg.runtime.lower() != "python":
        errors.append(f"{name}: runtime: {cfg.runtime!r} is not supported (expected 'python')")
    base = resolve_base(cfg.base_image, matrix, registry)
    device = image_device or base.device
    if cfg.enable_gpu and device == "cpu":
        errors.append(f"{name}: enableGpu: true, but base {cfg.base_image} is a CPU image")
    python = image_python or base.python
    if image_python == "":
        errors.append(f"{name}: baseImage: {cfg.base_image} has no python3; the inference server needs Python >= {MIN_PYTHON}")
    elif python is not None and Version(python) < MIN_PYTHON:
        errors.append(f"{name}: baseImage: {cfg.base_image} has Python {python}; the inference server needs >= {MIN_PYTHON}")
    source = (here / cfg.source_directory) if cfg.source_directory else None
    if source is not None and not source.is_dir():
        errors.append(f"{name}: sourceDirectory: {source} is not a directory")
    entry = (source or here) / cfg.entry_script
    if not entry.is_file():
        errors.append(f"{name}: entryScript: {entry} does not exist")
    models = [here / m for m in cfg.model]
    errors += [f"{name}: model: {m} does not exist" for m in models if not m.exists()]
    steps = here / cfg.extra_dockerfile_steps if cfg.extra_dockerfile_steps else None
    if steps is not None and not steps.is_file():
        errors.append(f"{name}: extraDockerfileSteps: {steps} does not exist")
    requirements = list(cfg.requirements)
    if cfg.conda_file:
        try:
            requirements += conda_pip_requirements(here / cfg.conda_file)
        except ExtendError as exc:
            errors += exc.lines
    if errors:
        raise ExtendError(errors)

    files: dict[str, str | bytes] = {}
    if source is not None:
        for p in sorted(source.rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                files[f"app/{p.relative_to(source).as_posix()}"] = p.read_bytes()
        entry_rel = entry.relative_to(source).as_posix()
    else:
        files[f"app/{entry.name}"] = entry.read_bytes()
        entry_rel = entry.name
    for m in models:
        items = [m] if m.is_file() else [p for p in sorted(m.rglob("*")) if p.is_file()]
        for p in items:
            rel = p.name if m.is_file() else f"{m.name}/{p.relative_to(m).as_posix()}"
            files[f"model/{rel}"] = p.read_bytes()
    if requirements:
        files["requirements.txt"] = "\n".join(requirements) + "\n"
    runtime = matrix.data.runtime
    env = jinja2.Environment(loader=jinja2.ChoiceLoader(
        ([jinja2.FileSystemLoader(str(template.parent))] if template else [])
        + [jinja2.FileSystemLoader(str(TEMPLATES))]), undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    ctx = {"config_name": name, "base": base.ref, "apt": cfg.apt, "requirements": bool(requirements),
           "extra_steps": steps.read_text().rstrip() if steps else "",
           "extra_steps_name": steps.name if steps else "", "entry_script": entry_rel,
           "has_model": bool(models), "env": cfg.env, "runtime": runtime}
    dockerfile = render._tidy(env.get_template(template.name if template else "extend/Dockerfile.j2").render(ctx))
    files["Dockerfile"] = dockerfile
    return Extension(cfg, config_path, base, dockerfile, files)


def write(ext: Extension, out: Path) -> None:
    """Write the extension's build context to ``out`` atomically (see render.write)."""
    render.write(ext.files, out)


def default_name(config_path: Path) -> str:
    """The name of an extension: its config's folder (``examples/sklearn-iris/extend.yml`` ->
    ``sklearn-iris``), used for the default output folder and image tag."""
    return config_path.resolve().parent.name.lower()


def default_out(config_path: Path) -> Path:
    """build/extend/<extension name>."""
    return Path("build") / "extend" / default_name(config_path)



def inspect_base(client, base: Base, auth: dict | None, label_prefix: str) -> tuple[str, str | None]:
    """Make the base image present (pulling it, with ``auth`` only for that pull, when missing) and
    read what it holds: ``(python version, or "" when it has no python3; device label or None)``.

    Raises ExtendError when the image can be neither found nor pulled.
    """
    import docker

    try:
        image = client.images.get(base.ref)
    except docker.errors.ImageNotFound:
        try:
            image = client.images.pull(base.ref, auth_config=auth)
        except docker.errors.APIError as exc:
            # the Engine's message names the reference, never the credentials
            raise ExtendError([f"baseImage: cannot pull {base.ref}: {exc.explanation or exc}"]) from None
    try:
        out = client.containers.run(image.id, entrypoint=["python3", "-c",
                                    "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                                    remove=True, network_disabled=True)
        python = out.decode().strip()
    except docker.errors.ContainerError:
        python = None
    except docker.errors.APIError:  # no python3 executable at all
        python = None
    return python or "", (image.labels or {}).get(f"{label_prefix}.device")
