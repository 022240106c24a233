"""The three tasks of an image (:class:`builder.run.task_graph.Kind`), each a sequence of steps
(:mod:`builder.run.steps`) chosen by the stage's :class:`builder.run.stages.Steps`: :func:`prepare`
(build ids, up to date?), :func:`lane` (one platform's build, size gate and smoke test -> a
:class:`Lane` value) and :func:`finish` (own tags, SBOMs, ``latest``, push); :func:`copies`, the
values a task starts from (its image's and its ancestors' reports, copied on the scheduler's
thread); :func:`run`, which runs a task in a worker and tells the scheduler how it went
(:mod:`builder.run.schedule`'s events, each carrying the task's result as a value); and
:func:`record`, which the scheduler's thread calls with each event: it alone writes the run's
reports, so no report is shared between threads."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping

from rich.markup import escape

from builder.engine import children
from builder.matrix import ImageSpec
from builder.matrix.platform import Platform
from builder.run import build_id
from builder.run.context import Events, RunContext
from builder.engine.images import uncompressed_bytes
from builder.run.report import ImageReport, PlatformBuild, Status
from builder.run.schedule import Ended, Event, Failed, Finished, Passed, Prepared
from builder.run.steps import Built, StepFailed, size, stop_if_interrupted, up_to_date
from builder.run.steps.build import Build, build_image
from builder.run.steps.push import push, tested_image
from builder.run.steps.tag import figures, promote, rebase, tag_builds
from builder.run.steps.test import Tested, make_sbom, smoke_test
from builder.run.task_graph import Kind, Task


class TestFailed(StepFailed):
    """A platform's smoke test failed (the image's status: test-failed, even before every platform
    was built)."""


def prepare(ctx: RunContext, spec: ImageSpec, rep: ImageReport) -> bool:
    """Before any build: each platform's build id, then whether the registry publishes them
    (up-to-date: made local for `builder build|test`); a child of an up-to-date parent gets the
    parent's builds. For `builder publish`: the image a test run left tagged. True when platform
    lanes must run. Raises StepFailed."""
    steps = ctx.options.steps
    if not steps.build:
        tested_image(ctx, spec, rep).record(rep)  # none: skipped
        return False
    for platform, inputs in up_to_date.inputs_of(ctx, spec).items():
        rep.build(platform).build_id = build_id.compute(inputs)
    served = up_to_date.up_to_date(ctx, spec, rep)
    if served is not None:
        served.record(rep)
        if not steps.publish:  # builder build|test: the images they leave are local
            up_to_date.make_local(ctx, rep, list(spec.platforms), moving=steps.test)
        return False
    up_to_date.parent_images(ctx, spec)
    return True


@dataclass(frozen=True)
class Lane:
    """What one platform's lane gives: its ``build``, the built image's ``uncompressed`` size (bytes)
    and its smoke test (``tested``); a lane that failed gives what it got so far. Recorded on the
    image's report by :meth:`record`, on the scheduler's thread only."""

    platform: Platform
    build: Build | None = None
    uncompressed: int | None = None
    tested: Tested | None = None

    def record(self, rep: ImageReport) -> None:
        """Write the lane's results on the build of its platform in ``rep`` (and a failed smoke
        test's log tail on ``rep``); a lane that got nothing leaves ``rep`` as it is."""
        if self.build is None:
            return
        self.record_on(rep.build(self.platform))
        if self.tested is not None and self.tested.log_tail is not None:
            rep.container_log_tail = self.tested.log_tail

    def record_on(self, b: PlatformBuild) -> PlatformBuild:
        """Write the lane's results on the build ``b``; returns ``b``."""
        if self.build is not None:
            self.build.record(b)
        if self.uncompressed is not None:
            b.uncompressed_bytes = self.uncompressed
        if self.tested is not None:
            b.test = self.tested.record
        return b


class LaneFailed(Exception):
    """A lane's step raised ``cause``; ``lane`` holds what the lane got before."""

    def __init__(self, cause: Exception, lane: Lane):
        super().__init__(str(cause))
        self.cause, self.lane = cause, lane


def lane(ctx: RunContext, spec: ImageSpec, rep: ImageReport, platform: Platform,
         failed: Callable[[], bool] = lambda: False) -> Lane:
    """One platform's build, named by its run tag; for `builder test|all`, its size gate and smoke
    test, unless ``failed()`` says another task of the image failed meanwhile. Reads ``rep`` (and
    the parent's), never writes it. Raises LaneFailed, whose cause is StepFailed (TestFailed for
    the smoke test), SizeGateFailed or Interrupted."""
    got = Lane(platform)
    try:
        got = replace(got, build=build_image(ctx, spec, rep, platform))
        stop_if_interrupted()
        if got.build.error is not None:
            raise StepFailed(got.build.error)
        got = replace(got, uncompressed=uncompressed_bytes(ctx.client, got.build.image_id))
        ctx.say(spec.name, f"built {figures(got.record_on(PlatformBuild(platform=platform)))}")
        if not ctx.options.steps.test or failed():  # another platform failed meanwhile: no test
            return got
        size.gate(ctx, rep, ctx.size_baseline, [got.record_on(PlatformBuild(platform=platform))])
        got = replace(got, tested=_smoke_test(ctx, spec, f"{rep.repository}:{got.build.temporary}", platform))
        stop_if_interrupted()
        if got.tested.error is not None:
            raise TestFailed(got.tested.error)
        return got
    except Exception as exc:
        raise LaneFailed(exc, got) from exc


