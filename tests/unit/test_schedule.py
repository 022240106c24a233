"""The pipeline's scheduling offline: which images start, which are skipped when a parent fails, and
what the report says, with the steps replaced by fakes (the real steps run on a real Engine in
tests/integration/test_pipeline.py, test_concurrency.py and test_faults.py)."""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import pytest
from repo import ROOT

from builder.matrix.platform import PLATFORMS
from builder.engine import children
from builder.matrix import load
from builder.run import pipeline, preparation, schedule, tasks
from builder.run.context import Options
from builder.run.disk_budget import DiskBudget
from builder.run.report import ImageReport, Status
from builder.run.steps import StepFailed
from builder.run.steps.build import Build

AMD64, ARM64 = PLATFORMS["linux/amd64"], PLATFORMS["linux/arm64"]

MINIMAL_12 = "minimal-debian12-py311-cpu-inference"
MINIMAL_13 = "minimal-debian13-py313-cpu-inference"


@pytest.fixture
def offline(monkeypatch):
    """No Engine: the run's preparation and bookkeeping do nothing; returns the images whose lanes
    (builds) ran, once per platform."""
    def context(matrix, opt, specs, reports, events, clients, registry, vcs):
        def for_task(copies):  # RunContext.for_task: the task's own copies of the reports
            return SimpleNamespace(build_platform=AMD64, options=opt, reports=copies, matrix=matrix)
        held["events"] = events  # the run's, for a fake lane to hold a build slot
        return SimpleNamespace(build_platform=AMD64, options=opt, reports=reports, matrix=matrix,
                               for_task=for_task)
    monkeypatch.setattr(preparation, "context", context)
    monkeypatch.setattr(preparation, "registry", lambda opt: "127.0.0.1:5000")
    monkeypatch.setattr(pipeline.superseded, "engine_time", lambda client: 0.0)
    monkeypatch.setattr(pipeline.prune, "cache_ids", lambda client: set())
    monkeypatch.setattr(pipeline.prune, "record_cache", lambda before, after: None)
    monkeypatch.setattr(pipeline.space, "remove_superseded", lambda ctx, started: None)
    monkeypatch.setattr(pipeline, "drop_run_tags", lambda ctx: None)
    monkeypatch.setattr(pipeline.Clients, "get", lambda self: None)
    calls: list[str] = []
    lock = threading.Lock()
    made = schedule.Schedule

    def held_schedule(*args, **kwargs):  # the run's schedule, for the fakes to read
        held["schedule"] = made(*args, **kwargs)
        return held["schedule"]
    monkeypatch.setattr(schedule, "Schedule", held_schedule)

    def steps(failing: set[str], interrupted: set[str], lane=None, prepare_as=None, finish_as=None):
        def prepare(ctx, spec, rep):
            if spec.parent is not None:  # a child is prepared once its parent was
                assert held["schedule"].prepared(spec.parent), spec.name
            return prepare_as(spec, rep) if prepare_as else True

        def one_lane(ctx, spec, rep, platform, failed=lambda: False):
            with lock:
                calls.append(spec.name)
                held["lanes"].append((spec.name, platform))
            if lane:
                lane(spec, platform)
            else:
                with held["events"].build_slot(spec.name, platform):
                    pass
            if spec.name in interrupted:
                raise children.Interrupted("stopped")
            if spec.name in failing or (spec.name, platform) in failing:
                raise StepFailed("the apt step failed")
            return tasks.Lane(platform, Build(platform, "build-r", image_id="sha256:" + "1" * 64))  # a value

        def finish(ctx, spec, rep, release):
            if spec.parent is not None:  # a child finishes once its parent was built and tagged
                assert ctx.reports[spec.parent].status in (Status.BUILT, Status.UP_TO_DATE, Status.PUBLISHED), spec.name
            if finish_as:
                finish_as(spec, rep)
            else:
                rep.move(Status.BUILT)
            release()
        monkeypatch.setattr(tasks, "prepare", prepare)
        monkeypatch.setattr(tasks, "lane", one_lane)
        monkeypatch.setattr(tasks, "finish", finish)
    held: dict = {"lanes": []}
    return steps, calls, held


