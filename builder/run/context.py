"""What every step of a run reads: :class:`Options` (what the user asked) and :class:`RunContext`
(what the run prepared: registry, bases, package sources, build platform), both frozen and made
once, plus :class:`Events` (the run's event lines and slots) and a docker-py client per thread.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Literal, Mapping

import docker
from rich.console import Console
from rich.progress import Progress

from builder import engine, files
from builder.engine.registry import Registry
from builder.engine.sources import Sources
from builder.matrix import ImageSpec, Matrix
from builder.matrix.platform import Platform
from builder.run import policy
from builder.run.disk_budget import DiskBudget
from builder.run.report import ImageReport
from builder.run.stages import Stage, Steps
from builder.sign import Signer

__all__ = ["BaseSource", "Clients", "Events", "Options", "RunContext", "Stage", "Steps"]

BaseSource = Literal["auto", "pull", "bootstrap"]


@dataclass(frozen=True)
class Options:
    """What one pipeline run does. ``registry`` is ``host:port[/namespace]``; empty means the local
    registry on 127.0.0.1:5000 (started when needed). ``select`` holds glob patterns over image
    names (their ancestors are included); empty selects every image. ``jobs`` bounds how many
    tasks run at once (an image's preparation, one platform's build and test, its tags and push;
    builds are mostly downloads and disk), ``test_jobs`` how many
    smoke tests run at once (they are CPU-bound: one per core by default), ``emulated_jobs`` how
    many lanes of another platform than the machine's (build and smoke test under QEMU) run at once,
    on a pool of their own beside the ``jobs`` one (each takes a core for minutes: a bound of their
    own keeps the native lanes going). ``platforms``, when set,
    narrows every image to those of its platforms (an image with none of them is left out; the CLI
    lets ``all`` narrow an image of several platforms only with ``by_platform``, ``publish``
    never). ``space_check`` refuses a run the disk cannot hold (:mod:`builder.engine.disk`; sizes
    from the ``catalog`` JSON); with ``max_disk_growth`` (bytes) its disk schedule keeps the file
    system of the Engine's data root within that growth over the run's start: builds wait for what
    finished images free, and a build waiting for space lets the prune take uv's cache mount too
    (:func:`builder.run.disk_budget.growth_floor`); after the run each image keeps its ``keep_last`` newest local builds
    (the one just made counts); with ``prune_cache`` the BuildKit cache the run makes is removed after
    each build but for cache mounts (:class:`builder.run.space.CachePruner`); with the disk schedule
    on, a run that pushes removes the local copies of finished images the registry holds when a
    build waits for their space (:class:`builder.run.space.LocalCopyRemover`). ``by_platform``
    publishes every build under per-platform tags only
    (:class:`builder.run.policy.PerPlatform`). ``cache_registry`` (``host[:port]/path``), when set,
    is where every build imports and exports BuildKit's cache (:mod:`builder.run.steps.build`).
    ``signing_key`` (a cosign key file's absolute path or a key manager URI) or ``keyless`` signs and
    attests what is published (:mod:`builder.run.steps.sign`). Unless ``force`` (or ``no_cache``),
    an image whose build id the registry already publishes, tested, is up to date: not built, tested
    or pushed again (:mod:`builder.run.steps.up_to_date`). An image that grew more than 10 % over its
    ``catalog`` row fails the size gate (:mod:`builder.run.steps.size`) unless ``accept_size``.
    ``steps``: which steps ``stage`` runs (:class:`builder.run.stages.Steps`), made once from it."""

    stage: Stage = "all"
    select: tuple[str, ...] = ()
    dry_run: bool = False
    registry: str = ""
    base_source: BaseSource = "auto"
    images_dir: Path = Path("images")
    tests_root: Path = Path("tests/by_image")
    build_dir: Path = files.BUILD_DIR
    no_cache: bool = False
    force: bool = False
    accept_size: bool = False
    jobs: int = 8
    test_jobs: int = max(1, os.cpu_count() or 1)
    emulated_jobs: int = 1
    platforms: tuple[Platform, ...] = ()
    by_platform: bool = False
    space_check: bool = True
    max_disk_growth: int | None = None
    keep_last: int = 1
    prune_cache: bool = False
    cache_registry: str = ""
    catalog: Path = Path("docs/images.json")
    signing_key: str = ""
    keyless: bool = False
    steps: Steps = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", Steps.of(self.stage))  # derived: made once, here


class Events:
    """The run's event lines (one per step, to the console) and live progress lines (a terminal
    only), and its two bounds: builds counted while they run (``peak_parallel_builds``) and at most
    ``test_jobs`` smoke tests at once. ``disk``, when the run sets one, holds each build's
    estimated bytes while it runs (:class:`builder.run.disk_budget.DiskBudget`)."""

    def __init__(self, console: Console, progress: Progress, test_jobs: int):
        self.console, self.progress = console, progress
        self.tasks: dict[str, int] = {}
        self.peak_parallel_builds = 0
        self._building = 0
        self._pruning = False
        self._turn = threading.Condition()
        self._testing = threading.BoundedSemaphore(max(1, test_jobs))
        self.disk: DiskBudget | None = None
        #: Called with the image's name once a build's block ended without an exception (its build
        #: ran, passed or failed): ``--prune-cache``'s request (:class:`builder.run.pipeline.PruneRequests`).
        self.after_build: Callable[[str], None] | None = None

    def track(self, names: list[str]) -> None:
        """A progress line for each image of ``names``, made before the run starts."""
        self.tasks = {n: self.progress.add_task(f"{n}: waiting", total=1) for n in names}

    def say(self, name: str, text: str) -> None:
        """Print one event line (rich markup) for image ``name`` and show it on its progress line."""
        self.console.print(f"[bold]{name}[/bold] {text}", highlight=False)
        self.show(name, text)

    def show(self, name: str, text: str) -> None:
        """Show ``text`` on the image's live progress line only."""
        if name in self.tasks:
            self.progress.update(self.tasks[name], description=f"{name}: {text}")

    @contextlib.contextmanager
    def build_slot(self, name: str = "", platform: Platform | None = None) -> Iterator[None]:
        """Counts builds running at once (``peak_parallel_builds``) for the length of the block, the
        build of ``name`` for ``platform``; waits first for its disk space (:attr:`disk`), then while
        a cache prune (:meth:`no_builds`) waits or runs. Once the block ended without an exception,
        calls :attr:`after_build` with ``name`` before its disk reservation ends."""
        with self.disk.reserve(name, platform) if self.disk else contextlib.nullcontext():
            with self._turn:
                self._turn.wait_for(lambda: not self._pruning)
                self._building += 1
                self.peak_parallel_builds = max(self.peak_parallel_builds, self._building)
            try:
                yield
            finally:
                with self._turn:
                    self._building -= 1
                    self._turn.notify_all()
            after = self.after_build  # while the reservation is held: a build waiting for space sees the prune pending
            if after is not None:
                after(name)

    @contextlib.contextmanager
    def no_builds(self) -> Iterator[None]:
        """The block runs while no build runs: it waits for the running ones to end, and builds that
        would start meanwhile wait for it. A running BuildKit solve may still need records it has
        not yet marked in use (measured: a prune while another image exported made that build fail
        with ``failed to solve: not found``)."""
        with self._turn:
            self._turn.wait_for(lambda: not self._pruning)
            self._pruning = True
            self._turn.wait_for(lambda: self._building == 0)
        try:
            yield
        finally:
            with self._turn:
                self._pruning = False
                self._turn.notify_all()

    def test_slot(self) -> threading.BoundedSemaphore:
        """At most ``test_jobs`` smoke tests at once: hold this around one."""
        return self._testing


