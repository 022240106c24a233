"""The run's scheduler. A :class:`Schedule` holds where each task of the run's
:class:`builder.run.task_graph.Graph` is; it changes only on the scheduler's thread, on the typed
events the workers send (:class:`Prepared`, :class:`Passed`, :class:`Failed`, :class:`Finished`,
:class:`Ended`), and
says which tasks start (those whose needs passed) and which images close
(:meth:`Schedule.advance`). :func:`drive` runs it on two pools: emulated lanes (another platform
than the machine's, under QEMU) on one of their own. Nothing here knows a step, a report or the
Engine.

A failure is isolated: an image whose ancestor failed (or was skipped) before its release starts
nothing more and is skipped once its running tasks ended; every other image goes on.
"""

from __future__ import annotations

import queue
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Union

from builder.run.task_graph import Graph, Task


@dataclass(frozen=True)
class Prepared:
    """An image's ``prepare`` passed; ``lanes``: its lanes must run (False: up to date, or
    ``builder publish``); ``released``: up to date, its children may finish, it has no ``finish``;
    ``result``: what the task gives (the image's record as it left it), for :func:`drive`'s
    ``on_event``."""

    task: Task
    lanes: bool = True
    released: bool = False
    result: object = None


@dataclass(frozen=True)
class Passed:
    """A lane passed, or a ``finish`` released the image (its children may finish); ``result``:
    what the task gives (a lane's :class:`builder.run.tasks.Lane`), for :func:`drive`'s ``on_event``."""

    task: Task
    result: object = None


@dataclass(frozen=True)
class Failed:
    """A task failed with ``error``; ``result``: what it got before it failed, if anything."""

    task: Task
    error: BaseException | None = None
    result: object = None


@dataclass(frozen=True)
class Finished:
    """A ``finish`` got to its end (after its :class:`Passed`, which released the image);
    ``result``: what it gives, for ``on_event``. The schedule itself waits for :class:`Ended`."""

    task: Task
    result: object = None


@dataclass(frozen=True)
class Ended:
    """A task ended, whatever its outcome: the last event of a task."""

    task: Task


#: What a worker tells the scheduler.
Event = Union[Prepared, Passed, Failed, Finished, Ended]


@dataclass(frozen=True)
class Closed:
    """An image with nothing left to run: ``skipped`` is its parent when an ancestor failed (or was
    skipped) before its release, else None; ``because``: that ancestor (the parent, or one above it
    whose failure the parent has not closed on yet); ``built``: one of its lanes ran."""

    image: str
    skipped: str | None
    built: bool
    because: str | None = None


