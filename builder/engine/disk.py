"""Disk: the space a run needs, checked before anything is built (the local builds a run superseded,
removed after it, are :mod:`builder.engine.superseded`'s).

Measured on this project's 2-core machine (Docker Engine 20.10, classic image store), on a fresh
machine (2026-12-01): a full ``make build-all`` of the 16 images, whose catalog sizes add up to
26.5 GB (each image counted with its parents' layers), grew the file system by 80.5 GB (``df``):
the Engine's data root by 67.2 GB (23.6 GB of images, 40.7 GB of BuildKit cache, the rest its
bookkeeping) and the local registry by 10.8 GB; what is left is file-system allocation beyond the
files' sizes. Per byte of catalog size that is :data:`ENGINE_FACTOR`, :data:`CACHE_FACTOR` (the
data root's remainder and the allocation overhead with it) and :data:`REGISTRY_FACTOR`: about
80.5 GB in all for the full matrix. (An earlier run, on a machine that had run it before, left
23.6, 43 and 9.9 GB.) Those are :data:`CLASSIC`'s factors.

On Engine 26.1.5's containerd store (2026-12-03) a full run holds a cache of about 2.3 bytes per
catalog byte, 58 GB for the matrix: it fits this disk only with ``--prune-cache``, where it grew
the file system by at most 68 GB from nothing (:data:`CONTAINERD`). On Engine 28.5.2's (containerd
2.1; 2026-12-07) a run from nothing held 2.1 bytes of images per catalog byte at its end, against
1.4 on 26.1, and grew the file system by at most 72.1 GB (:data:`CONTAINERD_28`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Callable, Iterable

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from builder.engine import lines
from builder.matrix import ImageSpec, grammar
from builder.matrix.inputs import ConfigError
from builder.matrix.platform import DEFAULT, Platform
from builder.matrix.validation import pydantic_lines

#: Engine image bytes per catalog byte (shared parent layers are stored once): 23.6 / 26.5.
ENGINE_FACTOR = 0.89
#: BuildKit cache bytes per catalog byte (snapshots, uv's cache mount, the build stage), with the
#: data root's bookkeeping and the allocation overhead: (80.5 - 23.6 - 10.8) / 26.5.
CACHE_FACTOR = 1.74
#: Local registry bytes per catalog byte (compressed layers, SBOMs): 10.8 / 26.5.
REGISTRY_FACTOR = 0.41


@dataclass(frozen=True)
class Factors:
    """Bytes per catalog byte (an image's uncompressed size) on one image store: ``engine`` (the
    images the run leaves), ``cache`` (BuildKit's cache of a build, all kept without
    ``--prune-cache``), ``registry`` (the local registry), ``mounts`` (cache mounts: uv's wheels),
    ``peak`` (with ``--prune-cache``: the images and the cache in flight at the run's peak)."""

    engine: float
    cache: float
    registry: float
    mounts: float
    peak: float


#: Engine 20.10's classic store (the module doc; its cache share holds the cache mounts; no run
#: there pruned its cache, so its peak counts every cache).
CLASSIC = Factors(ENGINE_FACTOR, CACHE_FACTOR, REGISTRY_FACTOR, 0.0, ENGINE_FACTOR + CACHE_FACTOR)
#: Engine 26.1.5's containerd store, measured 2026-12-03: a signed ``builder all --prune-cache`` of
#: the 16 images (20 builds whose uncompressed sizes add up to 25.5 GB), the bases and uv's cache
#: mount already there: the data root held 34.6 GB of images and bases at the end, BuildKit's prunes
#: freed 58.3 GB of cache in all, the registry took 10.4 GB, uv's cache mount 20.0 GB, and the file
#: system grew at most 49.7 GB (images, cache in flight, registry and 2.2 GB of new wheels).
CONTAINERD = Factors(engine=1.36, cache=2.29, registry=0.41, mounts=0.78, peak=1.48)
#: Engine 28.5.2's containerd store (containerd 2.1, BuildKit of buildx 0.29's Engine), measured
#: 2026-12-07: ``make build-all`` of the 16 images from nothing (no data root, bases or wheels; 20
#: builds whose uncompressed sizes add up to 25.5 GB), unsigned: the images (bases included) held
#: 53.6 GB at the end, BuildKit's prunes freed 57.8 GB of cache, the registry took 10.6 GB, uv's
#: cache mount 20.0 GB, and the file system grew at most 72.1 GB (images and cache in flight 41.5 GB,
#: the registry and the new wheels).
CONTAINERD_28 = Factors(engine=2.11, cache=2.27, registry=0.42, mounts=0.78, peak=1.63)


def factors_for(containerd_store: bool, engine_version: str) -> Factors:
    """The measured factors of an Engine (its ``GET /version`` ``Version``, ``28.5.2+dfsg4``) and
    image store: :data:`CLASSIC` on the classic store, :data:`CONTAINERD_28` on the containerd
    store of an Engine >= 28, :data:`CONTAINERD` on an older one's (or one whose version does not
    parse)."""
    if not containerd_store:
        return CLASSIC
    found = lines.major_minor(engine_version)
    return CONTAINERD_28 if found is not None and found >= (28, 0) else CONTAINERD

#: Bytes per locked package for an image without a catalog entry: the 20 rows of docs/images.json
#: add up to 26.5 GB for the 1,198 entries of their locks.
BYTES_PER_PACKAGE = 22_000_000
#: Bytes of a root image's base when the catalog has no entry for the image (a debootstrapped
#: Debian 12 or 13 minbase is 110-130 MB).
BASE_SIZE = 130_000_000
#: The largest catalog file read (bytes).
MAX_CATALOG = 16 << 20


class CatalogRow(BaseModel):
    """The fields of one docs/images.json row the estimate and the size gate read (bytes, at most
    :data:`builder.matrix.grammar.MAX_SIZE`), each through the grammar ``builder catalog`` wrote it
    with (:class:`builder.catalog.Row`)."""

    model_config = ConfigDict(extra="ignore")
    name: Annotated[str, BeforeValidator(grammar.image_name)]
    platform: Platform = DEFAULT
    uncompressed_bytes: int | None = Field(default=None, ge=0, le=grammar.MAX_SIZE)
    compressed_bytes: int | None = Field(default=None, ge=0, le=grammar.MAX_SIZE)


class Catalog(BaseModel):
    """docs/images.json as far as the estimate reads it."""

    model_config = ConfigDict(extra="ignore")
    images: list[CatalogRow] = Field(max_length=10_000)


def catalog_rows(path: Path) -> dict[tuple[str, Platform], CatalogRow]:
    """``{(image name, platform): row}`` of a catalog JSON file (docs/images.json); empty when there
    is none. Raises ConfigError (one line) for a file that is too large, not JSON or not of the
    catalog's shape."""
    if not path.is_file():
        return {}
    with path.open("rb") as f:
        raw = f.read(MAX_CATALOG + 1)
    if len(raw) > MAX_CATALOG:
        raise ConfigError([f"{path}: larger than {MAX_CATALOG} bytes; not a catalog written by `builder catalog`"])
    try:
        catalog = Catalog.model_validate_json(raw)
    except ValidationError as exc:
        raise ConfigError(pydantic_lines(str(path), exc, Catalog)[:1]) from None
    return {(r.name, r.platform): r for r in catalog.images}


def catalog_sizes(path: Path) -> dict[tuple[str, Platform], int]:
    """``{(image name, platform): uncompressed size in bytes}`` from a catalog JSON file
    (:func:`catalog_rows`). Raises ConfigError."""
    return {k: r.uncompressed_bytes for k, r in catalog_rows(path).items() if r.uncompressed_bytes}


def image_size(spec: ImageSpec, platform: Platform, sizes: dict[tuple[str, Platform], int],
               packages: Callable[[ImageSpec, Platform], int], base_size: int) -> int:
    """Estimated size in bytes of ``spec``'s build for ``platform``: its catalog entry for that
    platform (else for linux/amd64); without one, its parent's estimate (the base's ``base_size``
    for a root image) plus :data:`BYTES_PER_PACKAGE` per package its lock adds (``packages``)."""
    for key in ((spec.name, platform), (spec.name, DEFAULT)):
        if key in sizes:
            return sizes[key]
    return base_size + BYTES_PER_PACKAGE * packages(spec, platform)


@dataclass(frozen=True)
class Need:
    """Bytes a run needs on one file system, and the folders there that receive them."""

    where: tuple[Path, ...]
    need: int
    free: int

    def line(self) -> str:
        """The refusal: need / have / where."""
        return (f"not enough disk space: this run needs about {self.need / 1e9:.1f} GB on the file system of "
                f"{', '.join(str(p) for p in self.where)}, which has {self.free / 1e9:.1f} GB free; free space "
                f"(`builder prune`, `docker system df`), pass --prune-cache (each image's BuildKit cache goes once it is done) "
                f"or pass --no-space-check")


def _existing(path: Path) -> Path:
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path


def free_space(paths: Iterable[Path | None]) -> dict[int, int]:
    """``{device id: free bytes}`` of the file systems holding ``paths`` (None skipped; a path not
    there yet counts as its nearest existing parent), from ``shutil.disk_usage``."""
    return {_device(path): shutil.disk_usage(_existing(path)).free for path in paths if path is not None}


def _device(path: Path) -> int:
    # The id of the file system holding path (its nearest existing parent when it is not there yet).
    return os.stat(_existing(path)).st_dev


def needs(engine_bytes: int, registry_bytes: int, data_root: Path | None, build_dir: Path) -> list[Need]:
    """The bytes needed per file system: ``engine_bytes`` (images and BuildKit cache) on the Engine's
    ``data_root`` (None for an Engine on another machine: not checked), ``registry_bytes`` (a local
    registry's storage) in ``build_dir``; both added up when they share one file system. Free bytes
    come from ``shutil.disk_usage``."""
    by_device: dict[int, tuple[list[Path], int]] = {}
    for path, need in ((data_root, engine_bytes), (build_dir, registry_bytes)):
        if path is None:
            continue
        folders, total = by_device.get(_device(path), ([], 0))
        by_device[_device(path)] = (folders + [path], total + need)
    return [Need(tuple(folders), total, shutil.disk_usage(_existing(folders[0])).free)
            for folders, total in by_device.values()]


def estimate(specs: Iterable[ImageSpec], sizes: dict[tuple[str, Platform], int], unchanged: set[tuple[str, Platform]],
             packages: Callable[[ImageSpec, Platform], int], base_size: int, pushing_locally: bool,
             prune_cache: bool = False, factors: Factors = CLASSIC, mounts_held: int = 0) -> tuple[int, int]:
    """``(engine bytes, registry bytes)`` a run of ``specs`` needs, by the image store's measured
    ``factors`` (see the module doc). A build in ``unchanged`` (``(name, platform)``,
    :func:`unchanged`) needs no Engine space: BuildKit's cache gives it back whole, or the registry already publishes it (the up-to-date step skips it). The registry
    share counts, for every build, only when ``pushing_locally`` (a local registry under the build
    folder, perhaps new). With ``prune_cache`` (each build's cache goes once it ended) the Engine
    needs the measured peak per byte, or the largest build's image and cache, whichever is more.
    Cache mounts (uv's wheels) count for every build, less the ``mounts_held`` bytes the Engine's
    cache mounts already hold."""
    registry_bytes = 0.0
    built: list[int] = []
    for spec in specs:
        for platform in spec.platforms:
            size = image_size(spec, platform, sizes, packages, base_size)
            registry_bytes += size * factors.registry if pushing_locally else 0  # a new registry needs it all
            if (spec.name, platform) not in unchanged:
                built.append(size)
    whole = factors.engine + factors.cache
    images = max(sum(built) * factors.peak, max(built, default=0) * whole) if prune_cache else sum(built) * whole
    mounts = max(0.0, sum(built) * factors.mounts - mounts_held)
    return int(images + mounts), int(registry_bytes)


def build_needs(specs: Iterable[ImageSpec], sizes: dict[tuple[str, Platform], int], unchanged: set[tuple[str, Platform]],
                packages: Callable[[ImageSpec, Platform], int], base_size: int,
                factors: Factors = CLASSIC) -> dict[tuple[str, Platform], int]:
    """``{(name, platform): bytes}`` each build of ``specs`` is estimated to add to the Engine's data
    root while it runs: its size (:func:`image_size`) times the image, cache and cache-mount
    ``factors`` (a build's new wheels land in uv's cache mount); 0 for a build in ``unchanged``
    (BuildKit's cache gives it back whole; the caller passes only local builds: a published one that is
    built again after all reserves in full). What a run's disk schedule reserves per build
    (:class:`builder.run.disk_budget.DiskBudget`)."""
    whole = factors.engine + factors.cache + factors.mounts
    return {(spec.name, platform): 0 if (spec.name, platform) in unchanged
            else int(image_size(spec, platform, sizes, packages, base_size) * whole)
            for spec in specs for platform in spec.platforms}


def unchanged(specs: Iterable[ImageSpec], held: dict[tuple[str, str], list[dict[str, str]]],
              expected: Callable[[ImageSpec], dict[str, str]]) -> set[tuple[str, Platform]]:
    """The ``(name, platform)`` builds of ``specs`` (parents first) the Engine already holds with the
    inputs of this run: ``held`` maps ``(image title, OCI architecture)`` to the labels of each local
    image of the builder's, and one of them carries every label ``expected(spec)`` gives (cell
    digest, every platform's lock digest, the revision of its build contexts); the parent's build
    for that platform must be unchanged too."""
    out: set[tuple[str, Platform]] = set()
    for spec in specs:
        want = expected(spec)
        for platform in spec.platforms:
            found = held.get((spec.name, platform.arch), [])
            same = any(all(labels.get(k) == v for k, v in want.items()) for labels in found)
            if same and (spec.parent is None or (spec.parent, platform) in out):
                out.add((spec.name, platform))
    return out


def capped(engine_bytes: int, max_growth: int | None) -> int:
    """``engine_bytes`` (:func:`estimate`) of a run whose disk schedule keeps the file system of the
    Engine's data root within ``max_growth`` bytes of growth (builds wait for what finished images
    free, :class:`builder.run.disk_budget.DiskBudget`): at most ``max_growth``. The local registry's
    share is not the schedule's to give back (it never shrinks during a run): it stays whole."""
    return engine_bytes if max_growth is None else min(engine_bytes, max_growth)


def check_largest(build_needs: dict[tuple[str, Platform], int], max_growth: int) -> None:
    """Raise ConfigError with one line when the largest of ``build_needs`` (:func:`build_needs`,
    bytes) is more than ``max_growth`` bytes: that build could not run within the growth even on its
    own. Returns None otherwise."""
    if not build_needs:
        return
    (name, platform), need = max(build_needs.items(), key=lambda item: item[1])
    if need > max_growth:
        raise ConfigError([f"not enough disk growth allowed: the build of {name} ({platform}) alone needs about "
                           f"{need / 1e9:.1f} GB, more than --max-disk-growth {max_growth / 1e9:.1f} GB; "
                           f"raise it or leave it out"])


def check(found: list[Need]) -> None:
    """Raise ConfigError with one line (need / have / where) for the first file system that lacks
    the space; return None when every one has it."""
    for need in found:
        if need.need > need.free:
            raise ConfigError([need.line()])
