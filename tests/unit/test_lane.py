"""A platform's lane returns values (:class:`builder.run.tasks.Lane`: the build, its size, its smoke
test) and never writes the image's report; :func:`builder.run.tasks.record`, on the scheduler's
thread, alone writes them, and a failure, on the report. The steps are fakes (no Engine)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

from builder.matrix.platform import PLATFORMS
from builder.engine import LOCAL_REGISTRY, children
from builder.run import tasks
from builder.run.context import Options
from builder.run.report import ImageReport, Status, TestRecord
from builder.run.schedule import Failed, Passed
from builder.run.steps.build import Build
from builder.run.steps.test import Tested
from builder.run.task_graph import Kind, Task

AMD = PLATFORMS["linux/amd64"]
ID = "sha256:" + "2" * 64
BUILD = Build(AMD, "build-r1", image_id=ID, seconds=41.0, log="/b/logs/x.build.log", cached_steps=10, steps=12,
              args=(("BASE_IMAGE", "base@sha256:" + "3" * 64),), base="base@sha256:" + "3" * 64,
              base_digest="sha256:" + "4" * 64)
RECORD = TestRecord(outcome="3 passed in 2.0s", seconds=2.0, log="/b/logs/x.test.log")


@pytest.fixture
def lane_of(monkeypatch):
    """Runs a lane with fake steps: ``lane_of(stage, build=..., tested=...)`` -> (the Lane or the
    LaneFailed, the report, the refs the smoke test got)."""
    said, refs = [], []

    def run(stage: str, build: Build = BUILD, tested: Tested | Exception = Tested(RECORD)):
        monkeypatch.setattr(tasks, "build_image", lambda ctx, spec, rep, platform: build)
        monkeypatch.setattr(tasks, "uncompressed_bytes", lambda client, image_id: 193_000_000)

        def smoke(ctx, spec, ref, platform):
            refs.append(ref)
            if isinstance(tested, Exception):
                raise tested
            return tested
        monkeypatch.setattr(tasks, "smoke_test", smoke)
        ctx = SimpleNamespace(options=Options(stage=stage), client=None, size_baseline={},
                              say=lambda name, text: said.append(text))
        rep = ImageReport(name="x", repository=f"{LOCAL_REGISTRY}/x")
        rep.build(AMD).build_id = "sha256:" + "5" * 64
        before = rep.model_dump()
        try:
            out = tasks.lane(ctx, SimpleNamespace(name="x"), rep, AMD)
        except tasks.LaneFailed as exc:
            out = exc
        assert rep.model_dump() == before  # the lane never writes the report
        return out, rep, refs
    return run


def test_a_lane_returns_its_build_size_and_test_and_the_scheduler_records_them(lane_of):
    got, rep, refs = lane_of("test")
    assert got == tasks.Lane(AMD, BUILD, 193_000_000, Tested(RECORD))
    assert refs == [f"{LOCAL_REGISTRY}/x:build-r1"]  # tested by its run tag
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.uncompressed = 1
    tasks.record(rep, Passed(Task("x", Kind.LANE, AMD), got), None)
    b = rep.built(AMD)
    assert (b.image_id, b.tag, b.uncompressed_bytes, b.test) == (ID, "build-r1", 193_000_000, RECORD)
    assert (b.build_seconds, b.build_log, b.cached_steps, b.steps) == (41.0, "/b/logs/x.build.log", 10, 12)
    assert b.build_args == {"BASE_IMAGE": BUILD.base} and b.base_digest == BUILD.base_digest
    assert b.build_id == "sha256:" + "5" * 64 and rep.status == Status.PLANNED


def test_builder_build_runs_no_test(lane_of):
    got, _, refs = lane_of("build")
    assert got == tasks.Lane(AMD, BUILD, 193_000_000) and refs == []


def test_a_failed_smoke_test_gives_its_record_and_log_tail_and_the_image_is_test_failed(lane_of):
    events = SimpleNamespace(say=lambda name, text: None)
    failed = Tested(RECORD.model_copy(update={"outcome": "1 failed"}), "linux/amd64: 1 failed (log t)", "== c.log\nboom\n")
    got, rep, _ = lane_of("test", tested=failed)
    assert isinstance(got, tasks.LaneFailed) and isinstance(got.cause, tasks.TestFailed)
    assert got.lane == tasks.Lane(AMD, BUILD, 193_000_000, failed)
    tasks.record(rep, Failed(Task("x", Kind.LANE, AMD), got.cause, got.lane), events)
    assert rep.status == Status.TEST_FAILED and rep.error == "linux/amd64: 1 failed (log t)"
    assert rep.container_log_tail == "== c.log\nboom\n" and rep.built(AMD).test.outcome == "1 failed"
    assert rep.built(AMD).image_id == ID  # built: kept for its own tags


def test_a_failed_build_gives_its_figures_and_the_image_is_build_failed(lane_of):
    events = SimpleNamespace(say=lambda name, text: None)
    broken = dataclasses.replace(BUILD, image_id=None, error="apt-get install: exit 100 (log l)")
    got, rep, refs = lane_of("test", build=broken)
    assert isinstance(got, tasks.LaneFailed) and got.lane == tasks.Lane(AMD, broken) and refs == []
    tasks.record(rep, Failed(Task("x", Kind.LANE, AMD), got.cause, got.lane), events)
    assert rep.status == Status.BUILD_FAILED and rep.error == "apt-get install: exit 100 (log l)"
    assert rep.built(AMD).build_log == BUILD.log and rep.built(AMD).image_id is None


def test_an_error_while_testing_is_the_test_s_failure_and_an_interrupt_stays_one(lane_of):
    got, _, _ = lane_of("test", tested=OSError("the Engine went away"))
    assert isinstance(got.cause, tasks.TestFailed) and str(got.cause) == "OSError: the Engine went away"
    got, _, _ = lane_of("test", tested=children.Interrupted("stopped"))
    assert isinstance(got.cause, children.Interrupted) and got.lane.build == BUILD


def test_a_recording_that_fails_is_one_line_and_never_raises():
    printed = []
    events = SimpleNamespace(say=lambda name, text: None, console=SimpleNamespace(
        print=lambda line, **kw: printed.append(line)))
    rep = ImageReport(name="x", status=Status.PUBLISHED)  # no move from here
    tasks.record(rep, Failed(Task("x", Kind.FINISH), RuntimeError("late")), events)
    assert rep.status == Status.PUBLISHED and printed and "finish outcome was not recorded" in printed[0]


def test_a_build_s_outcome_is_a_value_with_its_figures_whether_it_passed_or_not(tmp_path):
    from builder.run.buildx import BuildResult
    from builder.run.steps import build as build_step

    bases = {"base@sha256:" + "3" * 64: "sha256:" + "4" * 64}

    def get(ref):
        if ref not in bases:
            raise LookupError(f"no such image: {ref}")
        return SimpleNamespace(id=bases[ref])
    ctx = SimpleNamespace(client=SimpleNamespace(images=SimpleNamespace(get=get)), containerd_store=False)
    spec, started = SimpleNamespace(name="x"), Build(AMD, "build-r1")
    args = {"BASE_IMAGE": "base@sha256:" + "3" * 64, "WHEELHOUSE_IMAGE": "w"}
    log = tmp_path / "x.build.log"
    log.write_text("#5 ERROR: process did not complete\n")
    ok = BuildResult("x", True, ID, 41.04, log, cached_steps=10, steps=12)
    done = build_step._outcome(ctx, spec, started, ok, args, "r/x:build-r1")
    assert done == dataclasses.replace(BUILD, log=str(log), args=tuple(args.items()))
    failed = BuildResult("x", False, None, 3.0, log, error="apt-get: exit 100")
    done = build_step._outcome(ctx, spec, started, failed, args, "r/x:build-r1")
    assert done.image_id is None and done.error == f"apt-get: exit 100 (log {log})" and done.seconds == 3.0
    gone = build_step._outcome(ctx, spec, started, ok, {"BASE_IMAGE": "gone"}, "r/x:build-r1")
    assert gone.image_id is None and gone.error == "LookupError: no such image: gone" and gone.log == str(log)
