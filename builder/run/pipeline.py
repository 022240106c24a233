"""The pipeline: bases -> build id (up to date? then nothing more) -> build -> tag -> smoke test +
SBOM -> latest -> push -> report.

Images run concurrently (``Options.jobs`` at a time) as soon as their parent allows: a child starts
building once its parent passed its smoke test (once it was built, for ``builder build``), so a
parent's push overlaps its children's builds. A failure is isolated: an image that fails to build or
test is marked failed, never gets ``latest`` and is never pushed; its descendants are skipped; every
other image goes on. The steps (:mod:`builder.run.steps`) do the work; this module prepares the
:class:`builder.run.context.RunContext` once, sequences the steps and writes ``build/report.json``.
"""

from __future__ import annotations

import queue
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from builder import engine, files
from builder.engine import bases, children, disk, plugins, prune, superseded
from builder.engine.registry import Credentials, Registry, host_of
from builder.engine.sources import Sources, wheelhouse_image
from builder.matrix import ImageSpec, Matrix, naming, plan
from builder.run import build_id, policy, report, space
from builder.run.console import summary, wide_console
from builder.run.context import Clients, Events, Options, RunContext, Stage
from builder.run.report import ImageReport, Status
from builder.run.steps import StepFailed, current, size
from builder.run.steps.build import build_image
from builder.run.steps.push import push, tested_image
from builder.run.steps.tag import promote, tag_builds
from builder.run.steps.test import make_sbom, smoke_test
from builder.sign import Signer

__all__ = ["Options", "Pipeline", "ImageReport", "Stage", "wide_console"]


