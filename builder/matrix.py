"""Stage 1 — load and validate ``matrix.yaml`` and expand it into image specs.

The matrix is the single source of image names, parents, build order, tags and test selection.
:func:`load` parses and validates it (pydantic models, versions parsed with :mod:`packaging`) and
returns a :class:`Matrix`; :meth:`Matrix.images` expands it into frozen :class:`ImageSpec` cells in
build order (parents first). Every problem is reported as one line of the form
``matrix.yaml: frameworks.sklearn.versions[1].version: '1.x' is not a valid version`` inside a
:class:`MatrixError`.
"""

from __future__ import annotations

import hashlib
import json
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from builder import compat as compat_mod
from builder import inputs, plan
from builder.inputs import InputError

#: Frameworks the project knows how to render and smoke-test; each has a folder tests/by_image/<key>/.
KNOWN_FRAMEWORKS = ("minimal", "sklearn", "xgboost", "onnxruntime", "pytorch", "tensorflow")
DEVICES = ("cpu", "gpu")


class MatrixError(InputError):
    """A matrix that cannot be used. ``lines`` holds one human-readable line per problem."""


def _grammar(check):
    """A string type checked by one of :mod:`builder.inputs`' grammars on the raw YAML value."""
    return Annotated[str, BeforeValidator(check)]


VersionStr = _grammar(inputs.version)
Text = _grammar(inputs.text)
Key = _grammar(inputs.key_name)
Reference = _grammar(inputs.docker_reference)
DistName = _grammar(inputs.distribution_name)
AbsPath = _grammar(inputs.absolute_path)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Project(_Model):
    source: Text
    vendor: Text
    licenses: Text
    label_prefix: _grammar(inputs.label_prefix)


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
    if literal and not inputs.TAG.fullmatch("x" + literal):
        raise ValueError(f"{inputs.shown(value)}: the text around the fields must be tag characters (A-Z a-z 0-9 _ . -)")
    if "image_id" not in fields:
        raise ValueError(f"{inputs.shown(value)} must contain {{image_id}} so one tag never names two images")
    return value


class TagPolicy(_Model):
    moving: list[Annotated[str, BeforeValidator(lambda v: _check_tag(v))]] = ["latest"]
    immutable: Annotated[str, BeforeValidator(_tag_template)]


def _check_tag(value: object) -> str:
    if not isinstance(value, str) or not inputs.TAG.fullmatch(value):
        raise ValueError(f"{inputs.shown(value)} is not a tag ([A-Za-z0-9_][A-Za-z0-9_.-], at most 128)")
    return value


class Bootstrap(_Model):
    tool: Literal["debootstrap"] = "debootstrap"
    suite: Key
    variant: Literal["minbase", "buildd", "fakechroot"] = "minbase"


class Base(_Model):
    title: Text
    python: VersionStr
    pull: Reference
    bootstrap: Bootstrap

    def recipe_digest(self) -> str:
        """sha256 (hex, 12 chars) of the bootstrap recipe: a changed recipe names a new base image."""
        return hashlib.sha256(self.bootstrap.model_dump_json().encode()).hexdigest()[:12]


class Runtime(_Model):
    user: _grammar(inputs.user_name)
    #: any uid but root's: the images promise a non-root user
    uid: Annotated[int, Field(strict=True, ge=1, le=2**31 - 1)]
    venv: AbsPath
    app_root: AbsPath
    model_dir: AbsPath
    entry_script: _grammar(inputs.relative_path)
    port: Annotated[int, Field(strict=True, ge=1, le=65535)]
    apt: list[_grammar(inputs.debian_package)]
    packages: dict[DistName, VersionStr]


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
        inputs.key_name(v)
    return value


class FrameworkVersion(_Model):
    version: VersionStr
    #: base keys, or "all": every base whose Python compat.yaml lists for this version
    bases: Annotated[Literal["all"] | list[str], BeforeValidator(_bases)]
    devices: list[Literal["cpu", "gpu"]] = Field(min_length=1)
    companions: dict[DistName, VersionStr] = {}
    cuda: Cuda | None = None
    name_version: bool = True


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


