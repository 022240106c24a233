"""The three tasks of an image (:class:`builder.run.task_graph.Kind`), each a sequence of steps
(:mod:`builder.run.steps`) chosen by the stage's :class:`builder.run.stages.Steps`: :func:`prepare`
(build ids, up to date?), :func:`lane` (one platform's build, size gate and smoke test) and
:func:`finish` (own tags, SBOMs, ``latest``, push); and :func:`run`, which runs one of them in a
worker and tells the scheduler how it went (:mod:`builder.run.schedule`'s events)."""

from __future__ import annotations

import threading
from typing import Callable

from rich.markup import escape

from builder.engine import children
from builder.matrix import ImageSpec
from builder.run import build_id
from builder.run.context import Events, RunContext
from builder.run.report import ImageReport, Status
from builder.run.schedule import Ended, Event, Failed, Passed, Prepared
from builder.run.steps import Built, StepFailed, current, size
from builder.run.steps.build import build_image
from builder.run.steps.push import push, tested_image
from builder.run.steps.tag import promote, rebase, record_build, tag_builds
from builder.run.steps.test import make_sbom, smoke_test
from builder.run.task_graph import Kind, Task

#: Held while a failure is recorded on an image: two lanes of one image may fail at once.
_FAILING = threading.Lock()


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


def lane(ctx: RunContext, spec: ImageSpec, rep: ImageReport, platform: str) -> None:
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


def finish(ctx: RunContext, spec: ImageSpec, rep: ImageReport, release: Callable[[], None]) -> None:
    """Once every platform passed: the builds' own tags (and the child's recorded base moved to its
    parent's), the SBOMs, ``latest``, then ``release()`` (children may finish) and the push. For
    `builder publish`: the push only. Raises StepFailed."""
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


def run(ctx: RunContext, spec: ImageSpec, rep: ImageReport, task: Task, tell: Callable[[Event], None],
        lost: Callable[[], bool], events: Events) -> None:
    """Run ``task`` of ``spec`` (:func:`prepare`, :func:`lane` or :func:`finish`) in a worker and
    ``tell`` the scheduler how it went, :class:`builder.run.schedule.Ended` last. A task other than
    ``finish`` queued before its image failed or got ``lost()`` does nothing. A failure is recorded
    on the image (the first one stands) and never raised."""
    try:
        if task.kind is not Kind.FINISH and (rep.failed or lost()):  # queued before a failure: not needed
            return
        if task.kind is Kind.PREPARE:
            lanes = prepare(ctx, spec, rep)
            tell(Prepared(task, lanes=lanes, released=rep.status == Status.UP_TO_DATE))
        elif task.kind is Kind.FINISH:
            finish(ctx, spec, rep, lambda: tell(Passed(task)))
        else:
            lane(ctx, spec, rep, task.platform)
            tell(Passed(task))
    except Exception as exc:  # isolate: record, go on with the other images
        tell(Failed(task))
        try:
            record_failure(rep, exc, events)
        except Exception as err:  # noqa: BLE001 - the scheduler closes the image on the event anyway
            events.console.print(f"{spec.name}: its failure was not recorded: {type(err).__name__}: {err}",
                                 highlight=False, markup=False)
    finally:
        tell(Ended(task))


def record_failure(rep: ImageReport, exc: Exception, events: Events) -> None:
    """The image's status for a task's failure ``exc``, once: another platform's lane may fail too;
    its line is printed, the first failure stands. Raises ValueError for a move the report's state
    machine does not have."""
    line = str(exc) if isinstance(exc, StepFailed) else f"{type(exc).__name__}: {exc}"
    with _FAILING:
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
