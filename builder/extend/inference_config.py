"""The inference config of ``builder extend``: its schema (Azure ML's CLI JSON keys, and the YAML
equivalent with ``requirements``, ``apt``, ``model`` and ``env``), its strict loading, its conda
file's pip section, and the containment of every path it names (:class:`Paths`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from builder.matrix import grammar, inputs, validation
from builder.matrix.inputs import ConfigError

# Conda dependencies that are not packages to install: the interpreter and pip itself.
CONDA_IGNORED = ("python", "pip")
_ENV_REF = re.compile(r"\$\{(\w+)\}")


class ExtendError(ConfigError):
    """Bad extension input. ``lines`` holds one line per problem (file, key, what was expected)."""


def _password(value: object) -> object:
    if value is None:
        return value
    if not isinstance(value, str) or not _ENV_REF.fullmatch(value):
        # never echo the value: it is a credential
        raise ValueError("a literal password is not accepted; use ${ENV_VAR} and set that variable")
    return value


class RegistryAuth(BaseModel):
    """A private base-image registry. ``password`` must be ``${VAR}``, read from the environment."""

    model_config = ConfigDict(extra="forbid")
    address: Annotated[str, BeforeValidator(grammar.registry)]
    username: Annotated[str, BeforeValidator(grammar.text)] | None = None
    password: Annotated[str | None, BeforeValidator(_password)] = None

    def credentials(self) -> dict | None:
        """docker-py auth_config for pulling the base, or None. Raises ExtendError for an unset ${VAR}."""
        if not (self.username and self.password):
            return None
        var = _ENV_REF.fullmatch(self.password).group(1)
        if var not in os.environ:
            raise ExtendError([f"baseImageRegistry.password: environment variable {var} is not set"])
        return {"username": self.username, "password": os.environ[var]}


def _env_value(value: object) -> str:
    if not isinstance(value, str) or inputs.CONTROL.search(value) or "\n" in value or "\r" in value:
        raise ValueError(f"{inputs.shown(value)} is not one line of text")
    return value


PathStr = Annotated[str, BeforeValidator(lambda v: _env_value(v) and v)]


class VerifyConfig(BaseModel):
    """``verify: {key: …}``: the public key (a PEM file, relative to the config's folder, or a key
    manager URI) the base image must be signed with (:mod:`builder.extend.trust`)."""

    model_config = ConfigDict(extra="forbid")
    key: PathStr


class InferenceConfig(BaseModel):
    """The inference config (JSON keys as in Azure ML's CLI form; YAML adds the last five)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    entry_script: PathStr = Field(alias="entryScript")
    runtime: str = "python"
    conda_file: PathStr | None = Field(None, alias="condaFile")
    extra_dockerfile_steps: PathStr | None = Field(None, alias="extraDockerfileSteps")
    source_directory: PathStr | None = Field(None, alias="sourceDirectory")
    enable_gpu: bool = Field(False, alias="enableGpu")
    base_image: Annotated[str, BeforeValidator(grammar.docker_reference)] = Field(alias="baseImage")
    base_image_registry: RegistryAuth | None = Field(None, alias="baseImageRegistry")
    requirements: list[Annotated[str, BeforeValidator(grammar.requirement)]] = []
    apt: list[Annotated[str, BeforeValidator(grammar.debian_package)]] = []
    model: list[PathStr] = []
    env: dict[Annotated[str, BeforeValidator(grammar.env_name)], Annotated[str, BeforeValidator(_env_value)]] = {}
    verify: VerifyConfig | None = None

    @field_validator("base_image_registry", mode="before")
    @classmethod
    def _registry_host(cls, value):
        # The CLI JSON form gives just the host; the SDK form gives address/username/password.
        return {"address": value} if isinstance(value, str) else value


def _no_duplicates(pairs: list[tuple]) -> dict:
    keys = [k for k, _ in pairs]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ValueError(f"duplicate key {inputs.shown(dupes[0])}")
    return dict(pairs)


def load_config(path: Path) -> InferenceConfig:
    """Parse a JSON or YAML inference config strictly (see :mod:`builder.matrix.inputs`). Raises
    ExtendError (one line per problem; a credential is never echoed)."""
    name = path.name
    try:
        if path.suffix == ".json":
            raw = inputs.load_json(inputs.read_text(path), name, object_pairs_hook=_no_duplicates)
        else:
            raw = inputs.load_yaml(path)
    except ConfigError as exc:
        raise ExtendError(exc.lines) from None
    return validation.validate(name, raw, InferenceConfig, "a mapping of inference config keys", ExtendError)


def conda_pip_requirements(path: Path) -> list[str]:
    """The ``pip:`` section of a conda environment file, as PEP 508 strings, read for linux-64 by
    conda-lock's own environment-file parser (selectors and markers as conda-lock applies them,
    https://conda.github.io/conda-lock/). The file is first read by this project's strict YAML reader
    (size, encoding, duplicate keys, aliases). Raises ExtendError naming every conda-only package
    (conda channels cannot be reached; move them to the pip section)."""
    try:
        env = inputs.load_yaml(path) or {}
    except ConfigError as exc:
        raise ExtendError([f"condaFile {line}" for line in exc.lines]) from None
    if not isinstance(env, dict) or not isinstance(env.get("dependencies"), list):
        raise ExtendError([f"condaFile {path.name}: expected a mapping with a dependencies list"])
    _check_pip_section(path.name, env["dependencies"])
    deps = _conda_lock_dependencies(path)
    conda_only = [d.name + ("" if getattr(d, "version", "") in ("", "*", None) else f" {d.version}")
                  for d in deps if d.manager == "conda" and d.name not in CONDA_IGNORED]
    if conda_only:
        raise ExtendError([f"condaFile {path.name}: conda-only packages cannot be installed (conda channels are not "
                           f"reachable): {', '.join(conda_only)}; list them under the pip: section instead"])
    return _pip_requirements(path.name, deps)


def _conda_lock_dependencies(path: Path) -> list:
    """conda-lock's dependencies of the environment file at ``path`` for linux-64 (its
    ``Dependency`` objects, conda and pip alike). Raises ExtendError when conda-lock cannot read it."""
    import tempfile
    import warnings

    from conda_lock.src_parser.environment_yaml import parse_environment_file

    with tempfile.TemporaryDirectory(prefix="builder-conda-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # conda-lock warns that it leaves python_version markers to pip
        # An empty PyPI-to-conda name mapping (conda-lock's default is fetched from GitHub): the pip
        # names are kept as they are, and only the pip section is installed.
        mapping = Path(tmp) / "pypi-mapping.json"
        mapping.write_text("{}")
        try:
            spec = parse_environment_file(path, platforms=["linux-64"], mapping_url=str(mapping))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ExtendError([f"condaFile {path.name}: conda-lock cannot read it: {inputs.shown(str(exc))}"]) from None
    return spec.dependencies["linux-64"]


def _pip_requirements(name: str, deps: list) -> list[str]:
    """The pip dependencies among conda-lock's ``deps`` as PEP 508 strings (name, extras, version
    specifier, markers), each checked by :func:`builder.matrix.grammar.requirement`. Raises ExtendError
    naming each one that is a URL or VCS dependency or fails the grammar (``name`` is the file's)."""
    pip, bad = [], []
    for d in deps:
        if d.manager != "pip":
            continue
        version = getattr(d, "version", None)
        if version is None:  # a URL or VCS dependency: locks need an index or a wheelhouse
            bad.append(f"condaFile {name}: pip: {d.name}: only name and version specifiers are supported (no URLs)")
            continue
        text = d.name + (f"[{','.join(d.extras)}]" if d.extras else "") + ("" if version in ("", "*") else version)
        text += f"; {d.markers}" if d.markers else ""
        try:
            pip.append(grammar.requirement(text))
        except ValueError as exc:
            bad.append(f"condaFile {name}: pip: {exc}")
    if bad:
        raise ExtendError(bad)
    return pip


def _check_pip_section(name: str, dependencies: list) -> None:
    """Every ``pip:`` entry of a conda file's ``dependencies``, as written, against the grammar the
    config's ``requirements`` use (:func:`builder.matrix.grammar.requirement`: PEP 508, no URL, VCS, file
    path, editable install or pip option). conda-lock drops some of those with only a warning
    (an editable VCS URL), so they are checked before it reads the file. Raises ExtendError naming each."""
    bad = []
    for dep in dependencies:
        if not isinstance(dep, dict) or "pip" not in dep:
            continue
        if not isinstance(dep["pip"], list):
            bad.append(f"condaFile {name}: pip: expected a list of requirements, got {type(dep['pip']).__name__}")
            continue
        for item in dep["pip"]:
            try:
                grammar.requirement(item)
            except ValueError as exc:
                bad.append(f"condaFile {name}: pip: {exc}")
    if bad:
        raise ExtendError(bad)


class Paths:
    """Resolves a config's paths (symlinks followed) and refuses any that leaves the allowed roots:
    the config's folder and those ``--allow-outside`` names. Collects one line per problem."""

    def __init__(self, config_path: Path, allow_outside: list[Path]):
        self.name = config_path.name
        self.here = config_path.parent
        self.roots = [self.here.resolve(), *(Path(p).resolve() for p in allow_outside)]
        self.errors: list[str] = []

    def inside(self, path: Path) -> bool:
        real = path.resolve()
        return any(real == r or real.is_relative_to(r) for r in self.roots)

    def resolve(self, key: str, value: str, base: Path | None = None, kind: str = "file") -> Path | None:
        """``value`` under ``base`` (default: the config's folder), or None after recording why."""
        path = (base or self.here) / value
        exists = path.is_file() if kind == "file" else path.is_dir() if kind == "dir" else path.exists()
        if not exists:
            self.errors.append(f"{self.name}: {key}: {path} does not exist" if kind != "dir"
                               else f"{self.name}: {key}: {path} is not a directory")
            return None
        if not self.inside(path):
            self.errors.append(f"{self.name}: {key}: {value} resolves to {path.resolve()}, outside the config's "
                               f"folder {self.here} (name another root with --allow-outside)")
            return None
        return path

    def files(self, key: str, folder: Path) -> list[Path]:
        """Every file below ``folder`` (following links that stay inside the roots; a link that
        leaves them is refused by name), sorted; ``__pycache__`` skipped."""
        out: list[Path] = []
        seen: set[Path] = set()
        for top, dirs, names in os.walk(folder, followlinks=True):
            real = Path(top).resolve()
            if real in seen or "__pycache__" in Path(top).parts:
                dirs[:] = []
                continue
            seen.add(real)
            for entry in sorted([*dirs, *names]):
                p = Path(top) / entry
                if p.is_symlink() and not self.inside(p):
                    self.errors.append(f"{self.name}: {key}: {p} is a link to {p.resolve()}, outside the config's "
                                       "folder (name another root with --allow-outside)")
                    if entry in dirs:
                        dirs.remove(entry)
            out += [Path(top) / n for n in names if (Path(top) / n).is_file() and self.inside(Path(top) / n)]
        return sorted(out)
