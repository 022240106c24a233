"""The disk as a scheduled resource: builds reserve their estimated bytes, a build waits while
another is in flight and the disk cannot hold both, and the run's disk peak and end state (offline,
with a stand-in file system; threads are synchronised on events, never on durations)."""

from __future__ import annotations

import threading
import time

import pytest

from builder.matrix.platform import PLATFORMS
from builder.engine import disk
from builder.matrix import load
from builder.run.context import Events
from builder.run.disk_budget import FLOOR, DiskBudget, DiskWatch, growth_floor
from repo import ROOT

AMD64, ARM64 = PLATFORMS["linux/amd64"], PLATFORMS["linux/arm64"]

GB = 1_000_000_000
DEADLINE = 60.0  # seconds; generous: the events below come at once on an idle machine
A, B = ("a", AMD64), ("b", AMD64)


def _until(predicate, what: str) -> None:
    end = time.monotonic() + DEADLINE
    while not predicate():
        assert time.monotonic() < end, what
        time.sleep(0.01)


class FakeDisk:
    def __init__(self, free: int):
        self.free = free

    def __call__(self) -> int:
        return self.free


def _hold(budget: DiskBudget, key, entered: threading.Event, leave: threading.Event, order: list[str]):
    def run():
        with budget.reserve(*key):
            order.append(f"{key[0]} in")
            entered.set()
            leave.wait(DEADLINE)
            order.append(f"{key[0]} out")
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_a_build_alone_never_waits_even_when_its_estimate_exceeds_the_free_space():
    budget = DiskBudget({A: 50 * GB}, FakeDisk(10 * GB), floor=GB, poll=3600)
    with budget.reserve(*A):
        assert budget.available() == 10 * GB - GB - 50 * GB
    assert budget.waits == 0 and budget.available() == 9 * GB


def test_a_build_waits_while_another_holds_the_space_and_starts_when_it_ends():
    said: list[str] = []
    waiting = threading.Event()
    budget = DiskBudget({A: 30 * GB, B: 30 * GB}, FakeDisk(50 * GB),
                        say=lambda line: (said.append(line), waiting.set()), floor=GB, poll=3600)
    order: list[str] = []
    a_in, a_leave, b_in, b_leave = (threading.Event() for _ in range(4))
    ta = _hold(budget, A, a_in, a_leave, order)
    assert a_in.wait(DEADLINE)
    tb = _hold(budget, B, b_in, b_leave, order)
    assert waiting.wait(DEADLINE), "b never said it waits"
    assert not b_in.is_set() and order == ["a in"]
    a_leave.set()
    assert b_in.wait(DEADLINE)
    b_leave.set()
    ta.join(DEADLINE), tb.join(DEADLINE)
    assert order == ["a in", "a out", "b in", "b out"] and budget.waits == 1
    assert said == ["b (linux/amd64) waits for disk space: needs about 30.0 GB, 19.0 GB are free beside the builds in flight"]


def test_space_that_comes_back_wakes_a_waiting_build_while_the_other_still_runs():
    fs = FakeDisk(50 * GB)
    waiting = threading.Event()
    budget = DiskBudget({A: 30 * GB, B: 30 * GB}, fs, say=lambda line: waiting.set(), floor=GB, poll=3600)
    order: list[str] = []
    a_in, a_leave, b_in, b_leave = (threading.Event() for _ in range(4))
    _hold(budget, A, a_in, a_leave, order)
    assert a_in.wait(DEADLINE)
    _hold(budget, B, b_in, b_leave, order)
    assert waiting.wait(DEADLINE)
    fs.free = 80 * GB  # a finished image's cache was pruned
    budget.freed()
    assert b_in.wait(DEADLINE) and order == ["a in", "b in"]
    a_leave.set(), b_leave.set()


def test_builds_that_fit_together_run_together_and_unknown_builds_reserve_nothing():
    budget = DiskBudget({A: 10 * GB, B: 10 * GB}, FakeDisk(30 * GB), floor=GB, poll=3600)
    with budget.reserve(*A), budget.reserve(*B), budget.reserve("c", ARM64):
        assert budget.available() == 9 * GB
    assert budget.waits == 0


def test_the_build_slot_takes_the_disk_reservation_for_the_length_of_the_build():
    from rich.console import Console
    from rich.progress import Progress
    console = Console(quiet=True)
    events = Events(console, Progress(console=console, disable=True), 1)
    events.disk = DiskBudget({A: 10 * GB}, FakeDisk(30 * GB), floor=GB, poll=3600)
    with events.build_slot(*A):
        assert events.disk.available() == 19 * GB
    assert events.disk.available() == 29 * GB