def _run(tmp_path, offline, failing=(), interrupted=(), lane=None, prepare_as=None, jobs=8):
    # The run in a thread joined with a deadline, so a scheduler that never ends fails the test.
    steps, calls, held = offline
    steps(set(failing), set(interrupted), lane, prepare_as)
    options = Options(stage="build", space_check=False, build_dir=tmp_path / "b", jobs=jobs)
    out: list = []
    runner = threading.Thread(target=lambda: out.extend(pipeline.run(load(ROOT / "matrix.yaml"), options)),
                              daemon=True, name="scheduler")
    runner.start()
    runner.join(120)
    assert not runner.is_alive(), f"the run never ended: {getattr(held.get('schedule'), 'open', '?')} images open"
    return {r.name: r for r in out}, calls, json.loads((tmp_path / "b" / "report.json").read_text())


def test_a_failed_parent_skips_its_whole_tree_and_no_other(tmp_path, offline):
    matrix = load(ROOT / "matrix.yaml")
    reports, calls, written = _run(tmp_path, offline, failing={MINIMAL_12})
    tree = {MINIMAL_12} | {s.name for s in matrix.children(MINIMAL_12)}
    assert reports[MINIMAL_12].status == Status.BUILD_FAILED and "apt step" in reports[MINIMAL_12].error
    for name in tree - {MINIMAL_12}:
        assert reports[name].status == Status.SKIPPED and name not in calls, name
    others = {s.name for s in matrix.images()} - tree
    assert others and all(reports[n].status == Status.BUILT for n in others)
    assert sorted(set(calls)) == sorted(others | {MINIMAL_12})
    assert {i["name"]: i["status"] for i in written["images"]} == {n: str(r.status) for n, r in reports.items()}


def test_every_image_runs_once_when_nothing_fails(tmp_path, offline):
    reports, calls, _ = _run(tmp_path, offline)
    matrix = load(ROOT / "matrix.yaml")
    assert sorted(calls) == sorted(s.name for s in matrix.images() for _ in s.platforms)  # each lane once
    assert all(r.status == Status.BUILT for r in reports.values())


def test_a_child_builds_a_platform_once_its_parent_passed_that_platform_not_every_one(tmp_path, offline):
    # The parent's arm64 lane (QEMU: slow) ends only once a child's amd64 lane ran; per image, the
    # child would wait for it and this would time out.
    SKLEARN = "sklearn-1.9-debian12-py311-cpu-inference"
    child_amd64, order, lock = threading.Event(), [], threading.Lock()

    def lane(spec, platform):
        if spec.name == MINIMAL_12 and platform == ARM64:
            assert child_amd64.wait(60), "the child's linux/amd64 build waited for the parent's linux/arm64 one"
        if spec.name == SKLEARN and platform == AMD64:
            child_amd64.set()
        with lock:
            order.append((spec.name, platform))
    reports, _, _ = _run(tmp_path, offline, lane=lane)
    assert all(r.status == Status.BUILT for r in reports.values())
    assert order.index((SKLEARN, AMD64)) < order.index((MINIMAL_12, ARM64)) \
        < order.index((SKLEARN, ARM64))


def test_a_parent_that_fails_on_one_platform_after_another_passed_gets_its_children_skipped(tmp_path, offline):
    matrix = load(ROOT / "matrix.yaml")
    reports, _, _ = _run(tmp_path, offline, failing={(MINIMAL_12, ARM64)})
    lanes = offline[2]["lanes"]
    assert reports[MINIMAL_12].status == Status.BUILD_FAILED and (MINIMAL_12, AMD64) in lanes
    for child in matrix.children(MINIMAL_12):  # some may have built linux/amd64 meanwhile; none finished
        assert reports[child.name].status == Status.SKIPPED, child.name
        assert (child.name, ARM64) not in lanes
    assert all(reports[s.name].status == Status.BUILT for s in matrix.children(MINIMAL_13))


def test_an_up_to_date_parent_lets_its_children_build_and_one_that_cannot_be_made_local_fails(tmp_path, offline):
    from builder.run.steps import StepFailed as Failed
    matrix = load(ROOT / "matrix.yaml")

    def up_to_date(spec, rep):  # the registry publishes both minimal images; one cannot be pulled
        if spec.parent is not None:
            return True
        rep.move(Status.UP_TO_DATE)
        if spec.name == MINIMAL_13:
            raise Failed("pulling the up-to-date image: no space left on device")
        return False
    reports, calls, _ = _run(tmp_path, offline, prepare_as=up_to_date)
    assert reports[MINIMAL_12].status == Status.UP_TO_DATE and MINIMAL_12 not in calls
    assert reports[MINIMAL_13].status == Status.BUILD_FAILED and "no space left" in reports[MINIMAL_13].error
    assert all(reports[s.name].status == Status.BUILT for s in matrix.children(MINIMAL_12))
    assert all(reports[s.name].status == Status.SKIPPED for s in matrix.children(MINIMAL_13))


