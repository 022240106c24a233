"""The run's record: one :class:`ImageReport` per image, ``build/report.json`` and the summary table."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table


@dataclass
class ImageReport:
    """One image's outcome, as written to build/report.json. Sizes in bytes, durations in seconds.

    ``status`` is one of planned, built, tested, published, unchanged (already published),
    build-failed, test-failed, publish-failed, skipped, interrupted (the run was stopped before
    this image was done: it got no ``latest`` and was not pushed). On a failed smoke test
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
        return self.status.endswith("-failed") or self.status in ("skipped", "interrupted")


def wide_console(**kwargs) -> Console:
    """A rich console that does not wrap report lines at 80 columns when output is not a terminal."""
    console = Console(highlight=False, **kwargs)
    if not console.is_terminal:
        console = Console(highlight=False, width=200, **kwargs)
    return console


def write(path: Path, stage: str, reports: list[ImageReport], **run: object) -> Path:
    """Write ``{"generated", "stage", <run figures>, "images": [ImageReport...]}`` to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                "stage": stage, **run,
                                "images": [asdict(r) for r in reports]}, indent=2) + "\n")
    return path


def summary(stage: str, reports: list[ImageReport]) -> Table:
    """A rich table with one row per image."""
    table = Table(title=f"builder {stage}")
    for col in ("image", "status", "tags", "size MB", "build s", "test s", "digest"):
        table.add_column(col)
    colour = {"published": "green", "unchanged": "green", "tested": "green", "built": "cyan", "skipped": "yellow"}
    for r in reports:
        c = colour.get(r.status, "red")
        table.add_row(r.name, f"[{c}]{r.status}[/{c}]", ", ".join(r.tags),
                      f"{r.size_bytes / 1e6:.0f}" if r.size_bytes else "",
                      f"{r.build_seconds:.0f}" if r.build_seconds is not None else "",
                      f"{r.test_seconds:.0f}" if r.test_seconds is not None else "",
                      (r.registry_digest or "")[:19])
    return table
