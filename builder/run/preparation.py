"""What a run prepares once, before any image starts: the images it runs (:func:`specs`), a report
for each (:func:`report`), the registry it pushes to (:func:`registry`), its signer (:func:`signer`)
and the one frozen :class:`builder.run.context.RunContext` the steps read (:func:`context`); and what
``--dry-run`` says instead (:func:`dry_run`)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path
from typing import Callable

import docker

from builder import engine
from builder.engine import bases, disk, plugins
from builder.engine.registry import Credentials, Registry, host_of
from builder.engine.sources import Sources, wheelhouse_image
from builder.generate import base_resolver
from builder.matrix import ImageSpec, Matrix, naming, plan
from builder.run import buildx, policy
from builder.run.context import Clients, Events, Options, RunContext
from builder.run.report import ImageReport
from builder.run.steps import up_to_date
from builder.sign import Signer


def specs(matrix: Matrix, opt: Options) -> list[ImageSpec]:
    """The run's images, a parent before its children: those ``opt.select`` selects (with their
    ancestors), each narrowed to ``opt.platforms`` when set (an image left with none is left out)."""
    found = plan.select(matrix, list(opt.select))
    if opt.platforms:
        narrowed = [replace(s, platforms=tuple(p for p in s.platforms if p in opt.platforms)) for s in found]
        found = [s for s in narrowed if s.platforms]
    return found


def report(matrix: Matrix, opt: Options, spec: ImageSpec) -> ImageReport:
    """A planned report of ``spec``, with the publish policy its platforms give
    (:func:`builder.run.policy.choose`)."""
    publish = policy.choose(spec.platforms, matrix.image(spec.name).platforms, opt.by_platform)
    return ImageReport(name=spec.name, parent=spec.parent, publish=publish)


def dry_run(matrix: Matrix, opt: Options, specs: list[ImageSpec], reports: dict[str, ImageReport],
            say: Callable[[str, str], None]) -> None:
    """Say, per image, what the run would do (no RunContext is made: nothing is asked of the Engine)."""
    policies = policy.table(matrix.data.tags)
    for s in specs:
        say(s.name, f"would {opt.stage} (parent: {s.parent or 'base ' + s.base}); "
                    + _dry_lookup(matrix, opt, s, policies[reports[s.name].publish]))


def _dry_lookup(matrix: Matrix, opt: Options, spec: ImageSpec, publish_as: policy.Manifest) -> str:
    # What --dry-run says of the build id look-up (it computes no build id: that needs the bases).
    if not opt.steps.build:
        return "pushes the image a test run left tagged latest"
    why = up_to_date.always_built(opt, spec, matrix.image(spec.name).platforms, publish_as)
    if why:
        return f"built whatever the registry holds: {why}"
    where = opt.registry or engine.LOCAL_REGISTRY
    return f"up-to-date, and not built, when {where}'s moving tags for it name builds with its build ids"


def registry(opt: Options) -> str:
    """The registry images are pushed to: ``--registry``, else the local one (started when the
    stage publishes). Raises EngineError when the local registry cannot be started."""
    if opt.registry:
        return opt.registry
    if opt.steps.publish:
        return engine.ensure_registry(opt.build_dir)
    return engine.LOCAL_REGISTRY


def vcs_sources(matrix: Matrix, opt: Options, specs: list[ImageSpec]) -> dict[str, tuple[str, int]]:
    """``{name: (revision, epoch)}`` of each of ``specs``: :func:`builder.run.buildx.vcs_source` of
    the build contexts of its lineage under ``opt.images_dir``, read once per run (the build id,
    the build's arguments, the provenance and the disk preflight all use it)."""
    return {s.name: buildx.vcs_source([opt.images_dir / a for a in matrix.lineage(s.name)]) for s in specs}


def signer(build_dir: Path, key: str, keyless: bool, client: docker.DockerClient | None = None) -> Signer | None:
    """The one place a :class:`builder.sign.Signer` is made (:meth:`builder.sign.Signer.make`), for
    a run that publishes and for ``builder merge``: with ``key`` or ``keyless``, else None. The
    provenance's tools are buildx's version and, with ``client``, the Engine's. Raises SignError."""
    if not (key or keyless):
        return None
    engine = {"docker-engine": client.version().get("Version", "unknown")} if client is not None else {}
    return Signer.make(build_dir, key, keyless, {**engine, "buildx": plugins.plugin_version("buildx") or "unknown"})


def context(matrix: Matrix, opt: Options, specs: list[ImageSpec], reports: dict[str, ImageReport],
            events: Events, clients: Clients, registry: str, vcs: dict[str, tuple[str, int]]) -> RunContext:
    """The registry, buildx, compose, package sources, wheelhouse image and bases the run needs, as
    one frozen context; sets each report's repository. Raises SignError (first: a key that cannot
    be used stops the run before anything runs), EngineError."""
    client = clients.get()
    run_signer = signer(opt.build_dir, opt.signing_key, opt.keyless, client) if opt.steps.publish else None
    for s in specs:
        reports[s.name].repository = naming.repository(registry, s.name)
    if opt.steps.test:
        plugins.ensure_compose(opt.build_dir)  # the smoke tests' scoring containers
    build_platform, sources = engine.native_platform(client), Sources.from_env()
    wheelhouse, base_refs, containerd_store = "", {}, engine.containerd_store(client)
    if opt.steps.build:
        if matrix.data.compression != "gzip" and not containerd_store:
            raise engine.EngineError(f"compression: {matrix.data.compression} (matrix.yaml) needs the containerd image store: "
                                     "the classic store pushes every layer gzip-compressed")
        if opt.cache_registry and not containerd_store:
            raise engine.EngineError("--cache-registry needs the containerd image store: BuildKit's docker driver "
                                     "exports no cache on the classic store (https://docs.docker.com/build/cache/backends/)")
        plugins.ensure_buildx(opt.build_dir)
        wheelhouse = wheelhouse_image(client, sources.wheelhouse)
        base_refs = bases.for_roots(client, matrix.data.bases, [s for s in specs if s.parent is None],
                                    opt.base_source, opt.build_dir / "bases", events.say, build_platform,
                                    base_resolver.pins_of(Path(matrix.path).resolve().parent, opt.base_source))
    return RunContext(matrix=matrix, options=opt, registry=registry,
                      registry_client=Registry(host_of(registry), Credentials.from_env()),
                      run_id=uuid.uuid4().hex[:12], build_platform=build_platform,
                      specs={s.name: s for s in specs}, reports=reports, events=events,
                      clients=clients, sources=sources, wheelhouse=wheelhouse, base_refs=base_refs,
                      containerd_store=containerd_store, signer=run_signer, vcs=vcs,
                      size_baseline={k: (r.uncompressed_bytes, r.compressed_bytes)
                                     for k, r in disk.catalog_rows(opt.catalog).items()})