class Pipeline:
    """Runs the stages of :class:`Options` over a matrix on a real Engine (see module doc)."""

    def __init__(self, matrix: Matrix, options: Options, console: Console | None = None):
        self.matrix, self.opt = matrix, options
        console = console or wide_console()
        # A live line per image in a terminal; CI logs get the event lines only.
        progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                            console=console, disable=not console.is_terminal)
        self.events = Events(console, progress, options.test_jobs)
        self.clients = Clients(options.build_dir)
        self.reports: dict[str, ImageReport] = {}
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue()
        self._pruner: space.CachePruner | None = None

    def _specs(self) -> list[ImageSpec]:
        specs = plan.select(self.matrix, list(self.opt.select))
        if self.opt.platforms:
            narrowed = [replace(s, platforms=tuple(p for p in s.platforms if p in self.opt.platforms)) for s in specs]
            specs = [s for s in narrowed if s.platforms]
        return specs

    def _report(self, spec: ImageSpec) -> ImageReport:
        publish = policy.choose(spec.platforms, self.matrix.image(spec.name).platforms, self.opt.by_platform)
        return ImageReport(name=spec.name, parent=spec.parent, publish=publish)

    def run(self) -> list[ImageReport]:
        """Run and return one report per selected image; also writes ``<build dir>/report.json``."""
        specs = self._specs()
        self.reports = {s.name: self._report(s) for s in specs}
        if self.opt.dry_run:
            for s in specs:
                self.events.say(s.name, f"would {self.opt.stage} (parent: {s.parent or 'base ' + s.base}); "
                                        + self._dry_lookup(s))
            return list(self.reports.values())
        client = self.clients.get()
        if self.opt.space_check and self.opt.stage != "publish":  # before anything is started or written
            space.check(client, self.matrix, self.opt, self.opt.registry or engine.LOCAL_REGISTRY, specs)
        files.claim_folder(self.opt.build_dir)
        started, cache_before = superseded.engine_time(client), prune.cache_ids(client)
        if self.opt.prune_cache:
            self._pruner = space.CachePruner(client, cache_before, self._plain, self.events.no_builds)
        self.events.track([s.name for s in specs])
        try:
            ctx = self._context(specs, self._registry())
            with self.events.progress:
                self._schedule(ctx, specs)
        except KeyboardInterrupt:
            self._interrupted()
            raise
        finally:  # the BuildKit cache this run made, for `builder prune` (never raises)
            prune.record_cache(cache_before, prune.cache_ids(client))
        self.write_report()
        if self.opt.stage != "publish":
            space.remove_superseded(ctx, started)
        return list(self.reports.values())

    def _dry_lookup(self, spec: ImageSpec) -> str:
        # What --dry-run says of the build id look-up (it computes no build id: that needs the bases).
        if self.opt.stage == "publish":
            return "pushes the image a test run left tagged latest"
        why = current.always_built(self.opt, spec, self.matrix.image(spec.name).platforms,
                                   self.reports[spec.name].publish)
        if why:
            return f"built whatever the registry holds: {why}"
        where = self.opt.registry or engine.LOCAL_REGISTRY
        return f"up-to-date, and not built, when {where}'s moving tags for it name builds with its build ids"

    def _registry(self) -> str:
        # The registry images are pushed to: --registry, else the local one (started when pushing).
        if self.opt.registry:
            return self.opt.registry
        if self.opt.stage in ("publish", "all"):
            return engine.ensure_registry(self.opt.build_dir)
        return engine.LOCAL_REGISTRY

    def _context(self, specs: list[ImageSpec], registry: str) -> RunContext:
        """The registry, buildx, compose, package sources, wheelhouse image and bases the run needs,
        as one frozen context."""
        client, opt = self.clients.get(), self.opt
        signer = self._signer(client)  # first: a key that cannot be used stops the run before anything runs
        for s in specs:
            self.reports[s.name].repository = naming.repository(registry, s.name)
        if opt.stage in ("test", "all"):
            plugins.ensure_compose(opt.build_dir)  # the smoke tests' scoring containers
        build_platform, sources = engine.native_platform(client), Sources.from_env()
        wheelhouse, base_refs, containerd_store = "", {}, engine.containerd_store(client)
        if opt.stage != "publish":
            if opt.cache_registry and not containerd_store:
                raise engine.EngineError("--cache-registry needs the containerd image store: BuildKit's docker driver "
                                         "exports no cache on the classic store (https://docs.docker.com/build/cache/backends/)")
            plugins.ensure_buildx(opt.build_dir)
            wheelhouse = wheelhouse_image(client, sources.wheelhouse)
            base_refs = bases.for_roots(client, self.matrix.data.bases, [s for s in specs if s.parent is None],
                                        opt.base_source, opt.build_dir / "bases", self.events.say, build_platform)
        return RunContext(matrix=self.matrix, options=opt, registry=registry,
                          registry_client=Registry(host_of(registry), Credentials.from_env()),
                          run_id=uuid.uuid4().hex[:12], build_platform=build_platform,
                          specs={s.name: s for s in specs}, reports=self.reports, events=self.events,
                          clients=self.clients, sources=sources, wheelhouse=wheelhouse, base_refs=base_refs,
                          containerd_store=containerd_store, signer=signer,
                          size_baseline={k: (r.uncompressed_bytes, r.compressed_bytes)
                                         for k, r in disk.catalog_rows(opt.catalog).items()})

    def _signer(self, client) -> Signer | None:
        """The run's signer (:meth:`builder.sign.Signer.make`) when it publishes with a key or
        keyless. Raises SignError."""
        opt = self.opt
        if opt.stage not in ("publish", "all") or not (opt.signing_key or opt.keyless):
            return None
        return Signer.make(opt.build_dir, opt.signing_key, opt.keyless,
                           {"docker-engine": client.version().get("Version", "unknown"),
                            "buildx": plugins.plugin_version("buildx") or "unknown"})

    def _schedule(self, ctx: RunContext, specs: list[ImageSpec]) -> None:
        # Submit an image when its parent is ready for children; skip it when its parent failed.
        kids: dict[str | None, list[ImageSpec]] = {}
        for s in specs:
            kids.setdefault(s.parent, []).append(s)
        open_images = len(specs)
        pool = ThreadPoolExecutor(max_workers=max(1, self.opt.jobs), thread_name_prefix="image")
        try:
            for s in kids.get(None, []):
                pool.submit(self._image, ctx, s)
            while open_images:
                try:
                    event, name = self._queue.get(timeout=0.5)
                except queue.Empty:
                    continue
                open_images -= self._on_event(ctx, pool, kids, event, name)
        except KeyboardInterrupt:
            # Stop the children (buildx cancels, pytest removes its containers), start nothing new,
            # let the running steps see the stop, then record what happened.
            children.stop_all()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)

    def _on_event(self, ctx: RunContext, pool: ThreadPoolExecutor, kids: dict, event: str, name: str) -> int:
        # One worker event: "done" closes an image; "ready" starts its children, or skips them
        # when it failed or has no build. Returns how many images it closed.
        if event == "done":
            self.events.progress.update(self.events.tasks[name], completed=1)
            return 1
        rep = self.reports[name]
        if rep.failed or not rep.platforms or any(b.image_id is None for b in rep.platforms):
            return sum(self._skip(child, f"parent {name} {rep.status}", kids) for child in kids.get(name, []))
        for s in kids.get(name, []):
            pool.submit(self._image, ctx, s)
        return 0

    def _interrupted(self) -> None:
        done = {Status.PUBLISHED, Status.UNCHANGED, Status.UP_TO_DATE, {"build": Status.BUILT, "test": Status.TESTED}.get(self.opt.stage)}
        for rep in self.reports.values():
            if not (rep.failed or rep.status in done):
                rep.move(Status.INTERRUPTED, rep.error or "the run was interrupted")
        self.write_report()

    def _skip(self, spec: ImageSpec, why: str, kids: dict) -> int:
        """Mark ``spec`` and its descendants skipped; return how many images that was."""
        self.reports[spec.name].move(Status.SKIPPED, why)
        self.events.say(spec.name, f"[yellow]skipped[/yellow]: {escape(why)}")
        self.events.progress.update(self.events.tasks[spec.name], completed=1)
        return 1 + sum(self._skip(child, f"parent {spec.name} skipped", kids) for child in kids.get(spec.name, []))

    def _image(self, ctx: RunContext, spec: ImageSpec) -> None:
        """One image's steps, in a worker thread; tells the scheduler when children may start."""
        rep, released = self.reports[spec.name], []

        def ready() -> None:  # once: the scheduler starts (or skips) the children on it
            if not released:
                released.append(True)
                self._queue.put(("ready", spec.name))

        try:
            _steps(ctx, spec, rep, ready)
        except children.Interrupted:
            rep.move(Status.INTERRUPTED, "the run was interrupted")
        except size.SizeGateFailed as exc:
            rep.move(Status.SIZE_GATE, str(exc))
            self.events.say(spec.name, f"[red]{rep.status}[/red]: {escape(rep.error)}")
        except Exception as exc:  # isolate: record, go on with the other images
            rep.fail(str(exc) if isinstance(exc, StepFailed) else f"{type(exc).__name__}: {exc}")
            self.events.say(spec.name, f"[red]{rep.status}[/red]: {escape(rep.error)}")
        finally:
            ready()
            self._prune_cache(spec.name)
            self._queue.put(("done", spec.name))

    def _plain(self, line: str) -> None:
        self.events.console.print(line, highlight=False, markup=False)

    def _prune_cache(self, name: str) -> None:
        # --prune-cache after an image (housekeeping: a failure is one line, never the image's outcome).
        if self._pruner is None:
            return
        try:
            self._pruner.after_image(name)
        except Exception as exc:  # noqa: BLE001 - the Engine's answer to a prune never fails an image
            self._plain(f"BuildKit cache not pruned after {name}: {type(exc).__name__}: {exc}")

    def write_report(self) -> Path:
        """Write ``<build dir>/report.json`` (:class:`builder.run.report.RunReport`) and return its path."""
        return report.write(self.opt.build_dir / "report.json", self.opt.stage, list(self.reports.values()),
                            jobs=self.opt.jobs, peak_parallel_builds=self.events.peak_parallel_builds)

    def summary(self):
        """A rich table with one row per image."""
        return summary(self.opt.stage, list(self.reports.values()))


def _steps(ctx: RunContext, spec: ImageSpec, rep: ImageReport, ready) -> None:
    # The steps of ``ctx.options.stage`` for one image; ``ready()`` lets its children start.
    stage = ctx.options.stage
    if stage == "publish":
        if tested_image(ctx, spec, rep):
            ready()
            push(ctx, spec, rep)
        return
    for platform, inputs in current.inputs_of(ctx, spec).items():
        rep.build(platform).build_id = build_id.compute(inputs)
    if current.up_to_date(ctx, spec, rep):
        if stage != "all":  # builder build|test: the images they leave are local
            current.make_local(ctx, rep, list(spec.platforms), moving=stage == "test")
        return
    current.parent_images(ctx, spec)
    builts = {p: build_image(ctx, spec, rep, p) for p in spec.platforms}
    tag_builds(ctx, spec, rep, builts)
    if stage == "build":
        return
    size.gate(ctx, rep, ctx.size_baseline)
    for platform in spec.platforms:  # latest only when every platform passed
        smoke_test(ctx, spec, rep, platform)
        make_sbom(ctx, spec, rep, platform)
    promote(ctx, spec, rep)
    ready()
    if stage == "all":
        push(ctx, spec, rep)
