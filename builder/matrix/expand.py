"""Expansion: takes a validated matrix and the compatibility table, gives the image specs.

:func:`expand` runs four documented steps, each collecting one line per problem before the next
runs: :func:`check_frameworks` (known frameworks, parents, no cycles), :func:`cells` (one spec per
framework version x base x device the table supports), :func:`link_parents` (each child on its
parent's image of the same base) and :func:`order` (parents first, ancestors and cell digests).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, replace

from packaging.requirements import Requirement

from builder.matrix import plan
from builder.matrix.compat import DRIVERS_SOURCE, Compat, VersionEntry
from builder.matrix.inputs import SHOWN, shown
from builder.matrix.naming import image_name
from builder.matrix.platform import DEFAULT, PLATFORMS, Platform
from builder.matrix.schema import Framework, FrameworkVersion, MatrixError, MatrixFile


@dataclass(frozen=True)
class ImageSpec:
    """One cell of the matrix: everything needed to render, build, test and tag one image.

    ``requirements`` are exact pins (``name==version``, :class:`packaging.requirements.Requirement`)
    installed in this image's own layer; ``package`` is the framework's PyPI distribution as the
    image installs it (``scikit-learn``); ``parent`` is the parent image's name, or None for an image
    built FROM its base. ``ancestors`` lists the frameworks from the root image down to this one
    (test selection). ``cuda``/``cudnn`` come from compat.yaml for GPU cells, and so does
    ``driver_min``, the minimum NVIDIA driver of that CUDA major (``drivers``); ``base_image`` is the
    reference a root image is built FROM (the base's pull reference, or a CUDA image, then
    ``from_cuda_image``). ``platforms`` are the OCI platforms the image is built for, linux/amd64
    first; one tag names them all (an image index).
    """

    name: str
    framework: str
    framework_title: str
    version: str
    device: str
    base: str
    python: str
    parent: str | None
    package: str
    requirements: tuple[Requirement, ...]
    ancestors: tuple[str, ...]
    cuda: str | None
    cudnn: str | None
    base_image: str
    from_cuda_image: bool = False
    platforms: tuple[Platform, ...] = (DEFAULT,)
    cell_digest: str = field(default="")
    driver_min: str | None = None

    def pins(self) -> dict[str, str]:
        """``{name: version}`` of the exact pins (``==`` or ``===``)."""
        return {r.name: next(iter(r.specifier)).version for r in self.requirements}

    @property
    def nccl(self) -> str | None:
        """The NCCL version (major.minor.patch) of the image's own ``nvidia-nccl[-cuXX]`` pin, or None."""
        found = [v for n, v in self.pins().items() if re.fullmatch(r"nvidia-nccl(-cu\d+)?", n)]
        return ".".join(found[0].split(".")[:3]) if found else None


#: ImageSpec fields added after images were published: left out of the cell digest while unset, so a
#: cell that does not use one keeps its digest (and its rendered Dockerfile) as it was.
LATER_FIELDS = ("driver_min",)


def expand(fname: str, m: MatrixFile, table: Compat) -> list[ImageSpec]:
    """Every image cell in build order. Raises MatrixError (one line per problem, ``fname`` first)."""
    check_frameworks(fname, m, table)
    found, by_cell = cells(fname, m, table)
    return order(m, link_parents(fname, m, found, by_cell))


def check_frameworks(fname: str, m: MatrixFile, table: Compat) -> None:
    """Every framework is one compat.yaml has packages for, every parent exists, and parents form
    no cycle. Raises MatrixError."""
    errors = [f"{fname}: frameworks.{key}: unknown framework {key!r} (expected one of: {', '.join(table.packages)})"
              for key in m.frameworks if key not in table.packages]
    errors += [f"{fname}: frameworks.{key}.parent: unknown parent {fw.parent!r} "
               f"(expected one of: {', '.join(sorted(m.frameworks))})"
               for key, fw in m.frameworks.items() if fw.parent is not None and fw.parent not in m.frameworks]
    cycle = plan.find_cycle({k: [fw.parent] if fw.parent in m.frameworks else [] for k, fw in m.frameworks.items()})
    if cycle:
        errors.append(f"{fname}: frameworks: parent cycle: {' -> '.join(cycle)}")
    if errors:
        raise MatrixError(errors)


