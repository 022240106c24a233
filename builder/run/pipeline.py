"""The pipeline: bases -> build id (up to date? then nothing more) -> per platform: build -> size
gate -> smoke test; then tags -> SBOMs -> latest -> push -> report.

Each image is three kinds of tasks, run concurrently (``Options.jobs`` at a time) as soon as what
they need passed (:meth:`Pipeline._advance`): ``prepare`` (its build ids, up to date?), one lane per
platform (build, size gate, smoke test) and ``finish`` (own tags, SBOMs, ``latest``, push). The
schedule is per platform: a child's build for one platform starts when its parent's build for that
platform (and for the build platform, where the child's build stage runs) passed its smoke test (was
built, for ``builder build``), so a child's linux/amd64 build never waits for its parent's arm64
build under QEMU. A child gets ``latest`` and is pushed only after its parent was tagged and tested
on every platform. A failure is isolated: an image that fails to build or test is marked failed,
never gets ``latest`` and is never pushed; its descendants start nothing more and are skipped; every
other image goes on. The steps (:mod:`builder.run.steps`) do the work; this module prepares the
:class:`builder.run.context.RunContext` once, sequences the steps and writes ``build/report.json``.
"""

from __future__ import annotations

import queue
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from builder import engine, files
from builder.engine import bases, children, disk, plugins, prune, superseded
from builder.engine.registry import Credentials, Registry, host_of
from builder.engine.sources import Sources, wheelhouse_image
from builder.generate import base_locking
from builder.matrix import ImageSpec, Matrix, naming, plan
from builder.run import build_id, policy, report, space
from builder.run.console import summary, wide_console
from builder.run.context import Clients, Events, Options, RunContext, Stage
from builder.run.report import ImageReport, Status
from builder.run.steps import Built, StepFailed, current, size
from builder.run.steps.build import build_image
from builder.run.steps.push import push, tested_image
from builder.run.steps.tag import drop_run_tags, promote, rebase, record_build, tag_builds
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
        self._queue: queue.Queue[tuple[str, str, str | bool]] = queue.Queue()
        self._pruner: space.CachePruner | None = None
        self._tracks: dict[str, _Track] = {}
        self._open = 0
        self._build_platform = ""
        self._failing = threading.Lock()

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
            policies = policy.table(self.matrix.data.tags)  # no RunContext is made
            for s in specs:
                self.events.say(s.name, f"would {self.opt.stage} (parent: {s.parent or 'base ' + s.base}); "
                                        + self._dry_lookup(s, policies[self.reports[s.name].publish]))
            return list(self.reports.values())
        client = self.clients.get()
        if self.opt.space_check and self.opt.steps.build:  # before anything is started or written
            space.check(client, self.matrix, self.opt, self.opt.registry or engine.LOCAL_REGISTRY, specs)
        files.claim_folder(self.opt.build_dir)
        started, cache_before = superseded.engine_time(client), prune.cache_ids(client)
        if self.opt.prune_cache:
            self._pruner = space.CachePruner(client, cache_before, self._plain, self.events.no_builds)
        self.events.track([s.name for s in specs])
        ctx = None
        try:
            ctx = self._context(specs, self._registry())
            with self.events.progress:
                self._schedule(ctx, specs)
        except KeyboardInterrupt:
            self._drop_run_tags(ctx)
            self._interrupted()
            raise
        finally:
            prune.record_cache(cache_before, prune.cache_ids(client))  # for `builder prune` (never raises)
        self._drop_run_tags(ctx)
        self.write_report()
        if self.opt.steps.build:
            space.remove_superseded(ctx, started)
        return list(self.reports.values())

    def _drop_run_tags(self, ctx: RunContext | None) -> None:
        # Once no task runs: no build of this run names its run tags any more.
        if ctx is not None and self.opt.steps.build:
            drop_run_tags(ctx)

    def _dry_lookup(self, spec: ImageSpec, publish_as: policy.Manifest) -> str:
        # What --dry-run says of the build id look-up (it computes no build id: that needs the bases).
        if not self.opt.steps.build:
            return "pushes the image a test run left tagged latest"
        why = current.always_built(self.opt, spec, self.matrix.image(spec.name).platforms, publish_as)
        if why:
            return f"built whatever the registry holds: {why}"
        where = self.opt.registry or engine.LOCAL_REGISTRY
        return f"up-to-date, and not built, when {where}'s moving tags for it name builds with its build ids"

    def _registry(self) -> str:
        # The registry images are pushed to: --registry, else the local one (started when pushing).
        if self.opt.registry:
            return self.opt.registry
        if self.opt.steps.publish:
            return engine.ensure_registry(self.opt.build_dir)
        return engine.LOCAL_REGISTRY

    def _context(self, specs: list[ImageSpec], registry: str) -> RunContext:
        """The registry, buildx, compose, package sources, wheelhouse image and bases the run needs,
        as one frozen context."""
        client, opt = self.clients.get(), self.opt
        signer = self._signer(client)  # first: a key that cannot be used stops the run before anything runs
        for s in specs:
            self.reports[s.name].repository = naming.repository(registry, s.name)
        if opt.steps.test:
            plugins.ensure_compose(opt.build_dir)  # the smoke tests' scoring containers
        build_platform, sources = engine.native_platform(client), Sources.from_env()
        wheelhouse, base_refs, containerd_store = "", {}, engine.containerd_store(client)
        if opt.steps.build:
            if opt.cache_registry and not containerd_store:
                raise engine.EngineError("--cache-registry needs the containerd image store: BuildKit's docker driver "
                                         "exports no cache on the classic store (https://docs.docker.com/build/cache/backends/)")
            plugins.ensure_buildx(opt.build_dir)
            wheelhouse = wheelhouse_image(client, sources.wheelhouse)
            base_refs = bases.for_roots(client, self.matrix.data.bases, [s for s in specs if s.parent is None],
                                        opt.base_source, opt.build_dir / "bases", self.events.say, build_platform,
                                        base_locking.pins_of(Path(self.matrix.path).resolve().parent, opt.base_source))
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
        if not opt.steps.publish or not (opt.signing_key or opt.keyless):
            return None
        return Signer.make(opt.build_dir, opt.signing_key, opt.keyless,
                           {"docker-engine": client.version().get("Version", "unknown"),
                            "buildx": plugins.plugin_version("buildx") or "unknown"})

    def _schedule(self, ctx: RunContext, specs: list[ImageSpec]) -> None:
        # Submit each task of an image once what it needs passed (_advance); workers report on the queue.
        self._tracks = {s.name: _Track(s) for s in specs}
        self._open, self._build_platform = len(specs), ctx.build_platform
        pool = ThreadPoolExecutor(max_workers=max(1, self.opt.jobs), thread_name_prefix="image")
        # Lanes of another platform than the machine's (builds and smoke tests under QEMU) run on a
        # pool of their own, so they neither take the native lanes' workers nor more cores than this.
        self._emulated = ThreadPoolExecutor(max_workers=max(1, self.opt.emulated_jobs), thread_name_prefix="emulated")
        try:
            self._advance(ctx, pool)
            while self._open:
                try:
                    event, name, detail = self._queue.get(timeout=0.5)
                except queue.Empty:
                    continue
                self._on_event(event, name, detail)
                self._advance(ctx, pool)
        except BaseException:
            # Ctrl-C (or a scheduler error): stop the children (buildx cancels, pytest removes its
            # containers), start nothing new, let the running steps see the stop, then record what
            # happened.
            children.stop_all()
            for p in (pool, self._emulated):
                p.shutdown(wait=True, cancel_futures=True)
            raise
        for p in (pool, self._emulated):
            p.shutdown(wait=True)

    def _on_event(self, event: str, name: str, detail: str | bool) -> None:
        # One worker's report: "prepared" (detail: whether it needs lanes), "passed" (detail: the
        # platform), "released" (its children may finish), "ended" (a task of it ended).
        t = self._tracks[name]
        if event == "ended":
            t.running -= 1
        elif event == "failed":
            t.failed = True
        elif event == "passed":
            t.passed.add(str(detail))
        elif event == "released":
            t.released = True
        elif event == "prepared":
            t.prepared = True
            if not detail:  # up to date, or `builder publish`: no lane to run
                t.passed = set(t.spec.platforms)
            if self.reports[name].status == Status.UP_TO_DATE:
                t.released = True
                t.started.add("finish")

    def _advance(self, ctx: RunContext, pool: ThreadPoolExecutor) -> None:
        """Start every task whose needs passed, close every image that has nothing left to run. An
        image's ``prepare`` (build ids, up to date?) waits for its parent's; its lane of a platform
        (build, size gate, smoke test) waits for its parent's lanes of that platform and of the build
        platform (the child's build stage runs FROM it); its ``finish`` (tags, SBOMs, ``latest``,
        push) waits for every lane of its own and for its parent's release (the parent was tagged and
        tested). An image whose parent failed before its release starts nothing more and is skipped
        once its running tasks ended."""
        for name, t in self._tracks.items():  # build order: a parent before its children
            if t.closed:
                continue
            spec, rep = t.spec, self.reports[name]
            parent = self._tracks.get(spec.parent) if spec.parent else None
            lost = self._lost(spec)
            if t.failed or rep.failed or (lost and "finish" not in t.started):
                if t.running == 0:
                    self._close(name, pool, None if t.failed or rep.failed else
                                f"parent {spec.parent} {self.reports[spec.parent].status}")
                continue
            if not t.prepared:
                if "prepare" not in t.started and (parent is None or parent.prepared):
                    self._start(ctx, pool, t, "prepare")
                continue
            for platform in spec.platforms:
                if platform not in t.started and platform not in t.passed and self._lane_ready(parent, platform):
                    self._start(ctx, pool, t, platform)
            if ("finish" not in t.started and t.passed >= set(spec.platforms)
                    and (parent is None or parent.released)):
                self._start(ctx, pool, t, "finish")
            if "finish" in t.started and t.running == 0:
                self._close(name, pool)

    def _lost(self, spec: ImageSpec) -> bool:
        """True when an ancestor of ``spec`` failed (or was skipped) before its release: ``spec``
        starts nothing more. Read by the scheduler and, before a task starts, by its worker."""
        name = spec.parent
        while name is not None and name in self._tracks:
            t = self._tracks[name]
            if (t.failed or self.reports[name].failed) and not t.released:
                return True
            name = t.spec.parent
        return False

    def _lane_ready(self, parent: _Track | None, platform: str) -> bool:
        # A child's build of ``platform`` needs its parent's of that platform and of the build platform.
        if parent is None:
            return True
        need = {platform, self._build_platform} & set(parent.spec.platforms)
        return need <= parent.passed

    def _start(self, ctx: RunContext, pool: ThreadPoolExecutor, t: _Track, task: str) -> None:
        t.started.add(task)
        t.running += 1
        emulated = task not in ("prepare", "finish", self._build_platform)
        (self._emulated if emulated else pool).submit(self._task, ctx, t.spec, task)

    def _close(self, name: str, pool: ThreadPoolExecutor, skipped: str | None = None) -> None:
        # The image has nothing left to run: record a skip, count it done, prune after it.
        t = self._tracks[name]
        t.closed = True
        self._open -= 1
        if skipped:
            self.reports[name].move(Status.SKIPPED, skipped)
            self.events.say(name, f"[yellow]skipped[/yellow]: {escape(skipped)}")
        self.events.progress.update(self.events.tasks[name], completed=1)
        if self._pruner is not None and any(p in t.started for p in t.spec.platforms):  # it built
            pool.submit(self._prune_cache, name)

    def _interrupted(self) -> None:
        done = {Status.PUBLISHED, Status.UNCHANGED, Status.UP_TO_DATE, self.opt.steps.done}
        for rep in self.reports.values():
            if not (rep.failed or rep.status in done):
                rep.move(Status.INTERRUPTED, rep.error or "the run was interrupted")
        self.write_report()

    def _task(self, ctx: RunContext, spec: ImageSpec, task: str) -> None:
        """One task of an image in a worker thread: ``prepare``, a platform's lane or ``finish``
        (:func:`_prepare`, :func:`_lane`, :func:`_finish`); tells the scheduler how it went. A
        failure is recorded on the image (the first one stands) and never raised."""
        rep = self.reports[spec.name]
        try:
            if task != "finish" and (rep.failed or self._lost(spec)):  # queued before a failure: not needed
                return
            if task == "prepare":
                self._queue.put(("prepared", spec.name, _prepare(ctx, spec, rep)))
            elif task == "finish":
                _finish(ctx, spec, rep, lambda: self._queue.put(("released", spec.name, "")))
            else:
                _lane(ctx, spec, rep, task)
                self._queue.put(("passed", spec.name, task))
        except Exception as exc:  # isolate: record, go on with the other images
            self._queue.put(("failed", spec.name, task))
            try:
                self._failed(rep, exc)
            except Exception as err:  # noqa: BLE001 - the scheduler closes the image on the event anyway
                self._plain(f"{spec.name}: its failure was not recorded: {type(err).__name__}: {err}")
        finally:
            self._queue.put(("ended", spec.name, task))

    def _failed(self, rep: ImageReport, exc: Exception) -> None:
        # The image's status for a task's failure, once (another platform's lane may fail too: its
        # line is printed, the first failure stands).
        line = str(exc) if isinstance(exc, StepFailed) else f"{type(exc).__name__}: {exc}"
        with self._failing:
            first = not rep.failed
            if first and isinstance(exc, children.Interrupted):
                rep.move(Status.INTERRUPTED, "the run was interrupted")
            elif first:
                status = Status.SIZE_GATE if isinstance(exc, size.SizeGateFailed) else (
                    Status.TEST_FAILED if isinstance(exc, TestFailed) else None)
                rep.move(status, line) if status else rep.fail(line)
        if not isinstance(exc, children.Interrupted):
            self.events.say(rep.name, f"[red]{rep.status if first else 'also failed'}[/red]: "
                                      f"{escape(rep.error if first else line)}")

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


