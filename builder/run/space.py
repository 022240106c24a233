"""A run's disk: refuse before building a run the disk cannot hold, with ``--prune-cache`` remove
the BuildKit cache of each build once it ended (:class:`builder.run.pipeline.PruneRequests`), when a build needs space remove the local
copies of finished images that the registry holds and no pending child needs (:func:`removable`,
:class:`LocalCopyRemover`), and after the run remove the local builds it superseded (the figures
and rules are :mod:`builder.engine.disk`'s, :mod:`builder.engine.prune`'s and
:mod:`builder.engine.superseded`'s)."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection, ContextManager, Mapping

import docker

from builder import engine
from builder.engine import disk, prune, superseded
from builder.engine.registry import Credentials, Registry, answers, host_of
from builder.generate import lock
from builder.matrix import ImageSpec, Matrix, naming
from builder.matrix.platform import Platform
from builder.run.context import Options, RunContext
from builder.run.disk_budget import DiskBudget, DiskWatch, free_of, growth_floor
from builder.run.report import PUSHED, ImageReport
from builder.run.task_graph import Graph


def _held_labels(client: docker.DockerClient, matrix: Matrix, registry: str) -> dict[tuple[str, str], list[dict[str, str]]]:
    # {(image title, architecture): [labels of each local build of the builder's with them]}, only
    # builds tagged in the repository this run builds into: one pulled from elsewhere has the
    # labels but no BuildKit cache behind it.
    label = f"{matrix.data.project.label_prefix}.cell-digest"
    out: dict[tuple[str, str], list[dict[str, str]]] = {}
    for b in superseded.local_builds(client, None, label):
        title = b.labels.get("org.opencontainers.image.title", "")
        if naming.own_tags(list(b.tags), naming.repository(registry, title)):
            out.setdefault((title, b.arch), []).append(b.labels)
    return out


#: Seconds the preflight reads the registry for before it counts every build in full.
PUBLISHED_DEADLINE = 60.0


def _reader(host: str) -> Registry:
    # The registry client the up-to-date step uses (builder.run.preparation): docker login's or
    # REGISTRY_USERNAME/REGISTRY_PASSWORD's credentials.
    return Registry(host, Credentials.from_env())


def published_counts(opt: Options) -> bool:
    """Whether the preflight counts the builds the registry's ``latest`` names with this run's
    inputs as not built (:func:`check`): only in a stage that publishes (the up-to-date step skips
    them there), for the matrix's own platforms (not ``--platform``, not ``--by-platform``, whose
    jobs read ``latest-<arch>``), unless ``--force``, ``--no-cache`` or ``--keyless`` (whose runs
    build again)."""
    return opt.steps.publish and not (opt.force or opt.no_cache or opt.keyless or opt.by_platform or opt.platforms)


def _published_labels(matrix: Matrix, registry: str, specs: list[ImageSpec],
                      client: Callable[[str], Registry] = _reader,
                      deadline: float = PUBLISHED_DEADLINE) -> dict[tuple[str, str], list[dict[str, str]]]:
    # {(image title, architecture): [labels of each build the registry's first moving tag names]}
    # for ``specs`` in ``registry``: a build published with this run's inputs is up to date, and
    # is not built again. Only manifests and image configurations are read (as the up-to-date step
    # reads them), on a thread given ``deadline`` seconds in all; a registry that does not answer
    # (a local one this run starts later), a missing tag, an answer that is not an image, any error
    # or the deadline give nothing: those builds count in full.
    found: list[dict] = []
    reader = threading.Thread(target=lambda: found.append(_read_published(matrix, registry, specs, client)),
                              name="preflight-registry", daemon=True)
    reader.start()
    reader.join(deadline)
    return found[0] if found else {}


def _read_published(matrix: Matrix, registry: str, specs: list[ImageSpec],
                    client: Callable[[str], Registry]) -> dict[tuple[str, str], list[dict[str, str]]]:
    # _published_labels' reads, one image after another; an image whose reads fail gives nothing.
    moving = matrix.data.tags.moving
    hosts = {host_of(naming.repository(registry, s.name)) for s in specs}
    if not moving or not specs or not all(answers(h) for h in hosts):
        return {}
    out: dict[tuple[str, str], list[dict[str, str]]] = {}
    for spec in specs:
        repository = naming.repository(registry, spec.name)
        try:
            reader = client(host_of(repository))
            found = reader.manifest(repository, moving[0])
            entries = reader.index_entries(found[1]) if found else None
            wanted = [entries[p.name] for p in spec.platforms if p.name in entries] if entries is not None else []
            manifests = [found[1]] if found and entries is None else \
                [m[1] for m in (reader.manifest(repository, d) for d in wanted) if m]
            for manifest in manifests:
                config = reader.config(repository, manifest)
                labels = {k: v for k, v in Registry.labels(config).items() if isinstance(k, str) and isinstance(v, str)}
                arch = config.get("architecture")
                if isinstance(arch, str) and labels.get("org.opencontainers.image.title") == spec.name:
                    out.setdefault((spec.name, arch), []).append(labels)
        except Exception:  # noqa: BLE001 - a registry's answer, whatever it is, only makes the estimate count in full
            continue
    return out


def _expected_labels(matrix: Matrix, images: Path, vcs: Mapping[str, tuple[str, int]]) -> Callable[[ImageSpec], dict[str, str]]:
    # The labels a build of spec made now would carry that say its inputs are the same: the cell
    # digest, every platform's lock digest (as templates/macros.j2 renders them: lock-digest for
    # linux/amd64, lock-digest-<arch> for the others) and the revision of its build contexts.
    prefix = matrix.data.project.label_prefix

    def expected(spec: ImageSpec) -> dict[str, str]:
        want = {f"{prefix}.cell-digest": f"sha256:{spec.cell_digest}", "org.opencontainers.image.revision": vcs[spec.name][0]}
        for platform in matrix.image(spec.name).platforms:
            want[f"{prefix}.lock-digest{platform.suffix}"] = lock.read(images, spec.name, platform).digest
        return want
    return expected


def check(client: docker.DockerClient, matrix: Matrix, opt: Options, registry: str,
          specs: list[ImageSpec], vcs: Mapping[str, tuple[str, int]]) -> dict[tuple[str, Platform], int]:
    """Refuse (ConfigError, one line) a run of ``specs`` into ``registry`` the Engine's data root or
    the build folder cannot hold (:func:`builder.engine.disk.estimate`; images whose local build, tagged in
    that registry's repository, has the same inputs count as unchanged, and, in the whole run's
    estimate only (:func:`published_counts`), so do those whose build the registry's ``latest``
    names with the same inputs: the up-to-date step skips them, and one built again after all (a
    build id covers more than the labels) still reserves its bytes while it builds; ``vcs``: each image's
    ``(revision, epoch)``, :func:`builder.run.preparation.vcs_sources`). Returns the bytes each
    build ``(name, platform)`` is estimated to add (:func:`builder.engine.disk.build_needs`), for
    the run's disk schedule (:func:`budget`)."""
    locks = {(s.name, p): lock.read(opt.images_dir, s.name, p) for s in specs for p in s.platforms}

    def packages(spec: ImageSpec, platform: Platform) -> int:
        parent = locks.get((spec.parent, platform))
        return len(set(locks[spec.name, platform].entries) - set(parent.entries if parent else ()))

    held, expected = _held_labels(client, matrix, registry), _expected_labels(matrix, opt.images_dir, vcs)
    local = set() if opt.no_cache else disk.unchanged(specs, held, expected)
    same = local  # builds the estimate counts as adding nothing
    if published_counts(opt):  # their builds are not built again; a reservation stays whole (build ids cover more)
        published = _published_labels(matrix, registry, specs)  # a superset of local's: it holds every local label
        same = disk.unchanged(specs, {k: held.get(k, []) + published.get(k, []) for k in {*held, *published}}, expected)
    pushing = opt.steps.publish and not opt.registry
    factors = disk.factors_for(engine.containerd_store(client), str(client.version().get("Version", "")))
    mounts = prune.cache_mount_bytes(client)
    sizes = disk.catalog_sizes(opt.catalog)
    engine_bytes, registry_bytes = disk.estimate(specs, sizes, same, packages,
                                                 disk.BASE_SIZE, pushing, opt.prune_cache, factors, mounts)
    per_build = disk.build_needs(specs, sizes, local, packages, disk.BASE_SIZE, factors)
    root = engine.data_root(client)  # one GET /info
    if opt.max_disk_growth is not None and root is not None:
        disk.check_largest(per_build, opt.max_disk_growth)
    disk.check(disk.needs(disk.capped(engine_bytes, opt.max_disk_growth), registry_bytes, root, opt.build_dir))
    return per_build