def cells(fname: str, m: MatrixFile, table: Compat) -> tuple[dict[str, tuple[str, ImageSpec]], dict]:
    """One spec (without parent) per framework version x base x device: ``{name: (key path, spec)}``
    and ``{(framework, base, device): name}``. Raises MatrixError for versions, Pythons, devices or
    CUDA the table does not support, unknown bases and duplicate names."""
    errors: list[str] = []
    found: dict[str, tuple[str, ImageSpec]] = {}
    by_cell: dict[tuple[str, str, str], str] = {}
    for key, fw in m.frameworks.items():
        for i, fv in enumerate(fw.versions):
            where = f"frameworks.{key}.versions[{i}]"
            entry = table.entry(key, fv.version)
            if entry is None:
                errors.append(f"{fname}: {where}.version: {key} {fv.version} is not in compat.yaml (supported: "
                              f"{', '.join(table.versions.get(key, {})) or 'none'}; add it and run `builder compat refresh`)")
                continue
            for base in _bases(fname, where, m, key, fv, entry, errors):
                for device in fv.devices:
                    problem = (_device_problem(table, key, fv, entry, device)
                               or _platform_problem(m, key, fv, entry, base, device))
                    spec = None if problem else _spec(m, table, key, fw, fv, base, device)
                    if problem or spec.name in found:
                        errors.append(f"{fname}: {where}: " + (problem or f"duplicate image name {spec.name!r} "
                                                                f"(also from {found[spec.name][0]})"))
                        continue
                    found[spec.name] = (where, spec)
                    by_cell[(key, base, device)] = spec.name
    if errors:
        raise MatrixError(errors)
    if not found:
        raise MatrixError([f"{fname}: frameworks: no image cells (no base has a Python the table supports)"])
    return found, by_cell


def _bases(fname: str, where: str, m: MatrixFile, key: str, fv: FrameworkVersion, entry: VersionEntry,
           errors: list[str]) -> list[str]:
    # The bases a version asks for ("all": those whose Python has wheels); a problem is recorded.
    if fv.bases == "all":
        return [b for b, v in m.bases.items() if v.python in entry.python]
    out = []
    for base in fv.bases:
        if base not in m.bases:
            errors.append(f"{fname}: {where}.bases: unknown base {shown(base)} (expected one of: "
                          f"{', '.join(b if len(b) <= SHOWN else shown(b) for b in sorted(m.bases))})")
        elif m.bases[base].python not in entry.python:
            errors.append(f"{fname}: {where}.bases: {key} {fv.version} has no wheels for Python {m.bases[base].python} "
                          f"(base {base}); supported: {', '.join(entry.python)}")
        else:
            out.append(base)
    return out


def _device_problem(table: Compat, key: str, fv: FrameworkVersion, entry: VersionEntry, device: str) -> str | None:
    if table.requirement(key, device, fv.version) is None:
        return f"device {device!r}: compat.yaml has no {device} package for {key}"
    cuda = fv.cuda
    if device != "gpu":
        return None
    if cuda is not None and cuda.source == "image":
        return None if cuda.image and cuda.version else "cuda: source 'image' needs both image and version"
    if entry.gpu is None:
        return f"device 'gpu': {key} {fv.version} has no GPU wheels in compat.yaml (no CUDA source)"
    if cuda is not None and cuda.version is not None and cuda.version != entry.gpu.cuda:
        return (f"cuda.version: {cuda.version!r} is not what {key} {fv.version}'s GPU wheels need "
                f"(supported: {entry.gpu.cuda})")
    if table.driver_min(entry.gpu.cuda) is None:
        return (f"device 'gpu': compat.yaml's drivers has no minimum NVIDIA driver for CUDA "
                f"{entry.gpu.cuda.split('.')[0]} (add it from NVIDIA's release notes: {DRIVERS_SOURCE})")
    return None


def platforms(m: MatrixFile, fv: FrameworkVersion, base: str, device: str) -> tuple[Platform, ...]:
    """The platforms of one cell: the version's own, else its base's; GPU cells are linux/amd64 only
    (compat.yaml has GPU wheel data for no other platform). In :data:`builder.matrix.platform.PLATFORMS`
    order, linux/amd64 first."""
    asked = fv.platforms or m.bases[base].platforms
    if device == "gpu":
        asked = [p for p in asked if p == DEFAULT]
    return tuple(sorted(asked, key=list(PLATFORMS.values()).index))