@dataclass(frozen=True)
class ImageSpec:
    """One cell of the matrix: everything needed to render, build, test and tag one image.

    ``requirements`` are exact pins (``name==version``) installed in this image's own layer;
    ``parent`` is the parent image's name, or None for an image built FROM its base.
    ``ancestors`` lists the frameworks from the root image down to this one (test selection).
    ``cuda``/``cudnn`` come from compat.yaml for GPU cells; ``base_image`` is the reference a root
    image is built FROM (the base's pull reference, or a CUDA image).
    """

    name: str
    framework: str
    framework_title: str
    version: str
    device: str
    base: str
    python: str
    parent: str | None
    distribution: str
    requirements: tuple[str, ...]
    ancestors: tuple[str, ...]
    cuda: str | None
    cudnn: str | None
    base_image: str
    cell_digest: str = field(default="")

    @property
    def python_tag(self) -> str:
        """``py311`` for Python 3.11."""
        major, minor = Version(self.python).release[:2]
        return f"py{major}{minor}"


class Matrix:
    """A validated matrix file. ``path`` is kept for messages; ``data`` is the parsed model."""

    def __init__(self, path: Path, data: MatrixFile, table: compat_mod.Compat):
        self.path = path
        self.data = data
        self.compat = table
        self._images = _expand(path, data, table)

    def images(self) -> list[ImageSpec]:
        """All image cells in build order (every parent before its children)."""
        return list(self._images)

    def image(self, name: str) -> ImageSpec:
        """The cell called ``name``. Raises KeyError naming the known images."""
        for spec in self._images:
            if spec.name == name:
                return spec
        raise KeyError(f"no image {name!r} in {self.path.name} (see `builder list`)")

    def children(self, name: str) -> list[ImageSpec]:
        """Direct and indirect descendants of ``name``, in build order."""
        out: list[ImageSpec] = []
        names = {name}
        for spec in self._images:
            if spec.parent in names:
                out.append(spec)
                names.add(spec.name)
        return out


def image_name(framework: str, version: str, base: str, python: str, device: str,
               cuda: str | None = None, name_version: bool = True) -> str:
    """The image name of one matrix cell, after the Azure ML seeds' pattern.

    ``<framework>-<major.minor>-<os>-py<XY>-cpu-inference``, or for GPU cells
    ``<framework>-<major.minor>-<os>-py<XY>-cuda<cuda>-gpu-inference`` (``cuda`` as compat.yaml
    gives it: ``13.0``, or ``12`` when the wheels only name the major); the version part is left out
    when ``name_version`` is false (the minimal image). Example:
    ``image_name("sklearn", "1.9.1", "debian12", "3.11", "cpu")`` -> ``sklearn-1.9-debian12-py311-cpu-inference``.
    """
    py = Version(python).release
    parts = [framework]
    if name_version:
        release = Version(version).release
        parts.append(".".join(str(p) for p in (release + (0,))[:2]))
    parts += [base, f"py{py[0]}{py[1]}"]
    if device == "gpu":
        parts += [f"cuda{cuda}", "gpu"]
    else:
        parts.append("cpu")
    parts.append("inference")
    return "-".join(parts)


def load_file(path: Path) -> MatrixFile:
    """Read and schema-validate a matrix file, without the compatibility table or expansion.

    Raises :class:`MatrixError` for an unreadable file, malformed YAML (with its line number) and
    schema errors (unknown or missing keys, wrong types, invalid versions, an empty matrix).
    """
    path = Path(path)
    fname = path.name
    try:
        raw = inputs.load_yaml(path)
    except InputError as exc:
        raise MatrixError(exc.lines) from None
    if raw is None or raw == {}:
        raise MatrixError([f"{fname}: the matrix is empty (expected bases, runtime and frameworks)"])
    if not isinstance(raw, dict):
        raise MatrixError([f"{fname}: expected a mapping at the top level, got {type(raw).__name__}"])
    try:
        return MatrixFile.model_validate(raw)
    except ValidationError as exc:
        raise MatrixError(inputs.pydantic_lines(fname, exc, MatrixFile)) from None