def test_each_lane_s_value_is_recorded_on_the_report_by_the_scheduler_s_thread_only(tmp_path, offline, monkeypatch):
    recorded, record = [], tasks.Lane.record

    def on_thread(lane, rep):
        recorded.append((threading.current_thread().name, rep.name, lane.platform))
        record(lane, rep)
    monkeypatch.setattr(tasks.Lane, "record", on_thread)
    reports, _, _ = _run(tmp_path, offline, failing={MINIMAL_13})
    lanes = offline[2]["lanes"]
    # every lane that gave a value, once (the failing fake raises before it has one)
    assert sorted((n, p.name) for _, n, p in recorded) == sorted((n, p.name) for n, p in lanes if n != MINIMAL_13)
    assert {t for t, _, _ in recorded} == {"scheduler"}  # the thread pipeline.run runs on
    for name, platform in lanes:
        built = reports[name].built(platform)
        assert (built and built.image_id) == (None if name == MINIMAL_13 else "sha256:" + "1" * 64)


def test_prepare_and_finish_write_their_own_copies_and_only_the_scheduler_s_thread_writes_the_run_s_reports(
        tmp_path, offline, monkeypatch):
    writes: list[tuple[int, str, str]] = []
    setattr_ = ImageReport.__setattr__

    def tracked(self, name, value):
        writes.append((id(self), name, threading.current_thread().name))
        setattr_(self, name, value)
    monkeypatch.setattr(ImageReport, "__setattr__", tracked)
    reports, _, _ = _run(tmp_path, offline, failing={MINIMAL_13})
    run_reports = {id(r) for r in reports.values()}
    on_workers = [(n, t) for i, n, t in writes if t != "scheduler"]
    assert on_workers and {t.split("_")[0] for _, t in on_workers} == {"image"}  # the fakes' finish moved status
    assert {t for i, _, t in writes if i in run_reports} == {"scheduler"}
    built = [r for r in reports.values() if r.status == Status.BUILT]
    assert built and all(r.platforms for r in built)  # what finish did on its copy was recorded


def test_an_interrupted_image_is_recorded_and_its_children_skipped(tmp_path, offline):
    matrix = load(ROOT / "matrix.yaml")
    reports, _, _ = _run(tmp_path, offline, interrupted={MINIMAL_13})
    assert reports[MINIMAL_13].status == Status.INTERRUPTED
    assert all(reports[s.name].status == Status.SKIPPED for s in matrix.children(MINIMAL_13))


def test_prune_cache_prunes_after_builds_that_ran_failed_or_not_and_after_the_last(tmp_path, offline, monkeypatch):
    pruned: list[tuple[str, int]] = []
    steps, calls, held = offline
    monkeypatch.setattr(pipeline.space.CachePruner, "after_image",
                        lambda self, name, mounts=False: pruned.append((name, len(calls))) or 0)
    steps({MINIMAL_13}, set())
    pipeline.run(load(ROOT / "matrix.yaml"), Options(
        stage="build", space_check=False, build_dir=tmp_path / "b", prune_cache=True))
    assert pruned and {name for name, _ in pruned} <= set(calls)  # skipped children never ran: nothing to prune
    assert len(pruned) <= len(calls) and pruned[-1][1] == len(calls)  # requests coalesce; one came after the last build


def test_prune_requests_coalesce_until_the_queued_prune_starts():
    from types import SimpleNamespace
    submitted = []
    prunes = SimpleNamespace(submit=lambda fn, *args: submitted.append(args))
    requests = pipeline.PruneRequests(prunes, object(), SimpleNamespace(disk=None))
    requests.request("a")
    requests.request("b")
    assert [args[1] for args in submitted] == ["a"] and requests.queued == 1
    submitted[0][-1]()  # the queued prune starts: a later lane's cache needs another
    requests.request("c")
    assert [args[1] for args in submitted] == ["a", "c"] and requests.queued == 2
    pipeline.PruneRequests(prunes, None, SimpleNamespace(disk=None)).request("d")  # no --prune-cache
    assert len(submitted) == 2