class TestFailed(StepFailed):
    """A platform's smoke test failed (the image's status: test-failed, even before every platform
    was built)."""


@dataclass
class _Track:
    """What the scheduler knows of one image; only the scheduler's thread writes it. ``started``:
    the tasks started (``prepare``, ``finish``, a platform's lane by its name); ``running``: how
    many run; ``failed``: a task of it failed; ``passed``: the platforms whose lane passed; ``released``: its children may finish."""

    spec: ImageSpec
    started: set[str] = field(default_factory=set)
    running: int = 0
    failed: bool = False
    prepared: bool = False
    passed: set[str] = field(default_factory=set)
    released: bool = False
    closed: bool = False


def _prepare(ctx: RunContext, spec: ImageSpec, rep: ImageReport) -> bool:
    """Before any build: each platform's build id, then whether the registry publishes them
    (up-to-date: made local for `builder build|test`); a child of an up-to-date parent gets the
    parent's builds. For `builder publish`: the image a test run left tagged. True when platform
    lanes must run."""
    steps = ctx.options.steps
    if not steps.build:
        tested_image(ctx, spec, rep)  # none: skipped
        return False
    for platform, inputs in current.inputs_of(ctx, spec).items():
        rep.build(platform).build_id = build_id.compute(inputs)
    if current.up_to_date(ctx, spec, rep):
        if not steps.publish:  # builder build|test: the images they leave are local
            current.make_local(ctx, rep, list(spec.platforms), moving=steps.test)
        return False
    current.parent_images(ctx, spec)
    return True


