"""The run's task graph, as data: each image is three kinds of :class:`Task` — ``prepare`` (its
build ids, up to date?), one ``lane`` per platform (build, size gate, smoke test) and ``finish`` (own
tags, SBOMs, ``latest``, push) — and each task needs others to have passed (:class:`Graph`, made by
:func:`graph`; :mod:`builder.run.schedule` runs it).

The needs: a child's ``prepare`` waits for its parent's; a child's lane of platform P waits for its
parent's lanes of P and of the build platform (the child's build stage runs FROM it), so a child's
linux/amd64 build never waits for its parent's arm64 build under QEMU; ``finish`` waits for every
lane of its own and for its parent's release (its parent's ``finish`` passed: it was tagged and
tested, before its push).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Iterable, Mapping

from builder.matrix import ImageSpec
from builder.matrix.platform import Platform


class Kind(enum.Enum):
    """What a task of an image does."""

    PREPARE = "prepare"
    LANE = "lane"
    FINISH = "finish"


@dataclass(frozen=True)
class Task:
    """One task of an image; a lane names its ``platform`` (``linux/arm64``), the others none."""

    image: str
    kind: Kind
    platform: Platform | None = None


@dataclass(frozen=True)
class Graph:
    """The run's tasks and their needs. ``images``: the image names, a parent before its children;
    ``parents``: each image's parent in the run (None: a root, or a parent outside the run);
    ``tasks``: each image's tasks (prepare, its lanes in platform order, finish); ``needs``: the
    tasks whose :class:`Passed` (or :class:`Prepared`) each task waits for; ``build_platform``: the
    machine's platform, whose lanes run natively (any other lane is emulated)."""

    images: tuple[str, ...]
    parents: Mapping[str, str | None]
    tasks: Mapping[str, tuple[Task, ...]]
    needs: Mapping[Task, frozenset[Task]]
    build_platform: Platform

    def prepare(self, image: str) -> Task:
        """The image's ``prepare`` task."""
        return self.tasks[image][0]

    def lanes(self, image: str) -> tuple[Task, ...]:
        """The image's lanes, one per platform."""
        return self.tasks[image][1:-1]

    def finish(self, image: str) -> Task:
        """The image's ``finish`` task."""
        return self.tasks[image][-1]

    def children(self, image: str) -> tuple[str, ...]:
        """The images of the run whose parent is ``image`` (they build FROM it), in build order."""
        return tuple(i for i in self.images if self.parents[i] == image)

    def emulated(self, task: Task) -> bool:
        """True for a lane of another platform than the build platform (it runs under QEMU)."""
        return task.kind is Kind.LANE and task.platform != self.build_platform


def graph(images: Iterable[ImageSpec], build_platform: Platform) -> Graph:
    """The task graph of ``images`` (a parent before its children, as the matrix's plan gives
    them), whose native lanes are those of ``build_platform``. Raises ValueError when an image
    comes before its parent or has no platform."""
    images = list(images)
    names = {i.name for i in images}
    parents: dict[str, str | None] = {}
    tasks: dict[str, tuple[Task, ...]] = {}
    needs: dict[Task, frozenset[Task]] = {}
    for spec in images:
        if not spec.platforms:
            raise ValueError(f"{spec.name} has no platform")
        if spec.parent in names and spec.parent not in tasks:
            raise ValueError(f"{spec.name} comes before its parent {spec.parent}")
        parent = parents[spec.name] = spec.parent if spec.parent in names else None
        prepare, finish = Task(spec.name, Kind.PREPARE), Task(spec.name, Kind.FINISH)
        lanes = tuple(Task(spec.name, Kind.LANE, p) for p in spec.platforms)
        tasks[spec.name] = (prepare, *lanes, finish)
        above = tasks[parent] if parent else ()  # the parent's tasks
        needs[prepare] = frozenset(above[:1])
        for lane in lanes:  # the parent's lanes of this platform and of the build platform
            needs[lane] = frozenset({prepare, *(t for t in above[1:-1] if t.platform in (lane.platform, build_platform))})
        needs[finish] = frozenset({prepare, *lanes, *above[-1:]})
    return Graph(tuple(tasks), parents, tasks, needs, build_platform)
