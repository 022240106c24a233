"""The pipeline: bases -> build id (up to date? then nothing more) -> per platform: build -> size
gate -> smoke test; then tags -> SBOMs -> latest -> push -> report.

:func:`run` runs a stage over a matrix on a real Engine: it prepares the run once
(:mod:`builder.run.preparation`) and schedules each image's tasks (:mod:`builder.run.task_graph`,
:mod:`builder.run.schedule`; the tasks themselves: :mod:`builder.run.tasks`). The scheduler's thread
records each lane's results, each task's failure (:func:`builder.run.tasks.record`) and each skip,
and queues a cache prune after each build (:class:`PruneRequests`) and, once the registry holds an image and no pending
child needs it, the removal of its local copies (:func:`builder.run.space.removable`); both run on
a worker of their own when a build waits for space (a removal only then, never at the run's end:
a run with enough disk keeps its local images). At the end, or on Ctrl-C, :func:`run` writes
``build/report.json``. A failure is isolated: an image that fails to build or test is marked
failed, never gets ``latest`` and is never pushed; its descendants start nothing more and are
skipped; every other image goes on.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from builder import engine, files
from builder.engine import children, prune, superseded
from builder.matrix import ImageSpec, Matrix
from builder.run import preparation, report, schedule, space, tasks
from builder.run.console import summary, wide_console
from builder.run.context import Clients, Events, Options, RunContext, Stage
from builder.run.disk_budget import DiskBudget
from builder.run.report import ImageReport, Status
from builder.run.steps.tag import drop_run_tags
from builder.run.task_graph import graph

__all__ = ["Options", "ImageReport", "Stage", "run", "summary", "wide_console", "write_report"]


def run(matrix: Matrix, options: Options, console: Console | None = None) -> list[ImageReport]:
    """Run ``options.stage`` over the selected images of ``matrix`` and return one report per image,
    a parent before its children; also writes ``<build dir>/report.json`` (but for a dry run). An
    image's failure is in its report, never raised. Raises EngineError, SignError or ConfigError (not enough disk,
    :func:`builder.engine.disk.check`) when the run cannot start, KeyboardInterrupt once the running steps stopped (the report written)."""
    events, clients, steps = _events(options, console or wide_console()), Clients(options.build_dir), options.steps
    specs = preparation.specs(matrix, options)
    reports = {s.name: preparation.report(matrix, options, s) for s in specs}
    if options.dry_run:
        preparation.dry_run(matrix, options, specs, reports, events.say)
        return list(reports.values())
    client = clients.get()
    watch, vcs = None, preparation.vcs_sources(matrix, options, specs)
    if options.space_check and steps.build:  # before anything is started or written
        needs = space.check(client, matrix, options, options.registry or engine.LOCAL_REGISTRY, specs, vcs)
        events.disk, watch = space.budget(client, needs, lambda line: _plain(events, line), options.max_disk_growth)
    files.claim_folder(options.build_dir)
    started, cache_before = superseded.engine_time(client), prune.cache_ids(client)
    pruner = space.CachePruner(client, cache_before, lambda line: _plain(events, line),
                               events.no_builds) if options.prune_cache else None
    # Local copies the registry holds go only when a build waits for space: with the disk schedule on.
    remover = space.LocalCopyRemover(client, lambda line: _plain(events, line)) \
        if events.disk is not None and steps.publish else None
    removed: list[str] = []  # the images whose local copies went, appended on the prune worker
    events.track([s.name for s in specs])
    if watch:
        watch.start()
    ctx = None
    try:
        ctx = preparation.context(matrix, options, specs, reports, events, clients, preparation.registry(options), vcs)
        with events.progress:
            _schedule(ctx, specs, reports, events, pruner, remover, removed)
    except KeyboardInterrupt:
        _drop_run_tags(options, ctx)
        _interrupted(options, reports, events, removed)
        raise
    finally:
        prune.record_cache(cache_before, prune.cache_ids(client))  # for `builder prune` (never raises)
        if watch:
            watch.stop()
            _plain(events, watch.line())
    _drop_run_tags(options, ctx)
    write_report(options, list(reports.values()), events.peak_parallel_builds, removed)
    if steps.build:
        space.remove_superseded(ctx, started)
    return list(reports.values())


def write_report(options: Options, reports: list[ImageReport], peak_parallel_builds: int = 0,
                 local_copies_removed: list[str] | None = None) -> Path:
    """Write ``<build dir>/report.json`` (:class:`builder.run.report.RunReport`) of ``reports`` (and
    the images whose ``local_copies_removed``) and return its path. Raises OSError."""
    return report.write(options.build_dir / "report.json", options.stage, reports, list(local_copies_removed or []),
                        jobs=options.jobs, peak_parallel_builds=peak_parallel_builds)


def _events(options: Options, console: Console) -> Events:
    # A live line per image in a terminal; CI logs get the event lines only.
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                        console=console, disable=not console.is_terminal)
    return Events(console, progress, options.test_jobs)


def _plain(events: Events, line: str) -> None:
    events.console.print(line, highlight=False, markup=False)


def _schedule(ctx: RunContext, specs: list[ImageSpec], reports: dict[str, ImageReport], events: Events,
              pruner: space.CachePruner | None, remover: space.LocalCopyRemover | None, removed: list[str]) -> None:
    # Run every image's tasks (builder.run.schedule.drive); on Ctrl-C the children stop first
    # (buildx cancels, pytest removes its containers), then the running steps see the stop.
    # ``removed`` gets the names of the images whose local copies ``remover`` removed.
    plan = schedule.Schedule(graph(specs, ctx.build_platform), failed=lambda name: reports[name].failed)
    by_name = {s.name: s for s in specs}

    def work(task):  # on the scheduler's thread: the task's inputs are copies, made now
        task_ctx = ctx.for_task(tasks.copies(reports, ctx.matrix.lineage(task.image)))
        return lambda tell: tasks.run(task_ctx, by_name[task.image], task, tell,
                                      lambda: plan.failed(task.image) or plan.lost(task.image) is not None,
                                      lambda: plan.failed(task.image))

    # Prunes and removals run on a worker of their own, so lanes waiting for disk space never hold them back.
    prunes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prune")
    queued: set[str] = set()  # images whose local copies' removal is queued
    requests = PruneRequests(prunes, pruner, events)

    def queue_removal(name: str | None) -> None:  # once per image, once it is removable
        if remover is None or events.disk is None or name is None or name in queued:
            return
        copy = space.removable(name, plan.graph, plan.closed, reports, ctx.options.steps.publish)
        if copy is not None:
            queued.add(name)
            events.disk.expect_space()
            prunes.submit(_remove_local_copies, remover, copy, events.disk, events, removed)

    def closed(c: schedule.Closed) -> None:
        if c.skipped:
            culprit = c.because or c.skipped
            why = f"{'parent' if culprit == c.skipped else 'ancestor'} {culprit} {reports[culprit].status}"
            reports[c.image].move(Status.SKIPPED, why)
            events.say(c.image, f"[yellow]skipped[/yellow]: {escape(why)}")
        events.progress.update(events.tasks[c.image], completed=1)
        for name in (c.image, plan.graph.parents[c.image]):  # its last child may have been the one pending
            queue_removal(name)

    def stop() -> None:  # Ctrl-C or a scheduler error: no build waits for space, no prune runs
        if events.disk:
            events.disk.close(abort=True)
        children.stop_all()

    events.after_build = requests.request  # a build's end leaves its cache: a prune may take it
    try:
        schedule.drive(plan, work, lambda event: tasks.record(reports[event.task.image], event, events), closed,
                       ctx.options.jobs, ctx.options.emulated_jobs, stop=stop)
    except BaseException:
        events.after_build = None
        prunes.shutdown(wait=True, cancel_futures=True)
        raise
    events.after_build = None
    if events.disk:
        events.disk.close()
    prunes.shutdown(wait=True)


class PruneRequests:
    """``--prune-cache``'s requests: a build that ended, passed or failed (its BuildKit cache is no
    use to its smoke test, which runs the loaded image, nor to a child, which builds FROM it), asks
    for a prune of the run's cache
    (:class:`builder.run.space.CachePruner`: every record the run made that no build holds), on the
    ``prunes`` worker. Requests coalesce: while one prune is queued and has not started, another
    request adds nothing, since that prune takes what the later build left too. Nothing without a
    ``pruner``. Called on the build's worker (:attr:`builder.run.context.Events.after_build`); the
    prune clears the request on the prune worker."""

    def __init__(self, prunes: ThreadPoolExecutor, pruner: space.CachePruner | None, events: Events):
        self.prunes, self.pruner, self.events = prunes, pruner, events
        self._lock = threading.Lock()
        self._queued = False
        self.queued = 0  # prunes queued in all

    def request(self, name: str) -> None:
        """Queue a prune after a build of ``name``, unless one is queued and not started."""
        if self.pruner is None or children.stopping():  # Ctrl-C: an interrupted build, no prune
            return
        with self._lock:
            if self._queued:
                return
            self._queued, self.queued = True, self.queued + 1
        if self.events.disk:
            self.events.disk.expect_space()
        self.prunes.submit(_prune_cache, self.pruner, name, self.events, self._started)

    def _started(self) -> None:
        with self._lock:
            self._queued = False


def _prune_cache(pruner: space.CachePruner, name: str, events: Events, started: Callable[[], None] = lambda: None) -> None:
    # --prune-cache after a build (housekeeping: a failure is one line, never the
    # image's outcome). ``started``: the prune goes now; a request made after it queues the next.
    try:
        if events.disk is None or events.disk.wait_for_need():
            started()
            pruner.after_image(name, mounts=events.disk is not None and events.disk.waiting())
    except Exception as exc:  # noqa: BLE001 - the Engine's answer to a prune never fails an image
        _plain(events, f"BuildKit cache not pruned after {name}: {type(exc).__name__}: {exc}")
    finally:
        if events.disk:
            events.disk.freed()


def _remove_local_copies(remover: space.LocalCopyRemover, copy: space.LocalCopy, disk: DiskBudget,
                         events: Events, removed: list[str]) -> None:
    # A finished image's local copies the registry holds, once a build waits for space (never at the
    # run's end). Outside no_builds(): no build of the run names the image any more (its lanes ended
    # and its children closed), and removing an image touches no BuildKit cache record a running
    # solve holds. Housekeeping: an Engine error is one line, never the image's outcome.
    try:
        if disk.wait_for_need(at_close=False) and remover.remove(copy):
            removed.append(copy.name)
    except Exception as exc:  # noqa: BLE001 - the Engine's answer to a removal never fails an image
        _plain(events, f"local copies of {copy.name} not removed: {type(exc).__name__}: {exc}")
    finally:
        disk.freed()


def _drop_run_tags(options: Options, ctx: RunContext | None) -> None:
    # Once no task runs: no build of this run names its run tags any more.
    if ctx is not None and options.steps.build:
        drop_run_tags(ctx)


def _interrupted(options: Options, reports: dict[str, ImageReport], events: Events, removed: list[str]) -> None:
    # Ctrl-C: every image not done is interrupted, and the report says so.
    done = {Status.PUBLISHED, Status.UNCHANGED, Status.UP_TO_DATE, options.steps.done}
    for rep in reports.values():
        if not (rep.failed or rep.status in done):
            rep.move(Status.INTERRUPTED, rep.error or "the run was interrupted")
    write_report(options, list(reports.values()), events.peak_parallel_builds, removed)