def _smoke_test(ctx: RunContext, spec: ImageSpec, ref: str, platform: Platform) -> Tested:
    # The smoke test; an error while it runs is the test's failure (TestFailed).
    try:
        return smoke_test(ctx, spec, ref, platform)
    except children.Interrupted:
        raise
    except StepFailed as exc:
        raise TestFailed(str(exc)) from None
    except Exception as exc:  # docker-py's errors while testing: still the test's failure
        raise TestFailed(f"{type(exc).__name__}: {exc}") from None


def finish(ctx: RunContext, spec: ImageSpec, rep: ImageReport, release: Callable[[], None]) -> None:
    """Once every platform passed: the builds' own tags (and the child's recorded base moved to its
    parent's), the SBOMs, ``latest``, then ``release()`` (children may finish) and the push. For
    `builder publish`: the push only. Each step returns a value, which this task records on
    ``rep``, its own copy of the image's report. Raises StepFailed."""
    steps = ctx.options.steps
    if steps.build:
        tag_builds(ctx, spec, rep, {b.platform: Built(b.image_id, b.tag) for b in rep.platforms if b.image_id}).record(rep)
        rep.move(Status.BUILT)
        rebase(ctx, spec).record(rep)
    if steps.test:
        for platform in spec.platforms:  # latest only when every platform passed
            rep.build(platform).sbom = make_sbom(ctx, spec, rep, platform)
        rep.tags = promote(ctx, spec, rep)
        rep.move(Status.TESTED)
    release()
    if steps.publish:
        push(ctx, spec, rep).record(rep)


def copies(reports: Mapping[str, ImageReport], lineage: list[str]) -> dict[str, ImageReport]:
    """On the scheduler's thread, as a task starts: deep copies of the reports of ``lineage`` (the
    task's image and its ancestors, :meth:`builder.matrix.Matrix.lineage`) that are in the run. The
    task writes its own image's copy and reads its parent's results from its copy, as values."""
    return {name: reports[name].model_copy(deep=True) for name in lineage if name in reports}


def run(ctx: RunContext, spec: ImageSpec, task: Task, tell: Callable[[Event], None],
        stopped: Callable[[], bool], failed: Callable[[], bool] = lambda: False) -> None:
    """Run ``task`` of ``spec`` (:func:`prepare`, :func:`lane` or :func:`finish`) in a worker, with
    ``ctx`` the task's own context (:meth:`builder.run.context.RunContext.for_task`: ``spec``'s
    report in it is the task's copy), and ``tell`` the scheduler how it went,
    :class:`builder.run.schedule.Ended` last. Results travel as values: a lane's :class:`Lane` in
    its Passed (or Failed) event; the image's record as ``prepare`` or ``finish`` left it (a copy)
    in Prepared, in the Passed that releases it, in Finished, or with a failure in Failed.
    A task other than ``finish`` queued before its image ``stopped()`` (it failed, or an ancestor
    did) does nothing; ``failed()`` tells a running lane that another task of the image failed.
    Never raises (but for BaseException: Ended is still told)."""
    rep = ctx.reports[spec.name]

    def now() -> ImageReport:  # the record as the task left it, a value of its own
        return rep.model_copy(deep=True)
    try:
        if task.kind is not Kind.FINISH and (rep.failed or stopped()):  # queued before a failure: not needed
            return
        if task.kind is Kind.PREPARE:
            lanes = prepare(ctx, spec, rep)
            tell(Prepared(task, lanes=lanes, released=rep.status == Status.UP_TO_DATE, result=now()))
        elif task.kind is Kind.FINISH:
            finish(ctx, spec, rep, lambda: tell(Passed(task, now())))
            tell(Finished(task, now()))
        else:
            tell(Passed(task, lane(ctx, spec, rep, task.platform, failed)))
    except LaneFailed as exc:  # isolate: the scheduler records it, the other images go on
        tell(Failed(task, exc.cause, exc.lane))
    except Exception as exc:
        tell(Failed(task, exc, None if task.kind is Kind.LANE else now()))
    finally:
        tell(Ended(task))


def record(rep: ImageReport, event: Event, events: Events) -> None:
    """On the scheduler's thread: write what ``event`` brings on the image's report ``rep`` (a
    lane's :class:`Lane`; the record a ``prepare`` or ``finish`` made on its copy; then a failure,
    :func:`record_failure`). Never raises: what cannot be recorded is one line (the scheduler
    closes the image on the event anyway)."""
    try:
        result = getattr(event, "result", None)
        if isinstance(result, ImageReport):
            rep.adopt(result)
        if isinstance(event, (Passed, Failed)) and isinstance(result, Lane):
            result.record(rep)
        if isinstance(event, Failed) and isinstance(event.error, Exception):
            record_failure(rep, event.error, events)
    except Exception as err:  # noqa: BLE001 - a report that refuses a move: the run goes on
        events.console.print(f"{rep.name}: its {event.task.kind.value} outcome was not recorded: "
                             f"{type(err).__name__}: {err}", highlight=False, markup=False)


def record_failure(rep: ImageReport, exc: Exception, events: Events) -> None:
    """The image's status for a task's failure ``exc``, once: another platform's lane may fail too;
    its line is printed, the first failure stands. Raises ValueError for a move the report's state
    machine does not have."""
    line = str(exc) if isinstance(exc, StepFailed) else f"{type(exc).__name__}: {exc}"
    first = not rep.failed
    if first and isinstance(exc, children.Interrupted):
        rep.move(Status.INTERRUPTED, "the run was interrupted")
    elif first:
        status = Status.SIZE_GATE if isinstance(exc, size.SizeGateFailed) else (
            Status.TEST_FAILED if isinstance(exc, TestFailed) else None)
        rep.move(status, line) if status else rep.fail(line)
    if not isinstance(exc, children.Interrupted):
        events.say(rep.name, f"[red]{rep.status if first else 'also failed'}[/red]: "
                             f"{escape(rep.error if first else line)}")
