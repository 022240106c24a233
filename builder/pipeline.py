"""The pipeline: bases -> build -> immutable tag -> smoke test -> latest -> publish -> report.

Images run concurrently (``Options.jobs`` at a time) as soon as their parent allows: a child starts
building once its parent passed its smoke test (once it was built, for ``builder build``), so a
parent's push overlaps its children's builds. A failure is isolated: an image that fails to build or
test is marked failed, never gets ``latest`` and is never pushed; its descendants are skipped; every
other image goes on. The stage modules do the work; this one only sequences them and records what
happened in ``build/report.json``.
"""

from __future__ import annotations

import fnmatch
import json
import os
import queue
import threading
import uuid
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import docker
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from builder import bake as bake_file
from builder import bases as bases_mod
from builder import build as build_mod
from builder import children, engine, publish, render, report, smoke, tag
from builder.matrix import ImageSpec, Matrix
from builder.report import ImageReport, wide_console
from builder.sources import Sources, wheelhouse_image

Stage = Literal["build", "test", "publish", "all"]

__all__ = ["Options", "Pipeline", "ImageReport", "select", "wide_console"]


@dataclass
class Options:
    """What one pipeline run does. ``registry`` is ``host:port[/namespace]``; empty means the local
    registry on 127.0.0.1:5000 (started when needed). ``select`` holds glob patterns over image
    names (their ancestors are included); empty selects every image. ``jobs`` bounds how many
    images are worked on at once (builds are mostly downloads and disk), ``test_jobs`` how many
    smoke tests run at once (they are CPU-bound: one per core by default)."""

    stage: Stage = "all"
    select: list[str] = field(default_factory=list)
    dry_run: bool = False
    registry: str = ""
    base_source: bases_mod.Source = "auto"
    images_dir: Path = Path("images")
    tests_root: Path = Path("tests/by_image")
    build_dir: Path = Path("build")
    no_cache: bool = False
    jobs: int = 8
    test_jobs: int = max(1, os.cpu_count() or 1)