def budget(client: docker.DockerClient, needs: dict[tuple[str, Platform], int],
           say: Callable[[str], None], max_growth: int | None = None) -> tuple[DiskBudget | None, DiskWatch | None]:
    """The run's disk schedule on the file system of the Engine's data root, where each build
    reserves its ``needs`` (:func:`check`) while it runs (:class:`builder.run.disk_budget.DiskBudget`),
    and the watch of that file system's used bytes (:class:`builder.run.disk_budget.DiskWatch`,
    not started). With ``max_growth`` (bytes) the schedule keeps that file system within that
    growth over its free bytes now (:func:`builder.run.disk_budget.growth_floor`). Both None for an
    Engine whose data root is not on this machine."""
    root = engine.data_root(client)
    if root is None:
        return None, None
    free = free_of(root)
    return DiskBudget(needs, free, say, floor=growth_floor(free(), max_growth)), DiskWatch(root)


def remove_superseded(ctx: RunContext, started: float) -> None:
    """Remove the local builds this run superseded (:func:`builder.engine.superseded.remove_superseded`): only
    images created before the run ``started`` (epoch seconds, the Engine's clock), so a build of
    another run on the same Engine is never taken for an old one."""
    current: dict[str, set[str]] = {}
    for rep in ctx.reports.values():
        ids = {b.image_id for b in rep.platforms if b.image_id}
        if rep.repository and ids:
            current.setdefault(rep.repository, set()).update(ids)
    label = f"{ctx.matrix.data.project.label_prefix}.cell-digest"
    say = lambda line: ctx.events.console.print(line, highlight=False, markup=False)  # noqa: E731
    freed = superseded.remove_superseded(ctx.client, current, label, ctx.options.keep_last,
                                   tuple(ctx.matrix.data.tags.moving), started, say)
    if freed:
        ctx.events.console.print(f"superseded local builds removed: up to {freed / 1e9:.2f} GB", highlight=False)


