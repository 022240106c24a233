"""The schema of ``matrix.yaml`` and its loading: takes the file, gives the validated model.

:func:`load_file` reads the file strictly (:mod:`builder.matrix.inputs`) and validates it against
:class:`MatrixFile` (pydantic); every string is checked against its grammar on the raw YAML value.
Every problem is one line of the form
``matrix.yaml: frameworks.sklearn.versions[1].version: '1.x' is not a valid version (PEP 440)``
inside a :class:`MatrixError`.
"""

from __future__ import annotations

import hashlib
import string
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from builder.matrix import grammar, inputs, validation
from builder.matrix.inputs import ConfigError
from builder.matrix.platform import DEFAULT, Platform


class MatrixError(ConfigError):
    """A matrix that cannot be used. ``lines`` holds one human-readable line per problem."""


def _grammar(check):
    """A string type checked by one of :mod:`builder.matrix.inputs`' grammars on the raw YAML value."""
    return Annotated[str, BeforeValidator(check)]


VersionStr = _grammar(grammar.version)
Text = _grammar(grammar.text)
Key = _grammar(grammar.key_name)
Reference = _grammar(grammar.docker_reference)
DistName = _grammar(grammar.distribution_name)
AbsPath = _grammar(grammar.absolute_path)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Project(_Model):
    source: Text
    vendor: Text
    licenses: Text
    label_prefix: _grammar(grammar.label_prefix)


TAG_FIELDS = ("framework_version", "python_version", "image_id")