def test_a_prune_that_raises_never_fails_the_image(tmp_path, offline, monkeypatch):
    def boom(self, name, mounts=False):
        raise OSError("the Engine went away")
    monkeypatch.setattr(pipeline.space.CachePruner, "after_image", boom)
    steps, calls, held = offline
    steps(set(), set())
    assert all(r.status == Status.BUILT for r in pipeline.run(load(ROOT / "matrix.yaml"), Options(
        stage="build", space_check=False, build_dir=tmp_path / "b", prune_cache=True)))


def test_a_cache_prune_waits_for_running_builds_and_holds_back_new_ones():
    from rich.console import Console
    from rich.progress import Progress

    from builder.run.context import Events
    events = Events(Console(quiet=True), Progress(disable=True), 1)
    order: list[str] = []
    a_in, release_a = threading.Event(), threading.Event()

    def build(name: str, entered: threading.Event | None = None, release: threading.Event | None = None):
        with events.build_slot():
            order.append(name)
            if entered:
                entered.set()
            if release:
                assert release.wait(60)

    def prune():
        with events.no_builds():
            order.append("prune")
    a = threading.Thread(target=build, args=("a", a_in, release_a))
    a.start()
    assert a_in.wait(60)
    p = threading.Thread(target=prune)
    p.start()
    for _ in range(6000):  # the prune has asked for its turn (bounded: 60 s)
        if events._pruning:
            break
        threading.Event().wait(0.01)
    assert events._pruning and order == ["a"]  # it waits for the running build
    b = threading.Thread(target=build, args=("b",))
    b.start()
    release_a.set()
    for t in (a, p, b):
        t.join(60)
    assert order == ["a", "prune", "b"]  # the build that came while the prune waited went after it


def test_emulated_lanes_run_one_at_a_time_on_their_own_pool_and_never_hold_up_native_ones(tmp_path, offline):
    # One native worker (--jobs 1): an arm64 lane that waited on it would stop every amd64 lane, and
    # the first arm64 lane below waits for a later amd64 one.
    SKLEARN = "sklearn-1.9-debian12-py311-cpu-inference"
    child_amd64, lock = threading.Event(), threading.Lock()
    running, seen = [0], {"peak": 0, "threads": set()}

    def lane(spec, platform):
        emulated = platform != AMD64
        with lock:
            seen["threads"].add((emulated, threading.current_thread().name.split("_")[0]))
            running[0] += emulated
            seen["peak"] = max(seen["peak"], running[0])
        try:
            if emulated and spec.name == MINIMAL_12:
                assert child_amd64.wait(60), "an amd64 lane waited for an emulated one"
            if spec.name == SKLEARN and platform == AMD64:
                child_amd64.set()
        finally:
            with lock:
                running[0] -= emulated
    reports, _, _ = _run(tmp_path, offline, lane=lane, jobs=1)
    assert all(r.status == Status.BUILT for r in reports.values())
    assert seen["threads"] == {(True, "emulated"), (False, "image")}
    assert seen["peak"] == 1


GB = 1_000_000_000


def _publish(spec, rep):  # a fake finish of `builder all`: built, tested, pushed to its repository
    rep.repository = f"127.0.0.1:5000/{spec.name}"
    for status in (Status.BUILT, Status.TESTED, Status.PUBLISHED):
        rep.move(status)