def load(path: Path, compat_path: Path | None = None) -> Matrix:
    """Read and validate a matrix file against the compatibility table (``compat_path``, by default
    compat.yaml beside the matrix; see :mod:`builder.compat`) and expand it.

    Raises :class:`MatrixError` (one line per problem, each naming the file and key path) for
    everything :func:`load_file` rejects, unknown frameworks, bases or parents, parent cycles,
    duplicate image names and cells the table does not support (framework version, Python, GPU,
    CUDA).
    """
    path = Path(path)
    data = load_file(path)
    compat_path = Path(compat_path) if compat_path else path.parent / "compat.yaml"
    try:
        table = compat_mod.load(compat_path)
    except InputError as exc:
        raise MatrixError(exc.lines) from None
    return Matrix(path, data, table)


def _cell_digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _device_problem(table: compat_mod.Compat, key: str, fv: FrameworkVersion, entry, device: str) -> str | None:
    if table.requirement(key, device, fv.version) is None:
        return f"device {device!r}: compat.yaml has no {device} package for {key}"
    if device != "gpu":
        return None
    cuda = fv.cuda
    if cuda is not None and cuda.source == "image":
        if not cuda.image or not cuda.version:
            return "cuda: source 'image' needs both image and version"
        return None
    if entry.gpu is None:
        return f"device 'gpu': {key} {fv.version} has no GPU wheels in compat.yaml (no CUDA source)"
    if cuda is not None and cuda.version is not None and cuda.version != entry.gpu.cuda:
        return (f"cuda.version: {cuda.version!r} is not what {key} {fv.version}'s GPU wheels need "
                f"(supported: {entry.gpu.cuda})")
    return None