def _tag_template(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{inputs.shown(value)} is not a string (expected a tag template)")
    try:
        parts = list(string.Formatter().parse(value))
    except ValueError as exc:
        raise ValueError(f"{inputs.shown(value)} is not a valid tag template ({exc})") from None
    fields = [f for _, f, _, _ in parts if f is not None]
    for (_, f, spec, conversion) in parts:
        if f is not None and (f not in TAG_FIELDS or spec or conversion):
            raise ValueError(f"{inputs.shown(value)}: {{{inputs.shown(f)[1:-1]}}} is not a plain field "
                             f"(fields: {', '.join(TAG_FIELDS)}; no format spec, index or conversion)")
    literal = "".join(lit for lit, _, _, _ in parts)
    if literal and not grammar.TAG.fullmatch("x" + literal):
        raise ValueError(f"{inputs.shown(value)}: the text around the fields must be tag characters (A-Z a-z 0-9 _ . -)")
    if "image_id" not in fields:
        raise ValueError(f"{inputs.shown(value)} must contain {{image_id}} so one tag never names two images")
    return value


class TagPolicy(_Model):
    moving: list[Annotated[str, BeforeValidator(lambda v: _check_tag(v))]] = ["latest"]
    immutable: Annotated[str, BeforeValidator(_tag_template)]


def _check_tag(value: object) -> str:
    if not isinstance(value, str) or not grammar.TAG.fullmatch(value):
        raise ValueError(f"{inputs.shown(value)} is not a tag ([A-Za-z0-9_][A-Za-z0-9_.-], at most 128)")
    return value


class Bootstrap(_Model):
    tool: Literal["debootstrap"] = "debootstrap"
    suite: Key
    variant: Literal["minbase", "buildd", "fakechroot"] = "minbase"


def _platforms(value: object) -> object:
    if not isinstance(value, list) or not value or len(set(map(str, value))) != len(value):
        raise ValueError(f"{inputs.shown(value)} is not a non-empty list of distinct platforms")
    if DEFAULT.name not in map(str, value):
        raise ValueError(f"{inputs.shown(value)} must include {DEFAULT} (the build platform)")
    return value


Platforms = Annotated[list[Platform], BeforeValidator(_platforms)]


class Base(_Model):
    title: Text
    python: VersionStr
    pull: Reference
    bootstrap: Bootstrap
    #: the platforms every cell on this base is built for unless its version says otherwise
    platforms: Platforms = [DEFAULT]

    def recipe_digest(self) -> str:
        """sha256 (hex, 12 chars) of the bootstrap recipe: a changed recipe names a new base image."""
        return hashlib.sha256(self.bootstrap.model_dump_json().encode()).hexdigest()[:12]


class Runtime(_Model):
    user: _grammar(grammar.user_name)
    #: any uid but root's: the images promise a non-root user
    uid: Annotated[int, Field(strict=True, ge=1, le=2**31 - 1)]
    venv: AbsPath
    app_root: AbsPath
    model_dir: AbsPath
    #: where `builder serve` and the smoke tests mount a model: beside app_root, which they mount
    #: read-only (no mount point can be made inside it); not in the image, so not in a cell digest
    model_mount: Annotated[AbsPath, Field(exclude=True)]
    entry_script: _grammar(grammar.relative_path)
    port: Annotated[int, Field(strict=True, ge=1, le=65535)]
    apt: list[_grammar(grammar.debian_package)] = Field(min_length=1)
    packages: dict[DistName, VersionStr]
    #: folders removed from every image's installed packages (relative to site-packages)
    prune: list[_grammar(grammar.prune_path)] = []


class BuildTools(_Model):
    """Tools used inside builds only. Each runs from a build stage of its own and is bind-mounted
    into the RUN that needs it, so it is never left in an image (``uv``: the installer)."""

    uv: VersionStr


class Cuda(_Model):
    """Where a GPU cell's CUDA comes from. ``pypi`` (default): the framework's own nvidia-* wheels,
    with the versions compat.yaml gives (``version``, when set, must match them). ``image``: a CUDA
    base image such as ``nvidia/cuda:<ver>-cudnn-runtime-<os>`` for users who can pull it; the cell
    is then built FROM that image with the runtime layer, and ``version`` is required."""

    version: VersionStr | None = None
    source: Literal["pypi", "image"] = "pypi"
    image: Reference | None = None


def _bases(value: object) -> object:
    if value == "all":
        return value
    if not isinstance(value, list) or not value:
        raise ValueError(f"{inputs.shown(value)} is not 'all' or a non-empty list of base keys")
    for v in value:
        grammar.key_name(v)
    return value


class FrameworkVersion(_Model):
    version: VersionStr
    #: base keys, or "all": every base whose Python compat.yaml lists for this version
    bases: Annotated[Literal["all"] | list[str], BeforeValidator(_bases)]
    devices: list[Literal["cpu", "gpu"]] = Field(min_length=1)
    companions: dict[DistName, VersionStr] = {}
    cuda: Cuda | None = None
    name_version: bool = True
    #: overrides the bases' platforms for this version (each needs wheels in compat.yaml)
    platforms: Platforms | None = None


class Framework(_Model):
    title: Text
    parent: Key | None = None
    versions: list[FrameworkVersion] = Field(min_length=1)


class MatrixFile(_Model):
    schema_: Literal[1] = Field(alias="schema")
    project: Project
    tags: TagPolicy
    bases: dict[Key, Base] = Field(min_length=1)
    runtime: Runtime
    build_tools: BuildTools
    frameworks: dict[Key, Framework] = Field(min_length=1)
    #: How the images' layers are compressed in the registry (https://docs.docker.com/build/exporters/oci-docker/).
    compression: Literal["gzip", "zstd"] = "gzip"


def load_file(path: Path) -> MatrixFile:
    """Read and schema-validate a matrix file, without the compatibility table or expansion.

    Raises :class:`MatrixError` for an unreadable file, malformed YAML (with its line number) and
    schema errors (unknown or missing keys, wrong types, invalid versions, an empty matrix).
    """
    path = Path(path)
    fname = path.name
    try:
        raw = inputs.load_yaml(path)
    except ConfigError as exc:
        raise MatrixError(exc.lines) from None
    if raw is None or raw == {}:
        raise MatrixError([f"{fname}: the matrix is empty (expected bases, runtime and frameworks)"])
    return validation.validate(fname, raw, MatrixFile, "a mapping at the top level", MatrixError)