def _lane(ctx: RunContext, spec: ImageSpec, rep: ImageReport, platform: str) -> None:
    """One platform's build, named by its run tag; for `builder test|all`, its size gate and smoke
    test. Raises StepFailed (TestFailed for the smoke test), SizeGateFailed."""
    record_build(ctx, spec, rep, platform, build_image(ctx, spec, rep, platform))
    if not ctx.options.steps.test or rep.failed:  # another platform failed meanwhile: no test
        return
    size.gate(ctx, rep, ctx.size_baseline, [platform])
    try:
        smoke_test(ctx, spec, rep, platform)
    except (children.Interrupted, size.SizeGateFailed):
        raise
    except StepFailed as exc:
        raise TestFailed(str(exc)) from None
    except Exception as exc:  # docker-py's errors while testing: still the test's failure
        raise TestFailed(f"{type(exc).__name__}: {exc}") from None


def _finish(ctx: RunContext, spec: ImageSpec, rep: ImageReport, release) -> None:
    """Once every platform passed: the builds' own tags (and the child's recorded base moved to its
    parent's), the SBOMs, ``latest``, then ``release()`` (children may finish) and the push. For
    `builder publish`: the push only."""
    steps = ctx.options.steps
    if steps.build:
        tag_builds(ctx, spec, rep, {b.platform: Built(b.image_id, b.tag) for b in rep.platforms if b.image_id})
        rebase(ctx, spec, rep)
    if steps.test:
        for platform in spec.platforms:  # latest only when every platform passed
            make_sbom(ctx, spec, rep, platform)
        promote(ctx, spec, rep)
    release()
    if steps.publish:
        push(ctx, spec, rep)
