"""The scheduler as data: the task graph's needs, the schedule moved event by event, and
:func:`builder.run.schedule.drive` run with fake steps that return events (no Engine, no report)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from builder.matrix.platform import PLATFORMS
from builder.run.schedule import Closed, Ended, Failed, Passed, Prepared, Schedule, drive
from builder.run.task_graph import Kind, Task, graph

AMD, ARM = PLATFORMS["linux/amd64"], PLATFORMS["linux/arm64"]


def image(name: str, parent: str | None = None, platforms: tuple[str, ...] = (AMD, ARM)):
    return SimpleNamespace(name=name, parent=parent, platforms=platforms)


def lane(name: str, platform: str) -> Task:
    return Task(name, Kind.LANE, platform)


def prep(name: str) -> Task:
    return Task(name, Kind.PREPARE)


def fin(name: str) -> Task:
    return Task(name, Kind.FINISH)


#: A root of two platforms, its child, the child's child of amd64 only, and another root.
TREE = [image("root"), image("child", "root"), image("leaf", "child", (AMD,)), image("other", None, (AMD,))]


def test_the_graph_holds_each_image_s_tasks_and_their_needs():
    g = graph(TREE, AMD)
    assert g.images == ("root", "child", "leaf", "other")
    assert g.tasks["child"] == (prep("child"), lane("child", AMD), lane("child", ARM), fin("child"))
    assert g.parents == {"root": None, "child": "root", "leaf": "child", "other": None}
    assert g.needs[prep("root")] == frozenset() and g.needs[prep("child")] == {prep("root")}
    # a lane: its own prepare, the parent's lane of its platform and of the build platform
    assert g.needs[lane("child", AMD)] == {prep("child"), lane("root", AMD)}
    assert g.needs[lane("child", ARM)] == {prep("child"), lane("root", ARM), lane("root", AMD)}
    assert g.needs[lane("leaf", AMD)] == {prep("leaf"), lane("child", AMD)}
    # finish: every own lane and the parent's release
    assert g.needs[fin("child")] == {prep("child"), lane("child", AMD), lane("child", ARM), fin("root")}
    assert g.needs[fin("other")] == {prep("other"), lane("other", AMD)}
    assert [g.emulated(t) for t in g.tasks["root"]] == [False, False, True, False]


def test_on_an_arm64_machine_the_arm64_lanes_are_native_and_what_a_child_s_build_stage_runs_from():
    g = graph(TREE, ARM)
    assert g.needs[lane("child", AMD)] == {prep("child"), lane("root", AMD), lane("root", ARM)}
    assert g.emulated(lane("root", AMD)) and not g.emulated(lane("root", ARM))


def test_a_parent_outside_the_run_is_no_need_and_a_bad_order_is_refused():
    g = graph([image("child", "root", (AMD,))], AMD)
    assert g.parents == {"child": None} and g.needs[prep("child")] == frozenset()
    with pytest.raises(ValueError, match="before its parent"):
        graph([image("child", "root"), image("root")], AMD)
    with pytest.raises(ValueError, match="no platform"):
        graph([image("root", None, ())], AMD)


def _passes(s: Schedule, *tasks: Task) -> tuple[list[Task], list[Closed]]:
    # Each task passed and ended (a prepare: with its lanes to run), then what starts and closes.
    for t in tasks:
        s.record(Prepared(t) if t.kind is Kind.PREPARE else Passed(t))
        s.record(Ended(t))
    return s.advance()


def test_the_schedule_starts_each_task_once_its_needs_passed_and_closes_each_image_once():
    s = Schedule(graph(TREE[:2], AMD))
    assert s.advance() == ([prep("root")], [])
    assert s.advance() == ([], [])  # started once
    assert _passes(s, prep("root")) == ([lane("root", AMD), lane("root", ARM), prep("child")], [])
    assert s.prepared("root") and not s.prepared("child")
    assert _passes(s, prep("child")) == ([], [])  # the child's lanes wait for the parent's
    assert _passes(s, lane("root", AMD)) == ([lane("child", AMD)], [])  # not for its arm64 lane
    assert _passes(s, lane("child", AMD)) == ([], [])
    assert _passes(s, lane("root", ARM)) == ([fin("root"), lane("child", ARM)], [])
    assert _passes(s, lane("child", ARM)) == ([], [])  # the child finishes after its parent's release
    assert _passes(s, fin("root")) == ([fin("child")], [Closed("root", None, True)])
    assert _passes(s, fin("child")) == ([], [Closed("child", None, True)]) and s.open == 0


def test_a_failure_before_the_release_skips_the_descendants_once_their_tasks_ended_and_no_other_image():
    s = Schedule(graph(TREE, AMD))
    s.advance()
    _passes(s, prep("root"), prep("other"))
    assert _passes(s, prep("child"), lane("root", AMD)) == ([lane("child", AMD), prep("leaf")], [])
    s.record(Failed(lane("root", ARM)))
    s.record(Ended(lane("root", ARM)))
    start, closed = s.advance()
    assert start == [] and closed == [Closed("root", None, True)]  # the child's amd64 lane still runs
    assert s.lost("child") == "root" and s.lost("leaf") == "root" and s.lost("other") is None
    start, closed = _passes(s, lane("child", AMD), prep("leaf"))
    assert start == [] and closed == [Closed("child", "root", True, "root"), Closed("leaf", "child", False, "child")]
    assert _passes(s, lane("other", AMD)) == ([fin("other")], [])
    assert _passes(s, fin("other")) == ([], [Closed("other", None, True)]) and s.open == 0


def test_a_failure_after_the_release_leaves_the_children_going():
    s = Schedule(graph(TREE[:2], AMD))
    s.advance()
    _passes(s, prep("root"), prep("child"))
    _passes(s, lane("root", AMD), lane("root", ARM), lane("child", AMD), lane("child", ARM))
    s.record(Passed(fin("root")))  # released, then the push failed
    s.record(Failed(fin("root")))
    s.record(Ended(fin("root")))
    assert s.advance() == ([fin("child")], [Closed("root", None, True)]) and s.lost("child") is None


def test_an_up_to_date_image_runs_no_lane_and_no_finish_and_its_children_go_on():
    s = Schedule(graph(TREE[:2], AMD))
    s.advance()
    s.record(Prepared(prep("root"), lanes=False, released=True))
    s.record(Ended(prep("root")))
    assert s.advance() == ([prep("child")], [Closed("root", None, False)])
    assert _passes(s, prep("child")) == ([lane("child", AMD), lane("child", ARM)], [])


def test_an_image_whose_report_failed_closes_and_only_an_event_is_recorded():
    failed: set[str] = set()
    s = Schedule(graph(TREE[:2], AMD), failed=lambda name: name in failed)
    s.advance()
    failed.add("root")  # `builder publish`: nothing tested to push, the report says skipped
    s.record(Prepared(prep("root"), lanes=False))
    s.record(Ended(prep("root")))
    assert s.advance() == ([], [Closed("root", None, False), Closed("child", "root", False, "root")])
    with pytest.raises(TypeError):
        s.record("passed")


def _fake_steps(failing: set[Task], seen: list, lock: threading.Lock):
    # A worker's task as fake steps: each returns its outcome as events, as builder.run.tasks.run does.
    def work(task: Task, tell) -> None:
        with lock:
            seen.append((task, threading.current_thread().name.split("_")[0]))
        try:
            if task in failing:
                tell(Failed(task))
            elif task.kind is Kind.PREPARE:
                tell(Prepared(task))
            else:
                tell(Passed(task))
        finally:
            tell(Ended(task))
    return lambda task: lambda tell: work(task, tell)  # drive's work(task) -> what the worker runs


def test_drive_runs_every_task_once_emulated_lanes_on_their_own_pool_and_closes_each_image():
    seen: list = []
    closed: list[Closed] = []
    plan = Schedule(graph(TREE, AMD))
    drive(plan, _fake_steps(set(), seen, threading.Lock()), lambda event: None, lambda c: closed.append(c),
          jobs=2, emulated_jobs=1)
    tasks = [t for t, _ in seen]
    assert sorted(tasks, key=repr) == sorted((t for ts in plan.graph.tasks.values() for t in ts), key=repr)
    assert {(t.platform == ARM, pool) for t, pool in seen} == {(False, "image"), (True, "emulated")}
    assert {c.image: c.skipped for c in closed} == {"root": None, "child": None, "leaf": None, "other": None}
    for t in tasks:  # each task started after every task it needs
        assert all(tasks.index(n) < tasks.index(t) for n in plan.graph.needs[t]), t


def test_drive_with_a_failing_fake_step_skips_the_tree_below_it_and_ends():
    seen: list = []
    closed: list[Closed] = []
    drive(Schedule(graph(TREE, AMD)), _fake_steps({lane("root", ARM)}, seen, threading.Lock()), lambda event: None,
          lambda c: closed.append(c), jobs=4, emulated_jobs=1)
    assert {c.image: c.skipped for c in closed} == {"root": None, "child": "root", "leaf": "child", "other": None}
    ran = {t for t, _ in seen}
    assert fin("root") not in ran and lane("child", ARM) not in ran and fin("other") in ran


def test_drive_stops_and_raises_when_the_scheduler_s_thread_is_interrupted():
    stopped: list[bool] = []

    def interrupted(closed: Closed) -> None:
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        drive(Schedule(graph(TREE, AMD)), _fake_steps(set(), [], threading.Lock()), lambda event: None, interrupted,
              jobs=1, emulated_jobs=1, stop=lambda: stopped.append(True))
    assert stopped == [True]