def _on_a_disk(tmp_path, offline, monkeypatch, free: int, fails: bool = False,
               select: tuple[str, ...] = (MINIMAL_12, MINIMAL_13)):
    # `builder all` of ``select`` (linux/amd64 only; by default the two minimal images) with the disk
    # schedule on a disk of ``free`` bytes, where minimal-debian13's build needs 30 GB: its build
    # starts once an image closed published and the removal of its local copies is queued. Returns
    # the order of the builds, the waits and the removals, the removals queued, and the report written.
    steps, calls, held = offline
    fs = {"free": free}
    order: list[str] = []
    budget = DiskBudget({(MINIMAL_13, AMD64): 30 * GB}, lambda: fs["free"], say=lambda line: order.append("waits"),
                        floor=GB, poll=3600)
    queued, copies, removable = threading.Event(), [], pipeline.space.removable

    def seen(*args):
        copy = removable(*args)
        if copy is not None:
            copies.append(copy.name)
            queued.set()
        return copy

    def remove(self, copy):  # the Engine's side is tested in test_local_copies.py
        if fails:
            raise OSError("the Engine went away")
        order.append(f"removed {copy.name}")
        fs["free"] = 80 * GB
        return [f"{copy.repository}:1"]

    def lane(spec, platform):
        if spec.name == MINIMAL_13:
            assert queued.wait(60), "minimal-debian12's local copies were never queued for removal"
        with held["events"].build_slot(spec.name, platform):
            order.append(f"build {spec.name}")
    monkeypatch.setattr(pipeline.space, "removable", seen)
    monkeypatch.setattr(pipeline.space, "check", lambda *args: {})
    monkeypatch.setattr(pipeline.space, "budget", lambda client, needs, say, max_growth=None: (budget, None))
    monkeypatch.setattr(pipeline.space.LocalCopyRemover, "remove", remove)
    steps(set(), set(), lane, finish_as=_publish)
    reports = pipeline.run(load(ROOT / "matrix.yaml"), Options(
        stage="all", select=select, platforms=(AMD64,), build_dir=tmp_path / "b"))
    assert all(r.status == Status.PUBLISHED for r in reports)
    return order, copies, json.loads((tmp_path / "b" / "report.json").read_text())


def test_local_copies_the_registry_holds_are_removed_only_when_a_build_waits_for_space(tmp_path, offline, monkeypatch):
    order, copies, written = _on_a_disk(tmp_path, offline, monkeypatch, 10 * GB)
    assert copies == [MINIMAL_12, MINIMAL_13]  # each queued once it closed published (a root: no child)
    assert order == [f"build {MINIMAL_12}", "waits", f"removed {MINIMAL_12}", f"build {MINIMAL_13}"]
    assert written["local_copies_removed"] == [MINIMAL_12]  # minimal-debian13's: no build needed its space


def test_a_run_with_enough_disk_keeps_its_local_copies(tmp_path, offline, monkeypatch):
    order, copies, written = _on_a_disk(tmp_path, offline, monkeypatch, 100 * GB)
    assert copies == [MINIMAL_12, MINIMAL_13]  # queued, never needed, not even at the run's end
    assert order == [f"build {MINIMAL_12}", f"build {MINIMAL_13}"] and written["local_copies_removed"] == []


def test_a_removal_that_raises_is_one_line_never_the_image_s_failure(tmp_path, offline, monkeypatch, capsys):
    order, _, written = _on_a_disk(tmp_path, offline, monkeypatch, 10 * GB, fails=True)
    assert order == [f"build {MINIMAL_12}", "waits", f"build {MINIMAL_13}"] and written["local_copies_removed"] == []
    assert f"local copies of {MINIMAL_12} not removed: OSError: the Engine went away" in capsys.readouterr().out


def test_a_parent_s_local_copies_are_queued_for_removal_once_its_last_child_closed(tmp_path, offline, monkeypatch):
    child = load(ROOT / "matrix.yaml").children(MINIMAL_12)[0].name
    order, copies, _ = _on_a_disk(tmp_path, offline, monkeypatch, 100 * GB, select=(child,))
    assert copies == [child, MINIMAL_12]  # not when the parent closed: its child was still pending
    assert order == [f"build {MINIMAL_12}", f"build {child}"]


def test_a_build_slot_asks_for_a_prune_when_its_build_ended_never_on_an_interrupt():
    from rich.console import Console
    from rich.progress import Progress
    from builder.run.context import Events
    events = Events(Console(), Progress(disable=True), 1)
    seen: list[str] = []
    events.after_build = seen.append
    with events.build_slot("a", AMD64):
        assert seen == []  # not while the build runs
    with pytest.raises(KeyboardInterrupt):
        with events.build_slot("b", AMD64):
            raise KeyboardInterrupt
    assert seen == ["a"] and events.peak_parallel_builds == 1


def test_a_build_asks_for_its_prune_while_its_disk_reservation_is_still_held():
    from rich.console import Console
    from rich.progress import Progress
    from builder.run.context import Events
    events = Events(Console(), Progress(disable=True), 1)
    events.disk = DiskBudget({("a", AMD64): 30 * GB}, lambda: 100 * GB, floor=GB, poll=3600)
    held: list[int] = []
    events.after_build = lambda name: held.append(events.disk.available())
    with events.build_slot("a", AMD64):
        pass
    assert held == [100 * GB - GB - 30 * GB]  # a waiting build then sees the prune pending, never a free disk