def _platform_problem(m: MatrixFile, key: str, fv: FrameworkVersion, entry: VersionEntry, base: str,
                      device: str) -> str | None:
    if device == "gpu" and fv.platforms and any(p != DEFAULT for p in fv.platforms):
        return f"platforms: GPU images are {DEFAULT} only (compat.yaml has no GPU wheels for another platform)"
    python = m.bases[base].python
    missing = [p for p in platforms(m, fv, base, device) if python not in entry.pythons(p)]
    if missing:
        return (f"platforms: {key} {fv.version} has no {', '.join(map(str, missing))} wheels for Python {python} (base {base}) "
                f"in compat.yaml; drop the platform or run `builder compat refresh`")
    return None


def _spec(m: MatrixFile, table: Compat, key: str, fw: Framework, fv: FrameworkVersion, base: str,
          device: str) -> ImageSpec:
    b = m.bases[base]
    entry = table.entry(key, fv.version)
    from_image = device == "gpu" and fv.cuda is not None and fv.cuda.source == "image"
    own = [table.requirement(key, device, fv.version)] + [f"{p}=={v}" for p, v in fv.companions.items()]
    if device == "gpu" and not from_image:
        own += [f"{n}=={v}" for n, v in entry.gpu.wheels.items()]
    pins = [Requirement(r) for r in own]
    if fw.parent is None or from_image:  # a root image carries the runtime layer's packages first
        pins = [Requirement(f"{p}=={v}") for p, v in m.runtime.packages.items()] + [
            r for r in pins if r.name not in m.runtime.packages]
    cuda = (fv.cuda.version if from_image else entry.gpu.cuda) if device == "gpu" else None
    return ImageSpec(
        name=image_name(key, fv.version, base, b.python, device, cuda, fv.name_version),
        framework=key, framework_title=fw.title, version=fv.version, device=device, base=base, python=b.python,
        parent=None, package=table.package(key, device), requirements=tuple(pins), ancestors=(), cuda=cuda,
        cudnn=entry.gpu.cudnn if device == "gpu" and not from_image else None,
        base_image=fv.cuda.image if from_image else b.pull, from_cuda_image=from_image,
        platforms=platforms(m, fv, base, device), driver_min=table.driver_min(cuda) if cuda else None)


def link_parents(fname: str, m: MatrixFile, found: dict[str, tuple[str, ImageSpec]],
                 by_cell: dict[tuple[str, str, str], str]) -> dict[str, ImageSpec]:
    """Each child on its parent framework's image of the same base (a GPU child whose CUDA comes
    from wheels on the parent's CPU image). Raises MatrixError when that image does not exist."""
    errors: list[str] = []
    linked: dict[str, ImageSpec] = {}
    for name, (where, spec) in found.items():
        parent_fw = m.frameworks[spec.framework].parent
        parent = None
        if parent_fw is not None and not spec.from_cuda_image:
            parent = by_cell.get((parent_fw, spec.base, spec.device)) or by_cell.get((parent_fw, spec.base, "cpu"))
            if parent is None:
                errors.append(f"{fname}: {where}: unknown parent: framework {parent_fw!r} has no "
                              f"{spec.device} image on base {spec.base!r}")
                continue
            extra = [p for p in spec.platforms if p not in found[parent][1].platforms]
            if extra:
                errors.append(f"{fname}: {where}.platforms: {', '.join(map(str, extra))}: the parent image {parent} is not "
                              f"built for it (give the parent's version the platform too)")
                continue
        linked[name] = replace(spec, parent=parent)
    if errors:
        raise MatrixError(errors)
    return linked


def order(m: MatrixFile, linked: dict[str, ImageSpec]) -> list[ImageSpec]:
    """The specs parents first, each with its ancestors and its cell digest: the sha256 of the
    spec, its base, the runtime layer (root images) and its parent's digest, so a change anywhere
    up the tree changes the digest."""
    done: dict[str, ImageSpec] = {}
    for n in plan.build_order({n: [s.parent] if s.parent else [] for n, s in linked.items()}):
        spec = linked[n]
        parent = done.get(spec.parent) if spec.parent else None
        ancestors = (parent.ancestors if parent else ()) + (spec.framework,)
        payload = {**asdict(spec), "ancestors": ancestors, "cell_digest": "", "platforms": [p.name for p in spec.platforms],
                   "parent_digest": parent.cell_digest if parent else "",
                   "runtime": m.runtime.model_dump() if parent is None else None,
                   "base": m.bases[spec.base].model_dump()}
        for name in LATER_FIELDS:
            if payload[name] is None:
                del payload[name]
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
        done[n] = replace(spec, ancestors=ancestors, cell_digest=digest)
    return list(done.values())