def _expand(path: Path, m: MatrixFile, table: compat_mod.Compat) -> list[ImageSpec]:
    fname = path.name
    errors: list[str] = []
    for key in m.frameworks:
        if key not in KNOWN_FRAMEWORKS:
            errors.append(f"{fname}: frameworks.{key}: unknown framework {key!r} "
                          f"(expected one of: {', '.join(KNOWN_FRAMEWORKS)})")
    for key, fw in m.frameworks.items():
        if fw.parent is not None and fw.parent not in m.frameworks:
            errors.append(f"{fname}: frameworks.{key}.parent: unknown parent {fw.parent!r} "
                          f"(expected one of: {', '.join(sorted(m.frameworks))})")
    cycle = plan.find_cycle({k: [fw.parent] if fw.parent in m.frameworks else []
                             for k, fw in m.frameworks.items()})
    if cycle:
        errors.append(f"{fname}: frameworks: parent cycle: {' -> '.join(cycle)}")
    if errors:
        raise MatrixError(errors)

    cells: dict[str, tuple[str, ImageSpec]] = {}
    by_cell: dict[tuple[str, str, str], str] = {}  # (framework, base, device) -> image name
    for key, fw in m.frameworks.items():
        for i, fv in enumerate(fw.versions):
            where = f"frameworks.{key}.versions[{i}]"
            entry = table.entry(key, fv.version)
            if entry is None:
                known = ", ".join(table.versions.get(key, {})) or "none"
                errors.append(f"{fname}: {where}.version: {key} {fv.version} is not in compat.yaml "
                              f"(supported: {known}; add it and run `builder compat refresh`)")
                continue
            bases = [b for b, v in m.bases.items() if v.python in entry.python] if fv.bases == "all" else fv.bases
            for base in bases:
                if base not in m.bases:
                    errors.append(f"{fname}: {where}.bases: unknown base {base!r} "
                                  f"(expected one of: {', '.join(sorted(m.bases))})")
                    continue
                if m.bases[base].python not in entry.python:
                    errors.append(f"{fname}: {where}.bases: {key} {fv.version} has no wheels for Python "
                                  f"{m.bases[base].python} (base {base}); supported: {', '.join(entry.python)}")
                    continue
                for device in fv.devices:
                    problem = _device_problem(table, key, fv, entry, device)
                    if problem:
                        errors.append(f"{fname}: {where}: {problem}")
                        continue
                    spec = _spec(m, table, key, fw, fv, base, device)
                    if spec.name in cells:
                        errors.append(f"{fname}: {where}: duplicate image name {spec.name!r} "
                                      f"(also from {cells[spec.name][0]})")
                        continue
                    cells[spec.name] = (where, spec)
                    by_cell[(key, base, device)] = spec.name
    if errors:
        raise MatrixError(errors)
    if not cells:
        raise MatrixError([f"{fname}: frameworks: no image cells (no base has a Python the table supports)"])

    resolved: dict[str, ImageSpec] = {}
    for name, (where, spec) in cells.items():
        fw = m.frameworks[spec.framework]
        parent = None
        if fw.parent is not None and spec.base_image == m.bases[spec.base].pull:
            # GPU cells whose CUDA comes from wheels sit on the CPU runtime image of their base.
            parent = by_cell.get((fw.parent, spec.base, spec.device)) or by_cell.get((fw.parent, spec.base, "cpu"))
            if parent is None:
                errors.append(f"{fname}: {where}: unknown parent: framework {fw.parent!r} has no "
                              f"{spec.device} image on base {spec.base!r}")
                continue
        resolved[name] = spec.__class__(**{**spec.__dict__, "parent": parent})
    if errors:
        raise MatrixError(errors)

    order = plan.build_order({n: [s.parent] if s.parent else [] for n, s in resolved.items()})
    done: dict[str, ImageSpec] = {}
    for n in order:
        spec = resolved[n]
        parent = done.get(spec.parent) if spec.parent else None
        ancestors = (parent.ancestors if parent else ()) + (spec.framework,)
        # The parent's digest is folded in, so a change anywhere up the tree changes the cell digest.
        digest = _cell_digest({**spec.__dict__, "ancestors": ancestors, "cell_digest": "",
                               "parent_digest": parent.cell_digest if parent else "",
                               "runtime": m.runtime.model_dump() if parent is None else None,
                               "base": m.bases[spec.base].model_dump()})
        done[n] = spec.__class__(**{**spec.__dict__, "ancestors": ancestors, "cell_digest": digest})
    return list(done.values())


def _spec(m: MatrixFile, table: compat_mod.Compat, key: str, fw: Framework, fv: FrameworkVersion, base: str,
          device: str) -> ImageSpec:
    b = m.bases[base]
    pin = table.requirement(key, device, fv.version)
    entry = table.entry(key, fv.version)
    from_image = device == "gpu" and fv.cuda is not None and fv.cuda.source == "image"
    own = (pin,) + tuple(f"{p}=={v}" for p, v in fv.companions.items())
    if device == "gpu" and not from_image:
        own += tuple(f"{n}=={v}" for n, v in entry.gpu.wheels.items())
    if fw.parent is None or from_image:
        runtime = tuple(f"{p}=={v}" for p, v in m.runtime.packages.items())
        requirements = runtime + tuple(r for r in own if r.split("=")[0] not in m.runtime.packages)
    else:
        requirements = own
    cuda = cudnn = None
    if device == "gpu":
        cuda = fv.cuda.version if from_image else entry.gpu.cuda
        cudnn = None if from_image else entry.gpu.cudnn
    return ImageSpec(
        name=image_name(key, fv.version, base, b.python, device, cuda, fv.name_version),
        framework=key,
        framework_title=fw.title,
        version=fv.version,
        device=device,
        base=base,
        python=b.python,
        parent=None,
        distribution=table.distribution(key, device),
        requirements=requirements,
        ancestors=(),
        cuda=cuda,
        cudnn=cudnn,
        base_image=fv.cuda.image if from_image else b.pull,
    )