class Schedule:
    """Where each task of a :class:`Graph` is: started, passed, which images failed or closed, how
    many tasks of each run. Changed by :meth:`record` and :meth:`advance` on one thread; ``failed``
    tells whether an image failed outside a task's failure (its report says so)."""

    def __init__(self, tasks: Graph, failed: Callable[[str], bool] = lambda image: False):
        self.graph, self._failed = tasks, failed
        self.started: set[Task] = set()
        self.passed: set[Task] = set()
        self.failures: set[str] = set()
        self.closed: dict[str, Closed] = {}
        self.running: Counter[str] = Counter()

    @property
    def open(self) -> int:
        """How many images have not closed."""
        return len(self.graph.images) - len(self.closed)

    def prepared(self, image: str) -> bool:
        """True once the image's ``prepare`` passed."""
        return self.graph.prepare(image) in self.passed

    def record(self, event: Event) -> None:
        """Take one worker's event. Raises TypeError for anything else."""
        if not isinstance(event, (Prepared, Passed, Failed, Finished, Ended)):
            raise TypeError(f"not a scheduler event: {event!r}")
        task = event.task
        if isinstance(event, Finished):
            return
        if isinstance(event, Ended):
            self.running[task.image] -= 1
        elif isinstance(event, Failed):
            self.failures.add(task.image)
        elif isinstance(event, Passed):
            self.passed.add(task)
        else:  # Prepared
            self.passed.add(task)
            if not event.lanes:
                self.passed.update(self.graph.lanes(task.image))
            if event.released:
                self.passed.add(self.graph.finish(task.image))
                self.started.add(self.graph.finish(task.image))

    def failed(self, image: str) -> bool:
        """True once a task of the image told a failure. Read by the scheduler and by the image's
        running tasks (another platform's lane failed: a lane skips its smoke test)."""
        return image in self.failures

    def down(self, image: str) -> bool:
        """True when the image failed or was skipped."""
        return image in self.failures or self._failed(image) or (image in self.closed and
                                                                 self.closed[image].skipped is not None)

    def lost(self, image: str) -> str | None:
        """The ancestor that failed (or was skipped) before its release, or None: the image starts
        nothing more. Read by the scheduler and, before a task starts, by its worker."""
        name = self.graph.parents.get(image)
        while name is not None:
            if self.down(name) and self.graph.finish(name) not in self.passed:
                return name
            name = self.graph.parents[name]
        return None

    def advance(self) -> tuple[list[Task], list[Closed]]:
        """The tasks whose needs passed, marked started, and the images closed now (nothing left to
        run), a parent before its children."""
        start: list[Task] = []
        closed: list[Closed] = []
        for image in self.graph.images:
            if image not in self.closed:
                self._advance(image, start, closed)
        return start, closed

    def _advance(self, image: str, start: list[Task], closed: list[Closed]) -> None:
        finish, lost = self.graph.finish(image), self.lost(image)
        if self.down(image) or (lost and finish not in self.started):
            if self.running[image] == 0:
                closed.append(self._close(image, None if self.down(image) else self.graph.parents[image], lost))
            return
        for task in self.graph.tasks[image]:
            if task not in self.started and task not in self.passed and self.graph.needs[task] <= self.passed:
                self.started.add(task)
                self.running[image] += 1
                start.append(task)
        if finish in self.started and self.running[image] == 0:
            closed.append(self._close(image, None))

    def _close(self, image: str, skipped: str | None, because: str | None = None) -> Closed:
        built = any(t in self.started for t in self.graph.lanes(image))
        self.closed[image] = Closed(image, skipped, built, because if skipped else None)
        return self.closed[image]


def drive(schedule: Schedule, work: Callable[[Task], Callable[[Callable[[Event], None]], None]],
          on_event: Callable[[Event], None], on_close: Callable[[Closed], None], jobs: int,
          emulated_jobs: int, stop: Callable[[], None] = lambda: None) -> None:
    """Run ``schedule`` to its end: ``work(task)``, called on this thread as the task starts (it
    gives the task its inputs as values), returns what runs in a worker with ``tell``, which it
    calls with its events (:class:`Ended` last, always); on this thread, ``on_event(event)`` sees
    each event before the schedule does (it records results; it must not raise), and
    ``on_close(closed)`` each image that closed.
    At most ``jobs`` native tasks and ``emulated_jobs`` emulated lanes (:meth:`Graph.emulated`, a
    pool of their own) run at once. On any exception (Ctrl-C included) ``stop()`` is called (it
    tells the running steps to stop), no task starts any more, the running ones are waited for,
    ``on_event`` sees what they sent, and the exception is raised."""
    events: queue.Queue[Event] = queue.Queue()
    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="image")
    emulated = ThreadPoolExecutor(max_workers=max(1, emulated_jobs), thread_name_prefix="emulated")
    try:
        while True:
            start, closed = schedule.advance()
            for c in closed:
                on_close(c)
            for task in start:
                (emulated if schedule.graph.emulated(task) else pool).submit(work(task), events.put)
            if not schedule.open:
                break
            try:
                event = events.get(timeout=0.5)  # a timeout: Ctrl-C is seen while it waits
            except queue.Empty:
                continue
            on_event(event)
            schedule.record(event)
    except BaseException:
        stop()
        for p in (pool, emulated):
            p.shutdown(wait=True, cancel_futures=True)
        while not events.empty():
            on_event(events.get_nowait())
        raise
    for p in (pool, emulated):
        p.shutdown(wait=True)
