"""The pipeline: bases -> build -> immutable tag -> smoke test -> latest -> publish -> report.

Images go in the matrix's build order. A failure is isolated: an image that fails to build or test
is marked failed, never gets ``latest`` and is never pushed; its descendants are skipped; every
other image goes on. The stage modules do the work; this one only sequences them and records
what happened in ``build/report.json``.
"""

from __future__ import annotations

import fnmatch
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from builder import bases as bases_mod
from builder import build as build_mod
from builder import engine, publish, smoke, tag
from builder.matrix import ImageSpec, Matrix
from builder.sources import Sources, serve

Stage = Literal["build", "test", "publish", "all"]


@dataclass
class Options:
    """What one pipeline run does. ``registry`` is ``host:port[/namespace]``; empty means the local
    registry on 127.0.0.1:5000 (started when needed). ``select`` holds glob patterns over image
    names (their ancestors are included); empty selects every image."""

    stage: Stage = "all"
    select: list[str] = field(default_factory=list)
    dry_run: bool = False
    registry: str = ""
    base_source: bases_mod.Source = "auto"
    images_dir: Path = Path("images")
    tests_root: Path = Path("tests/by_image")
    build_dir: Path = Path("build")
    no_cache: bool = False


@dataclass
class ImageReport:
    """One image's outcome, as written to build/report.json. Sizes in bytes, durations in seconds.

    ``status`` is one of planned, built, tested, published, unchanged (already published),
    build-failed, test-failed, publish-failed, skipped. On a failed smoke test
    ``container_log_tail`` holds the last 40 lines of each scoring container's log.
    """

    name: str
    parent: str | None
    status: str = "planned"
    repository: str = ""
    tags: list[str] = field(default_factory=list)
    image_id: str | None = None
    registry_digest: str | None = None
    size_bytes: int | None = None
    build_seconds: float | None = None
    cached_steps: int | None = None
    steps: int | None = None
    test_seconds: float | None = None
    test_outcome: str | None = None
    seconds_to_healthy: float | None = None
    build_log: str | None = None
    test_log: str | None = None
    container_logs: list[str] = field(default_factory=list)
    container_log_tail: str | None = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.status.endswith("-failed") or self.status == "skipped"