def test_each_build_needs_its_size_times_the_stores_factors_and_an_unchanged_one_nothing():
    m = load(ROOT / "matrix.yaml")
    spec = m.image("minimal-debian12-py311-cpu-inference")
    sizes = {(spec.name, AMD64): 200_000_000}
    needs = disk.build_needs([spec], sizes, {(spec.name, ARM64)}, lambda s, p: 3, disk.BASE_SIZE,
                             disk.CONTAINERD)
    assert needs == {(spec.name, AMD64): int(200_000_000 * (1.36 + 2.29 + 0.78)),
                     (spec.name, ARM64): 0}


def test_the_watch_reports_the_peak_and_the_end_state_over_the_start(tmp_path):
    used = {"now": 100 * GB}
    watch = DiskWatch(tmp_path, every=0.01, used=lambda: used["now"])
    watch.start()
    used["now"] = 130 * GB
    _until(lambda: watch.peak_bytes == 130 * GB, "the sampler never saw the peak")
    used["now"] = 110 * GB
    watch.stop()
    assert watch.line() == f"disk ({tmp_path}'s file system): peak +30.0 GB, end +10.0 GB over the run's start"


@pytest.mark.parametrize("need", [0, -5])
def test_a_build_needing_nothing_never_waits(need):
    budget = DiskBudget({A: 40 * GB, B: need}, FakeDisk(10 * GB), floor=GB, poll=3600)
    with budget.reserve(*A), budget.reserve(*B):
        assert budget.waits == 0


def test_a_build_that_does_not_fit_waits_for_a_pending_prune_even_alone_then_goes():
    fs = FakeDisk(10 * GB)
    waiting = threading.Event()
    budget = DiskBudget({A: 30 * GB}, fs, say=lambda line: waiting.set(), floor=GB, poll=3600)
    budget.expect_space()  # a finished image's cache prune is queued
    order: list[str] = []
    a_in, a_leave = threading.Event(), threading.Event()
    t = _hold(budget, A, a_in, a_leave, order)
    assert waiting.wait(DEADLINE) and not a_in.is_set()
    budget.freed()  # the prune ended; it freed too little, but nothing else can come: a build alone goes
    assert a_in.wait(DEADLINE)
    a_leave.set()
    t.join(DEADLINE)
    assert order == ["a in", "a out"] and budget.waits == 1


def test_a_queued_prune_waits_until_a_build_needs_space_or_the_run_ends():
    fs = FakeDisk(40 * GB)
    budget = DiskBudget({A: 10 * GB, B: 35 * GB}, fs, floor=GB, poll=3600)
    pruned = threading.Event()

    def prune():
        budget.wait_for_need()
        fs.free = 80 * GB
        pruned.set()
        budget.freed()
    budget.expect_space()
    worker = threading.Thread(target=prune, daemon=True)
    worker.start()
    order: list[str] = []
    a_in, a_leave, b_in, b_leave = (threading.Event() for _ in range(4))
    _hold(budget, A, a_in, a_leave, order)  # fits: no prune is needed for it
    assert a_in.wait(DEADLINE) and not pruned.is_set()
    _hold(budget, B, b_in, b_leave, order)  # does not fit beside a: the prune runs, then b goes
    assert pruned.wait(DEADLINE) and b_in.wait(DEADLINE)
    a_leave.set(), b_leave.set()

    other = DiskBudget({}, fs, floor=GB, poll=3600)
    done = threading.Event()
    threading.Thread(target=lambda: (other.wait_for_need(), done.set()), daemon=True).start()
    other.close()  # the run's lanes ended: queued prunes run
    assert done.wait(DEADLINE)


def test_a_stopping_run_releases_waiting_builds_and_drops_queued_prunes():
    waiting = threading.Event()
    budget = DiskBudget({A: 30 * GB}, FakeDisk(10 * GB), say=lambda line: waiting.set(), floor=GB, poll=3600)
    budget.expect_space()
    order: list[str] = []
    a_in, a_leave = threading.Event(), threading.Event()
    _hold(budget, A, a_in, a_leave, order)
    assert waiting.wait(DEADLINE) and not a_in.is_set()
    budget.close(abort=True)  # Ctrl-C: the build goes on to see the stop itself
    assert a_in.wait(DEADLINE)
    a_leave.set()
    assert budget.wait_for_need() is False  # a prune still queued does not run


def test_zero_byte_reservations_never_hold_a_build_back():
    budget = DiskBudget({A: 0, B: 30 * GB}, FakeDisk(10 * GB), floor=GB, poll=3600)
    with budget.reserve(*A), budget.reserve(*B):
        assert budget.waits == 0


