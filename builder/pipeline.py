"""The pipeline: bases -> build -> immutable tag -> smoke test -> latest -> publish -> report.

Images run concurrently (``Options.jobs`` at a time) as soon as their parent allows: a child starts
building once its parent passed its smoke test (once it was built, for ``builder build``), so a
parent's push overlaps its children's builds. A failure is isolated: an image that fails to build or
test is marked failed, never gets ``latest`` and is never pushed; its descendants are skipped; every
other image goes on. The stage modules do the work; this one only sequences them and records what
happened in ``build/report.json``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Literal

import docker
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from builder import bases, build, children, disk, engine, files, lock, naming, plan, prune, report, steps
from builder.matrix import ImageSpec, Matrix
from builder.report import ImageReport, Status, wide_console
from builder.sources import Sources, wheelhouse_image

Stage = Literal["build", "test", "publish", "all"]

__all__ = ["Options", "Pipeline", "ImageReport", "wide_console"]


@dataclass
class Options:
    """What one pipeline run does. ``registry`` is ``host:port[/namespace]``; empty means the local
    registry on 127.0.0.1:5000 (started when needed). ``select`` holds glob patterns over image
    names (their ancestors are included); empty selects every image. ``jobs`` bounds how many
    images are worked on at once (builds are mostly downloads and disk), ``test_jobs`` how many
    smoke tests run at once (they are CPU-bound: one per core by default). ``platforms``, when set,
    narrows every image to those of its platforms (an image with none of them is left out; the CLI
    lets ``all`` and ``publish`` narrow only with ``by_platform``). ``space_check`` refuses a run the
    disk cannot hold (:mod:`builder.disk`; sizes from the ``catalog`` JSON); after the run each
    image keeps its ``keep_last`` newest local builds (the one just made counts).
    ``by_platform`` publishes every build under per-platform tags only (``<tag>-<arch>``,
    ``latest-<arch>``): one job of a run split by platform, whose images ``builder merge`` joins
    into image indexes (:mod:`builder.merge`)."""

    stage: Stage = "all"
    select: list[str] = field(default_factory=list)
    dry_run: bool = False
    registry: str = ""
    base_source: bases.Source = "auto"
    images_dir: Path = Path("images")
    tests_root: Path = Path("tests/by_image")
    build_dir: Path = Path("build")
    no_cache: bool = False
    jobs: int = 8
    test_jobs: int = max(1, os.cpu_count() or 1)
    platforms: tuple[str, ...] = ()
    by_platform: bool = False
    space_check: bool = True
    keep_last: int = 1
    catalog: Path = Path("docs/images.json")


class Pipeline:
    """Runs the stages of :class:`Options` over a matrix on a real Engine (see module doc)."""

    def __init__(self, matrix: Matrix, options: Options, console: Console | None = None):
        self.matrix = matrix
        self.opt = options
        self.console = console or wide_console()
        self.logs = options.build_dir / "logs"
        self.reports: dict[str, ImageReport] = {}
        # A live line per image in a terminal; CI logs get the event lines only.
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                 console=self.console, disable=not self.console.is_terminal)
        self.tasks: dict[str, int] = {}
        self.run_id = uuid.uuid4().hex[:12]
        self._local = threading.local()
        self._lock = threading.Lock()
        self._building = 0
        self.peak_parallel_builds = 0
        self._events: queue.Queue[tuple[str, str]] = queue.Queue()
        self._testing = threading.BoundedSemaphore(max(1, options.test_jobs))

    @contextlib.contextmanager
    def build_slot(self) -> Iterator[None]:
        """Counts builds running at once (``peak_parallel_builds``) for the length of the block."""
        with self._lock:
            self._building += 1
            self.peak_parallel_builds = max(self.peak_parallel_builds, self._building)
        try:
            yield
        finally:
            with self._lock:
                self._building -= 1

    def test_slot(self):
        """At most ``test_jobs`` smoke tests at once: hold this around one."""
        return self._testing

    def say(self, name: str, text: str) -> None:
        """Print one event line for image ``name`` and show it on the image's progress line."""
        self.console.print(f"[bold]{name}[/bold] {text}", highlight=False)
        self.show(name, text)

    def show(self, name: str, text: str) -> None:
        """Show ``text`` on the image's live progress line only."""
        if name in self.tasks:
            self.progress.update(self.tasks[name], description=f"{name}: {text}")

    @property
    def client(self) -> docker.DockerClient:
        """A docker-py client of this thread's own (one session per worker)."""
        if not hasattr(self._local, "client"):
            self._local.client = engine.client(self.opt.build_dir)
        return self._local.client

    def run(self) -> list[ImageReport]:
        """Run and return one report per selected image; also writes build/report.json."""
        specs = plan.select(self.matrix, self.opt.select)
        if self.opt.platforms:
            narrowed = [replace(s, platforms=tuple(p for p in s.platforms if p in self.opt.platforms)) for s in specs]
            specs = [s for s in narrowed if s.platforms]
        self.specs = {s.name: s for s in specs}
        self.reports = {s.name: ImageReport(s.name, s.parent, by_platform=self._by_platform(s)) for s in specs}
        if self.opt.dry_run:
            for s in specs:
                self.say(s.name, f"would {self.opt.stage} (parent: {s.parent or 'base ' + s.base})")
            return list(self.reports.values())
        if self.opt.space_check and self.opt.stage != "publish":
            self._check_space(specs)
        files.claim_folder(self.opt.build_dir)
        started = disk.engine_time(self.client)
        cache_before = prune.cache_ids(self.client)
        try:
            self._prepare(specs)
            with self.progress:
                self.tasks = {s.name: self.progress.add_task(f"{s.name}: waiting", total=1) for s in specs}
                self._schedule(specs)
        except KeyboardInterrupt:
            self._interrupted()
            raise
        finally:  # the BuildKit cache this run made, for `builder prune` (never raises)
            prune.record_cache(cache_before, prune.cache_ids(self.client))
        self.write_report()
        if self.opt.stage != "publish":
            self._remove_superseded(started)
        return list(self.reports.values())

    def _check_space(self, specs: list[ImageSpec]) -> None:
        """Refuse (ConfigError, one line) a run the Engine's data root or the build folder cannot hold."""
        client = self.client
        locks = {(s.name, p): lock.read(self.opt.images_dir, s.name, p) for s in specs for p in s.platforms}

        def packages(spec: ImageSpec, platform: str) -> int:
            parent = locks.get((spec.parent, platform))
            return len(set(locks[spec.name, platform].entries) - set(parent.entries if parent else ()))

        same = set() if self.opt.no_cache else disk.unchanged(specs, self._held_labels(), self._expected_labels())
        pushing = self.opt.stage == "all" and not self.opt.registry
        engine_bytes, registry_bytes = disk.estimate(specs, disk.catalog_sizes(self.opt.catalog), same, packages,
                                                     disk.BASE_SIZE, pushing)
        disk.check(disk.needs(engine_bytes, registry_bytes, engine.data_root(client), self.opt.build_dir))

    def _held_labels(self) -> dict[tuple[str, str], list[dict[str, str]]]:
        # {(image title, architecture): [labels of each local image of the builder's with them]},
        # only images tagged in the repository this run builds into: one pulled from elsewhere has
        # the labels but no BuildKit cache behind it.
        prefix = self.matrix.data.project.label_prefix
        registry = self.opt.registry or engine.LOCAL_REGISTRY
        out: dict[tuple[str, str], list[dict[str, str]]] = {}
        for row in self.client.api.images(filters={"label": f"{prefix}.cell-digest"}):
            labels = row.get("Labels") or {}
            title = labels.get("org.opencontainers.image.title", "")
            if not naming.own_tags(row.get("RepoTags") or [], naming.repository(registry, title)):
                continue
            try:
                arch = self.client.api.inspect_image(row["Id"]).get("Architecture", "")
            except docker.errors.NotFound:  # removed meanwhile
                continue
            out.setdefault((title, arch), []).append(labels)
        return out

    def _expected_labels(self):
        # The labels a build of spec made now would carry that say its inputs are the same: the cell
        # digest, every platform's lock digest (lock-digest is linux/amd64's, lock-digest-<arch> the
        # others', as templates/macros.j2 renders them) and the revision of its build contexts.
        prefix = self.matrix.data.project.label_prefix

        def expected(spec: ImageSpec) -> dict[str, str]:
            revision = build.vcs_labels([self.opt.images_dir / a for a in self.lineage(spec)])
            want = {f"{prefix}.cell-digest": f"sha256:{spec.cell_digest}",
                    f"{prefix}.lock-digest": lock.read(self.opt.images_dir, spec.name).digest,
                    "org.opencontainers.image.revision": revision["org.opencontainers.image.revision"]}
            for platform in set(self.matrix.image(spec.name).platforms) - {lock.DEFAULT_PLATFORM}:
                arch = platform.split("/")[1]
                want[f"{prefix}.lock-digest-{arch}"] = lock.read(self.opt.images_dir, spec.name, platform).digest
            return want
        return expected

    def _remove_superseded(self, started: float) -> None:
        """Remove the local builds this run superseded (:func:`builder.disk.remove_superseded`): only
        images created before the run ``started`` (epoch seconds, the Engine's clock), so a build of another run on the
        same Engine is never taken for an old one."""
        current: dict[str, set[str]] = {}
        for rep in self.reports.values():
            ids = {f.get("image_id") for f in rep.platforms.values()} | {rep.image_id}
            if rep.repository and ids - {None}:
                current.setdefault(rep.repository, set()).update(ids - {None})
        moving = tuple(self.matrix.data.tags.moving)
        label = f"{self.matrix.data.project.label_prefix}.cell-digest"
        freed = disk.remove_superseded(self.client, current, label, self.opt.keep_last, moving, started,
                                       lambda line: self.console.print(line, highlight=False, markup=False))
        if freed:
            self.console.print(f"superseded local builds removed: up to {freed / 1e9:.2f} GB", highlight=False)

    def _by_platform(self, spec: ImageSpec) -> bool:
        # Published per platform: in a run split by platform, an image the matrix builds for several
        # (one built for a single platform is published whole, with its latest, as in any run).
        return self.opt.by_platform and len(self.matrix.image(spec.name).platforms) > 1

    def _prepare(self, specs: list[ImageSpec]) -> None:
        """The registry, buildx, package sources, wheelhouse image and bases the run needs."""
        client = self.client
        registry = self.opt.registry
        if not registry:
            pushing = self.opt.stage in ("publish", "all")
            registry = engine.ensure_registry(self.opt.build_dir) if pushing else engine.LOCAL_REGISTRY
        for s in specs:
            self.reports[s.name].repository = naming.repository(registry, s.name)
        self.registry = registry
        if self.opt.stage in ("test", "all"):
            engine.ensure_compose(self.opt.build_dir)  # the smoke tests' scoring containers
        self.build_platform = engine.native_platform(client)
        if self.opt.stage != "publish":
            engine.ensure_buildx(self.opt.build_dir)
            self.sources = Sources.from_env()
            self.wheelhouse = wheelhouse_image(client, self.sources.wheelhouse)
            self.base_refs = bases.for_roots(client, self.matrix.data.bases, [s for s in specs if s.parent is None],
                                             self.opt.base_source, self.opt.build_dir / "bases", self.say,
                                             self.build_platform)

    def _schedule(self, specs: list[ImageSpec]) -> None:
        # Submit an image when its parent is ready for children; skip it when its parent failed.
        kids: dict[str | None, list[ImageSpec]] = {}
        for s in specs:
            kids.setdefault(s.parent, []).append(s)
        open_images = len(specs)
        pool = ThreadPoolExecutor(max_workers=max(1, self.opt.jobs), thread_name_prefix="image")
        try:
            for s in kids.get(None, []):
                pool.submit(self._image, s)
            while open_images:
                try:
                    event, name = self._events.get(timeout=0.5)
                except queue.Empty:
                    continue
                if event == "done":
                    open_images -= 1
                    self.progress.update(self.tasks[name], completed=1)
                    continue
                rep = self.reports[name]
                if rep.failed or rep.image_id is None:
                    for child in kids.get(name, []):
                        open_images -= self._skip(child, f"parent {name} {rep.status}", kids)
                else:
                    for s in kids.get(name, []):
                        pool.submit(self._image, s)
        except KeyboardInterrupt:
            # Stop the children (buildx cancels, pytest removes its containers), start nothing new,
            # let the running steps see the stop, then record what happened.
            children.stop_all()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)

    def _interrupted(self) -> None:
        done = {Status.PUBLISHED, Status.UNCHANGED, {"build": Status.BUILT, "test": Status.TESTED}.get(self.opt.stage)}
        for rep in self.reports.values():
            if not (rep.failed or rep.status in done):
                rep.move(Status.INTERRUPTED, rep.error or "the run was interrupted")
        self.write_report()

    def _skip(self, spec: ImageSpec, why: str, kids: dict) -> int:
        """Mark ``spec`` and its descendants skipped; return how many images that was."""
        rep = self.reports[spec.name]
        rep.move(Status.SKIPPED, why)
        self.say(spec.name, f"[yellow]skipped[/yellow]: {escape(why)}")
        self.progress.update(self.tasks[spec.name], completed=1)
        return 1 + sum(self._skip(child, f"parent {spec.name} skipped", kids) for child in kids.get(spec.name, []))

    def _image(self, spec: ImageSpec) -> None:
        """One image's steps, in a worker thread; tells the scheduler when children may start."""
        rep = self.reports[spec.name]
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._events.put(("ready", spec.name))

        try:
            if self.opt.stage == "publish":
                tags = steps.tested_image(self, spec, rep)
                release()
                if tags:
                    steps.push(self, spec, rep, tags)
                return
            builts = {p: steps.build_image(self, spec, rep, p) for p in spec.platforms}
            if rep.by_platform:
                steps.tag_by_platform(self, spec, rep, builts)
            elif steps.multi(spec):
                steps.tag_platforms(self, spec, rep, builts)
            else:
                steps.tag_image(self, spec, rep, builts[spec.platforms[0]])
            if self.opt.stage == "build":
                return
            for platform in spec.platforms:  # latest only when every platform passed
                tested = steps.smoke_test(self, spec, rep, platform)
                steps.make_sbom(self, spec, rep, platform)
            tags = steps.promote(self, spec, rep, tested)
            release()
            if self.opt.stage == "all":
                steps.push(self, spec, rep, tags)
        except children.Interrupted:
            rep.move(Status.INTERRUPTED, "the run was interrupted")
        except Exception as exc:  # isolate: record, go on with the other images
            rep.fail(str(exc) if isinstance(exc, steps.StepFailed) else f"{type(exc).__name__}: {exc}")
            self.say(spec.name, f"[red]{rep.status}[/red]: {escape(rep.error)}")
        finally:
            release()
            self._events.put(("done", spec.name))

    def lineage(self, spec: ImageSpec) -> list[str]:
        """``spec``'s name and its ancestors' names, from it up to the root image."""
        names = [spec.name]
        while spec.parent:
            spec = self.matrix.image(spec.parent)
            names.append(spec.name)
        return names

    def write_report(self) -> Path:
        """Write build/report.json ({"images": [ImageReport...]}) and return its path."""
        return report.write(self.opt.build_dir / "report.json", self.opt.stage, list(self.reports.values()),
                            jobs=self.opt.jobs, peak_parallel_builds=self.peak_parallel_builds)

    def summary(self):
        """A rich table with one row per image."""
        return report.summary(self.opt.stage, list(self.reports.values()))