def select(matrix: Matrix, patterns: list[str]) -> list[ImageSpec]:
    """The images whose names match any glob in ``patterns`` plus their ancestors, in build order.

    Raises ValueError naming a pattern that matches nothing.
    """
    specs = matrix.images()
    if not patterns:
        return specs
    chosen: set[str] = set()
    for pattern in patterns:
        hits = [s.name for s in specs if fnmatch.fnmatchcase(s.name, pattern)]
        if not hits:
            raise ValueError(f"--select {pattern!r} matches no image (see `builder list`)")
        chosen.update(hits)
    by_name = {s.name: s for s in specs}
    for name in list(chosen):
        parent = by_name[name].parent
        while parent:
            chosen.add(parent)
            parent = by_name[parent].parent
    return [s for s in specs if s.name in chosen]


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

    def say(self, name: str, text: str) -> None:
        """Print one event line for image ``name`` and show it on the image's progress line."""
        self.console.print(f"[bold]{name}[/bold] {text}", highlight=False)
        self._show(name, text)

    def _show(self, name: str, text: str) -> None:
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
        specs = select(self.matrix, self.opt.select)
        self.reports = {s.name: ImageReport(s.name, s.parent) for s in specs}
        if self.opt.dry_run:
            for s in specs:
                self.say(s.name, f"would {self.opt.stage} (parent: {s.parent or 'base ' + s.base})")
            return list(self.reports.values())
        try:
            self._prepare(specs)
            with self.progress:
                self.tasks = {s.name: self.progress.add_task(f"{s.name}: waiting", total=1) for s in specs}
                self._schedule(specs)
        except KeyboardInterrupt:
            self._interrupted()
            raise
        self.write_report()
        return list(self.reports.values())

    def _prepare(self, specs: list[ImageSpec]) -> None:
        """The registry, buildx, package sources, wheelhouse image and bases the run needs."""
        client = self.client
        registry = self.opt.registry
        if not registry:
            pushing = self.opt.stage in ("publish", "all")
            registry = engine.ensure_registry(self.opt.build_dir) if pushing else engine.LOCAL_REGISTRY
        for s in specs:
            self.reports[s.name].repository = tag.repository(registry, s.name)
        self.registry = registry
        if self.opt.stage != "publish":
            engine.ensure_buildx(self.opt.build_dir)
            self.sources = Sources.from_env()
            self.wheelhouse = wheelhouse_image(client, self.sources.wheelhouse)
            self.base_refs = self._bases(client, [s for s in specs if s.parent is None])

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
        for rep in self.reports.values():
            final = rep.failed or rep.status in ("published", "unchanged") or (
                rep.status == {"build": "built", "test": "tested"}.get(self.opt.stage))
            if not final:
                rep.status, rep.error = "interrupted", rep.error or "the run was interrupted"
        self.write_report()

    def _skip(self, spec: ImageSpec, why: str, kids: dict) -> int:
        """Mark ``spec`` and its descendants skipped; return how many images that was."""
        rep = self.reports[spec.name]
        rep.status, rep.error = "skipped", why
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
                self._publish_existing(spec, rep)
                release()
                return
            if not self._build(spec, rep) or self.opt.stage == "build":
                return
            if not self._smoke(spec, rep):
                return
            self._promote(rep)
            release()
            if self.opt.stage == "all":
                self._push(rep)
        except children.Interrupted:
            rep.status, rep.error = "interrupted", "the run was interrupted"
        except Exception as exc:  # isolate: record, go on with the other images
            if not rep.failed:
                rep.status = {"planned": "build-failed", "built": "test-failed",
                              "tested": "publish-failed"}.get(rep.status, "build-failed")
            rep.error = f"{type(exc).__name__}: {exc}"
            self.say(spec.name, f"[red]{rep.status}[/red]: {escape(rep.error)}")
        finally:
            release()
            self._events.put(("done", spec.name))

    def _bases(self, client, roots: list[ImageSpec]) -> dict[str, str]:
        """The FROM reference of each root image: its base (local, pulled or bootstrapped), or its
        CUDA image (pulled as it is, never bootstrapped)."""
        refs: dict[str, str] = {}
        by_base: dict[str, str] = {}
        for spec in roots:
            base = self.matrix.data.bases[spec.base]
            if spec.base_image != base.pull:
                bases_mod.ensure_pulled(client, spec.base_image)
                refs[spec.name] = spec.base_image
                continue
            if spec.base not in by_base:
                b = bases_mod.ensure(client, spec.base, base, self.opt.base_source, self.opt.build_dir / "bases",
                                     log=lambda m, n=spec.name: self.say(n, m))
                by_base[spec.base] = b.ref
                self.say(spec.name, f"base {spec.base}: {b.ref} ({b.how})")
            refs[spec.name] = by_base[spec.base]
        return refs

    def _build(self, spec: ImageSpec, rep: ImageReport) -> bool:
        """Build through bake, give the image its immutable tag; False when the build failed."""
        opt = self.opt
        target = bake_file.target_name(spec.name)
        args = {"WHEELHOUSE_IMAGE": self.wheelhouse}
        if spec.parent is None:
            args["BASE_IMAGE"] = self.base_refs[spec.name]
        else:
            parent = self.reports[spec.parent]
            args["PARENT_IMAGE"] = f"{parent.repository}:{parent.tags[0]}"
        labels = build_mod.vcs_labels([opt.images_dir / a for a in self._lineage(spec)])
        temporary = f"build-{self.run_id}"
        override = opt.build_dir / "bake" / f"{target}.{self.run_id}.json"
        override.parent.mkdir(parents=True, exist_ok=True)
        self.say(spec.name, "building")
        with self.sources.secrets() as secrets:
            override.write_text(json.dumps({"target": {target: {"args": args, "secret": secrets}}}, indent=2))
            with self._lock:
                self._building += 1
                self.peak_parallel_builds = max(self.peak_parallel_builds, self._building)
            try:
                result = build_mod.bake(
                    spec.name, target, [render.bake_path(opt.images_dir).resolve(), override.resolve()],
                    opt.images_dir.resolve().parent,
                    {"REGISTRY": self.registry, "TAG": temporary,
                     "REVISION": labels["org.opencontainers.image.revision"],
                     "CREATED": labels["org.opencontainers.image.created"]},
                    self.logs / f"{spec.name}.build.log", no_cache=opt.no_cache,
                    on_step=lambda line: self._show(spec.name, escape(line)))
            finally:
                with self._lock:
                    self._building -= 1
                override.unlink(missing_ok=True)
        rep.build_seconds, rep.build_log = round(result.seconds, 1), str(result.log_path)
        rep.cached_steps, rep.steps = result.cached_steps, result.steps
        if children.stopping():
            raise children.Interrupted("the run was interrupted")
        if not result.ok:
            rep.status, rep.error = "build-failed", result.error
            self.say(spec.name, f"[red]build failed[/red]: {escape(str(result.error))} (log {escape(str(result.log_path))})")
            return False
        client = self.client
        image = client.images.get(result.image_id)
        rep.image_id, rep.size_bytes = image.id, image.attrs["Size"]
        policy = self.matrix.data.tags
        own = [t.rsplit(":", 1)[1] for t in image.tags if t.rsplit(":", 1)[0] == rep.repository]
        immutable = tag.existing_immutable(policy, own, image.id) or tag.immutable_tag(
            policy, tag.framework_version(client, image.id, spec), tag.python_version(client, image.id), image.id)
        image.tag(rep.repository, immutable)
        client.api.remove_image(f"{rep.repository}:{temporary}", noprune=True)  # only the temporary tag
        rep.tags = [immutable]
        rep.status = "built"
        self.say(spec.name, f"built {rep.repository}:{immutable} in {result.seconds:.0f} s "
                            f"({result.cached_steps}/{result.steps} steps cached, {image.attrs['Size'] / 1e6:.0f} MB)")
        return True

    def _smoke(self, spec: ImageSpec, rep: ImageReport) -> bool:
        """Run the image's smoke tests; False (status test-failed, log tails kept) when they fail."""
        with self._testing:
            self.say(spec.name, "smoke testing")
            t = smoke.run(spec, f"{rep.repository}:{rep.tags[0]}", self.opt.tests_root, self.logs)
        rep.test_seconds, rep.test_outcome, rep.test_log = round(t.seconds, 1), t.summary, str(t.log_path)
        rep.container_logs = [str(p) for p in t.container_logs]
        rep.seconds_to_healthy = _healthy_seconds(self.logs / f"{spec.name}.junit.xml")
        if children.stopping():
            raise children.Interrupted("the run was interrupted")
        if t.ok:
            return True
        rep.status, rep.error = "test-failed", t.summary
        rep.container_log_tail = "".join(
            f"== {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-40:]) + "\n"
            for p in t.container_logs)
        self.say(spec.name, f"[red]smoke test failed[/red]: {escape(t.summary)} (log {escape(str(t.log_path))})")
        return False

    def _promote(self, rep: ImageReport) -> None:
        """Give a tested image the moving tags (``latest``)."""
        image = self.client.images.get(rep.image_id)
        for moving in self.matrix.data.tags.moving:
            image.tag(rep.repository, moving)
            rep.tags.append(moving)
        rep.status = "tested"
        self.say(rep.name, f"[green]smoke test passed[/green] ({escape(rep.test_outcome or '')}); tagged {', '.join(rep.tags)}")

    def _publish_existing(self, spec: ImageSpec, rep: ImageReport) -> None:
        moving = self.matrix.data.tags.moving
        try:
            image = self.client.images.get(f"{rep.repository}:{moving[0]}")
        except docker.errors.ImageNotFound:
            rep.status, rep.error = "skipped", f"no tested image {rep.repository}:{moving[0]} (run `builder test`)"
            self.say(spec.name, f"[yellow]skipped[/yellow]: {escape(rep.error)}")
            return
        rep.image_id, rep.size_bytes = image.id, image.attrs["Size"]
        own = [t.rsplit(":", 1)[1] for t in image.tags if t.rsplit(":", 1)[0] == rep.repository]
        rep.tags = sorted((t for t in own if t not in moving), reverse=True)[:1] + list(moving)
        rep.status = "tested"
        self._push(rep)

    def _push(self, rep: ImageReport) -> None:
        if children.stopping():
            raise children.Interrupted("the run was interrupted")
        self.say(rep.name, "pushing")
        result = publish.push(self.client, rep.repository, rep.tags)
        rep.registry_digest = result.digest
        rep.status = "published" if result.pushed else "unchanged"
        self.say(rep.name, f"[green]{rep.status}[/green] {rep.repository} {', '.join(rep.tags)} @ {result.digest}")

    def _lineage(self, spec: ImageSpec) -> list[str]:
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


def _healthy_seconds(junit: Path) -> float | None:
    # The smoke tests record seconds-to-healthy as a JUnit property (see tests/by_image/conftest.py).
    if not junit.exists():
        return None
    values = [float(p.get("value")) for p in ET.parse(junit).iter("property") if p.get("name") == "seconds_to_healthy"]
    return round(min(values), 2) if values else None