#: BuildKit cache record types ``--prune-cache`` keeps: cache mounts (uv's wheels, which every
#: image's build shares; https://docs.docker.com/build/cache/optimize/#use-cache-mounts).
KEPT_RECORD_TYPES = frozenset({prune.CACHE_MOUNT})


class CachePruner:
    """``--prune-cache``: once a build ended (:class:`builder.run.pipeline.PruneRequests`), remove the
    BuildKit cache records made since the run started (``before``, the record ids then; None when
    the Engine could not say, and then nothing is removed) but its cache mounts
    (:data:`KEPT_RECORD_TYPES`), which go too when a build waits for space. Children never need their parent's cache: they build FROM the
    parent image. A prune runs inside ``no_builds()`` (:meth:`builder.run.context.Events.no_builds`:
    while no build runs), one at a time; ``say`` gets one line per prune that freed bytes."""

    def __init__(self, client: docker.DockerClient, before: set[str] | None, say: Callable[[str], None],
                 no_builds: Callable[[], ContextManager[None]] = contextlib.nullcontext):
        self.client, self.before, self.say, self.no_builds = client, before, say, no_builds
        self._lock = threading.Lock()

    def after_image(self, name: str, mounts: bool = False) -> int:
        """Prune after image ``name``; returns the bytes BuildKit reports reclaimed. With ``mounts``
        (a build waits for space: :meth:`builder.run.disk_budget.DiskBudget.waiting`) the cache
        mounts the run made go too: uv downloads a wheel again rather than a build wait on it."""
        if self.before is None:
            return 0
        kept = frozenset() if mounts else KEPT_RECORD_TYPES
        with self._lock, self.no_builds():
            records = prune.cache_records(self.client) or {}
            made = {i for i, kind in records.items() if i not in self.before and kind not in kept}
            freed, _ = prune.remove_records(self.client, made)
        if freed:
            self.say(f"BuildKit cache removed after {name}: {freed / 1e9:.2f} GB"
                     + (" (uv's cache mount too: a build waits for space)" if mounts else ""))
        return freed