def wide_console(**kwargs) -> Console:
    """A rich console that does not wrap report lines at 80 columns when output is not a terminal."""
    console = Console(highlight=False, **kwargs)
    if not console.is_terminal:
        console = Console(highlight=False, width=200, **kwargs)
    return console


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

    def say(self, name: str, text: str) -> None:
        """Print one event line for image ``name`` and show it on the image's progress line."""
        self.console.print(f"[bold]{name}[/bold] {text}", highlight=False)
        if name in self.tasks:
            self.progress.update(self.tasks[name], description=f"{name}: {text}")

    def run(self) -> list[ImageReport]:
        """Run and return one report per selected image; also writes build/report.json."""
        specs = select(self.matrix, self.opt.select)
        self.reports = {s.name: ImageReport(s.name, s.parent) for s in specs}
        if self.opt.dry_run:
            for s in specs:
                self.say(s.name, f"would {self.opt.stage} (parent: {s.parent or 'base ' + s.base})")
            return list(self.reports.values())
        client = engine.client(self.opt.build_dir)
        registry = self.opt.registry
        if not registry:
            pushing = self.opt.stage in ("publish", "all")
            registry = engine.ensure_registry(self.opt.build_dir) if pushing else engine.LOCAL_REGISTRY
        sources = Sources.from_env()
        base_refs: dict[str, str] = {}
        with self.progress:
            self.tasks = {s.name: self.progress.add_task(f"{s.name}: waiting", total=1) for s in specs}
            for spec in specs:
                rep = self.reports[spec.name]
                rep.repository = tag.repository(registry, spec.name)
                parent = self.reports.get(spec.parent) if spec.parent else None
                if parent is not None and (parent.failed or parent.image_id is None):
                    rep.status, rep.error = "skipped", f"parent {spec.parent} {parent.status}"
                    self.say(spec.name, f"[yellow]skipped[/yellow]: {rep.error}")
                    continue
                try:
                    self._one(client, spec, rep, parent, base_refs, sources)
                except Exception as exc:  # isolate: record, go on with the other images
                    if not rep.failed:
                        rep.status = {"planned": "build-failed", "built": "test-failed",
                                      "tested": "publish-failed"}.get(rep.status, "build-failed")
                    rep.error = f"{type(exc).__name__}: {exc}"
                    self.say(spec.name, f"[red]{rep.status}[/red]: {rep.error}")
                self.progress.update(self.tasks[spec.name], completed=1)
        self.write_report()
        return list(self.reports.values())

    def _one(self, client, spec: ImageSpec, rep: ImageReport, parent: ImageReport | None,
             base_refs: dict[str, str], sources: Sources) -> None:
        opt = self.opt
        if opt.stage == "publish":
            self._publish_existing(client, spec, rep)
            return
        buildargs: dict[str, str] = {}
        if parent is None and spec.base_image != self.matrix.data.bases[spec.base].pull:
            # a CUDA base image (cuda.source: image): pulled as it is, never bootstrapped
            if spec.base_image not in base_refs:
                bases_mod.ensure_pulled(client, spec.base_image)
                base_refs[spec.base_image] = spec.base_image
            buildargs["BASE_IMAGE"] = spec.base_image
        elif parent is None:
            if spec.base not in base_refs:
                b = bases_mod.ensure(client, spec.base, self.matrix.data.bases[spec.base], opt.base_source,
                                     opt.build_dir / "bases", log=lambda m: self.say(spec.name, m))
                base_refs[spec.base] = b.ref
                self.say(spec.name, f"base {spec.base}: {b.ref} ({b.how})")
            buildargs["BASE_IMAGE"] = base_refs[spec.base]
        else:
            buildargs["PARENT_IMAGE"] = f"{parent.repository}:{parent.tags[0]}"
        contexts = [opt.images_dir / a for a in self._lineage(spec)]
        labels = build_mod.vcs_labels(contexts)
        self.say(spec.name, "building")
        with serve(sources) as sources_url:
            result = build_mod.build_image(client, spec.name, opt.images_dir / spec.name, f"{rep.repository}:build",
                                           {**buildargs, "BUILD_SOURCES_URL": sources_url}, labels,
                                           self.logs / f"{spec.name}.build.log", nocache=opt.no_cache)
        rep.build_seconds, rep.build_log = round(result.seconds, 1), str(result.log_path)
        rep.cached_steps, rep.steps = result.cached_steps, result.steps
        if not result.ok:
            rep.status, rep.error = "build-failed", result.error
            self.say(spec.name, f"[red]build failed[/red]: {result.error} (log {result.log_path})")
            return
        image = client.images.get(result.image_id)
        rep.image_id, rep.size_bytes = image.id, image.attrs["Size"]
        immutable = tag.immutable_tag(self.matrix.data.tags, tag.framework_version(client, image.id, spec),
                                      tag.python_version(client, image.id), image.id)
        image.tag(rep.repository, immutable)
        client.api.remove_image(f"{rep.repository}:build", noprune=True)  # only the temporary tag
        rep.tags = [immutable]
        rep.status = "built"
        self.say(spec.name, f"built {rep.repository}:{immutable} in {result.seconds:.0f} s "
                            f"({result.cached_steps}/{result.steps} steps cached, {image.attrs['Size'] / 1e6:.0f} MB)")
        if opt.stage == "build":
            return
        self.say(spec.name, "smoke testing")
        t = smoke.run(spec, f"{rep.repository}:{immutable}", opt.tests_root, self.logs)
        rep.test_seconds, rep.test_outcome, rep.test_log = round(t.seconds, 1), t.summary, str(t.log_path)
        rep.container_logs = [str(p) for p in t.container_logs]
        rep.seconds_to_healthy = _healthy_seconds(self.logs / f"{spec.name}.junit.xml")
        if not t.ok:
            rep.status, rep.error = "test-failed", t.summary
            rep.container_log_tail = "".join(
                f"== {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-40:]) + "\n"
                for p in t.container_logs)
            self.say(spec.name, f"[red]smoke test failed[/red]: {t.summary} (log {t.log_path})")
            return
        for moving in self.matrix.data.tags.moving:
            image.tag(rep.repository, moving)
            rep.tags.append(moving)
        rep.status = "tested"
        self.say(spec.name, f"[green]smoke test passed[/green] ({t.summary}); tagged {', '.join(rep.tags)}")
        if opt.stage == "test":
            return
        self._push(client, rep)

    def _publish_existing(self, client, spec: ImageSpec, rep: ImageReport) -> None:
        moving = self.matrix.data.tags.moving
        try:
            image = client.images.get(f"{rep.repository}:{moving[0]}")
        except Exception:
            rep.status, rep.error = "skipped", f"no tested image {rep.repository}:{moving[0]} (run `builder test`)"
            self.say(spec.name, f"[yellow]skipped[/yellow]: {rep.error}")
            return
        rep.image_id, rep.size_bytes = image.id, image.attrs["Size"]
        own = [t.rsplit(":", 1)[1] for t in image.tags if t.rsplit(":", 1)[0] == rep.repository]
        rep.tags = sorted((t for t in own if t not in moving), reverse=True)[:1] + list(moving)
        rep.status = "tested"
        self._push(client, rep)

    def _push(self, client, rep: ImageReport) -> None:
        result = publish.push(client, rep.repository, rep.tags)
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
        path = self.opt.build_dir / "report.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                    "stage": self.opt.stage,
                                    "images": [asdict(r) for r in self.reports.values()]}, indent=2) + "\n")
        return path

    def summary(self) -> Table:
        """A rich table with one row per image."""
        table = Table(title=f"builder {self.opt.stage}")
        for col in ("image", "status", "tags", "size MB", "build s", "test s", "digest"):
            table.add_column(col)
        colour = {"published": "green", "unchanged": "green", "tested": "green", "built": "cyan", "skipped": "yellow"}
        for r in self.reports.values():
            c = colour.get(r.status, "red")
            table.add_row(r.name, f"[{c}]{r.status}[/{c}]", ", ".join(r.tags),
                          f"{r.size_bytes / 1e6:.0f}" if r.size_bytes else "",
                          f"{r.build_seconds:.0f}" if r.build_seconds is not None else "",
                          f"{r.test_seconds:.0f}" if r.test_seconds is not None else "",
                          (r.registry_digest or "")[:19])
        return table


def _healthy_seconds(junit: Path) -> float | None:
    # The smoke tests record seconds-to-healthy as a JUnit property (see tests/by_image/conftest.py).
    if not junit.exists():
        return None
    import xml.etree.ElementTree as ET
    values = [float(p.get("value")) for p in ET.parse(junit).iter("property") if p.get("name") == "seconds_to_healthy"]
    return round(min(values), 2) if values else None