class Clients:
    """A docker-py client per thread (one HTTP session per worker), for the Engine ``build_dir`` names."""

    def __init__(self, build_dir: Path):
        self._build_dir, self._local = build_dir, threading.local()

    def get(self) -> docker.DockerClient:
        """This thread's client, made on first use."""
        if not hasattr(self._local, "client"):
            self._local.client = engine.client(self._build_dir)
        return self._local.client


@dataclass(frozen=True)
class RunContext:
    """Everything a step reads, made once by :func:`builder.run.preparation.context` before any image
    starts: the ``matrix`` and ``options``; ``registry`` (``host:port[/namespace]`` images are pushed
    to) and its client; the ``specs`` and ``reports`` of the run's images by name (the run's reports
    are written by the scheduler's thread alone; a task's context, :meth:`for_task`, holds copies
    of its image's and its ancestors' reports, made as it starts); the platform builds run on (``build_platform``); for
    a build, the package ``sources``, the ``wheelhouse`` image and the base image of each
    (root image, platform); whether the Engine keeps images in the containerd image store; the
    ``signer`` of what is published, when a key (or keyless signing) is configured; the size gate's
    ``size_baseline``: ``{(name, platform): (uncompressed, compressed bytes)}`` of the catalog; each
    image's ``vcs`` source, ``{name: (revision, epoch)}`` (:func:`builder.run.preparation.vcs_sources`); and,
    made with it, the run's ``policies`` (:func:`builder.run.policy.table`), one object of each
    publish policy, whose image's :meth:`policy` gives."""

    matrix: Matrix
    options: Options
    registry: str
    registry_client: Registry
    run_id: str
    build_platform: Platform
    specs: Mapping[str, ImageSpec]
    reports: Mapping[str, ImageReport]
    events: Events
    clients: Clients
    sources: Sources | None = None
    wheelhouse: str = ""
    base_refs: Mapping[tuple[str, Platform], str] = field(default_factory=dict)
    containerd_store: bool = True
    signer: Signer | None = None
    size_baseline: Mapping[tuple[str, Platform], tuple[int | None, int | None]] = field(default_factory=dict)
    vcs: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    policies: Mapping[str, policy.Manifest] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "policies", policy.table(self.matrix.data.tags))  # derived: made once, here

    def for_task(self, reports: Mapping[str, ImageReport]) -> RunContext:
        """This context with ``reports`` in place of the run's: a task's own copies
        (:func:`builder.run.tasks.copies`)."""
        return replace(self, reports=reports)

    def policy(self, rep: ImageReport) -> policy.Manifest:
        """The publish policy of the image ``rep`` (the one its ``publish`` names)."""
        return self.policies[rep.publish]

    @property
    def client(self) -> docker.DockerClient:
        """The calling thread's docker-py client."""
        return self.clients.get()

    @property
    def build_dir(self) -> Path:
        """The run's build folder (logs, report, SBOMs, bake overrides)."""
        return self.options.build_dir

    @property
    def logs(self) -> Path:
        """``<build dir>/logs``: one build and one test log per image and platform."""
        return self.options.build_dir / "logs"

    def say(self, name: str, text: str) -> None:
        """:meth:`Events.say`."""
        self.events.say(name, text)