def test_a_queued_prune_runs_when_the_free_bytes_fall_below_the_floor_without_a_waiting_build():
    fs = FakeDisk(40 * GB)
    budget = DiskBudget({}, fs, floor=2 * GB, poll=0.01)
    done = threading.Event()
    threading.Thread(target=lambda: (budget.wait_for_need(), done.set()), daemon=True).start()
    assert not done.wait(0.2)  # plenty of space: the prune stays queued (a bounded look, not a duration asserted)
    fs.free = GB  # a push filled the disk
    assert done.wait(DEADLINE)


def test_a_queued_removal_of_local_copies_runs_when_a_build_waits_never_at_the_run_s_end():
    budget = DiskBudget({A: 10 * GB, B: 35 * GB}, FakeDisk(40 * GB), floor=GB, poll=3600)
    budget.expect_space()
    ran: list[bool] = []
    went = threading.Event()
    threading.Thread(target=lambda: (ran.append(budget.wait_for_need(at_close=False)), went.set()), daemon=True).start()
    order: list[str] = []
    a_in, a_leave, b_in, b_leave = (threading.Event() for _ in range(4))
    _hold(budget, A, a_in, a_leave, order)
    assert a_in.wait(DEADLINE) and not went.is_set()  # a fits: no need
    _hold(budget, B, b_in, b_leave, order)  # b does not fit beside a: the removal goes
    assert went.wait(DEADLINE) and ran == [True]
    budget.freed()
    a_leave.set(), b_leave.set()

    ended = DiskBudget({}, FakeDisk(40 * GB), floor=GB, poll=3600)
    ended.expect_space()
    done: list[bool] = []
    t = threading.Thread(target=lambda: done.append(ended.wait_for_need(at_close=False)), daemon=True)
    t.start()
    ended.close()  # the run's lanes ended with nothing waiting: a cache prune would run, a removal not
    t.join(DEADLINE)
    assert done == [False] and ended.wait_for_need() is True


def test_a_growth_ceiling_raises_the_floor_to_what_the_file_system_may_not_go_under():
    assert growth_floor(100 * GB, None) == FLOOR
    assert growth_floor(100 * GB, 45 * GB) == 55 * GB
    assert growth_floor(40 * GB, 45 * GB) == FLOOR  # a disk smaller than the ceiling: its free bytes are the limit


def test_under_a_growth_ceiling_a_build_waits_although_the_disk_has_room():
    fs = FakeDisk(100 * GB)
    waiting = threading.Event()
    budget = DiskBudget({A: 20 * GB, B: 30 * GB}, fs, say=lambda line: waiting.set(),
                        floor=growth_floor(fs(), 45 * GB), poll=3600)
    entered, leave, order = threading.Event(), threading.Event(), []
    first = _hold(budget, A, entered, leave, order)
    assert entered.wait(DEADLINE)
    fs.free = 90 * GB  # a's build wrote 10 GB: 35 GB of growth left, 20 GB of them a's
    assert not budget.waiting()
    second = threading.Thread(target=lambda: budget.reserve(*B).__enter__() and None, daemon=True)
    second.start()
    assert waiting.wait(DEADLINE) and budget.waiting() and budget.waits == 1
    leave.set()
    first.join(DEADLINE)
    second.join(DEADLINE)
    assert not second.is_alive() and not budget.waiting()  # a's reservation ended: 35 GB within the growth


@pytest.mark.parametrize("a_build_waits", [True, False])
def test_a_prune_takes_uv_s_cache_mount_only_while_a_build_waits_for_space(a_build_waits):
    from types import SimpleNamespace
    from builder.run import pipeline
    budget = DiskBudget({A: 30 * GB, B: 30 * GB}, FakeDisk(40 * GB), floor=GB, poll=3600)
    entered, leave, order = threading.Event(), threading.Event(), []
    first = _hold(budget, A, entered, leave, order)
    assert entered.wait(DEADLINE)
    if a_build_waits:
        threading.Thread(target=lambda: budget.reserve(*B).__enter__(), daemon=True).start()
        _until(budget.waiting, "b never waited")
    else:
        budget.close()  # the run's lanes ended: queued prunes run now, no build waits
    calls = []
    pruner = SimpleNamespace(after_image=lambda name, mounts=False: calls.append((name, mounts)))
    budget.expect_space()
    pipeline._prune_cache(pruner, "a", SimpleNamespace(disk=budget))
    assert calls == [("a", a_build_waits)]
    leave.set()
    first.join(DEADLINE)