@dataclass(frozen=True)
class LocalCopy:
    """A finished image's local copy a run may remove: the image's ``name``, its ``repository`` (the
    builder's: the only one whose tags are removed) and the ``image_ids`` (``sha256:<hex>``) of the
    platform builds this run recorded (:attr:`builder.run.report.PlatformBuild.image_id`)."""

    name: str
    repository: str
    image_ids: tuple[str, ...]


def removable(name: str, graph: Graph, closed: Collection[str], reports: Mapping[str, ImageReport],
              pushing: bool) -> LocalCopy | None:
    """The local copy of image ``name`` once the registry holds it and no pending child needs it,
    else None. The registry holds it when the run pushes (``pushing``) and the image's status says
    every platform build is there (published, unchanged or up to date:
    :data:`builder.run.report.PUSHED`; never a failed, skipped or interrupted image); no pending
    child needs it when the image and each of its children in ``graph`` (they build FROM it) are in
    ``closed`` (the images with nothing left to run). Whether a container uses it is the removal's
    to check (:meth:`LocalCopyRemover.remove`)."""
    rep = reports[name]
    ids = tuple(dict.fromkeys(b.image_id for b in rep.platforms if b.image_id))
    if not (pushing and rep.status in PUSHED and rep.repository and ids and name in closed
            and all(child in closed for child in graph.children(name))):
        return None
    return LocalCopy(name, rep.repository, ids)


class LocalCopyRemover:
    """Removes the local copies of finished images (:func:`removable`) from the Engine of
    ``client``; ``say`` gets one line per image removed (and one per tag the Engine refused)."""

    def __init__(self, client: docker.DockerClient, say: Callable[[str], None]):
        self.client, self.say = client, say

    def remove(self, copy: LocalCopy) -> list[str]:
        """Untag each of ``copy``'s images in its repository (:func:`builder.engine.superseded.untag`;
        with its last tag the Engine removes the image), but one a container uses (``GET
        /containers/json?all=1``, as :func:`builder.engine.superseded.remove_superseded`) or the
        Engine does not hold (an up-to-date image no child pulled). Returns the tags removed; the
        line says the sizes of the images left without a tag (the Engine's ``Size``, bytes: layers
        another image shares stay). Raises docker.errors.DockerException, requests.RequestException."""
        used = superseded.images_in_use(self.client)
        removed: list[str] = []
        freed = 0
        for image_id in copy.image_ids:
            if image_id in used:
                continue
            try:
                found = self.client.api.inspect_image(image_id)
            except docker.errors.NotFound:
                continue
            tags = found.get("RepoTags") or []
            own = superseded.untag(self.client, tags, copy.repository, self.say)
            removed += own
            freed += int(found.get("Size") or 0) if own and len(own) == len(tags) else 0
        if removed:
            self.say(f"local copies of {copy.name} removed: up to {freed / 1e9:.2f} GB (the registry holds them)")
        return removed
