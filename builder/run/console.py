"""What a run prints: a console that keeps report lines whole, and the summary table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from builder.run.report import ImageReport, Status

_COLOUR = {Status.PUBLISHED: "green", Status.UNCHANGED: "green", Status.UP_TO_DATE: "green", Status.TESTED: "green", Status.BUILT: "cyan",
           Status.SKIPPED: "yellow"}


def wide_console(**kwargs) -> Console:
    """A rich console that does not wrap report lines at 80 columns when output is not a terminal."""
    console = Console(highlight=False, **kwargs)
    if not console.is_terminal:
        console = Console(highlight=False, width=200, **kwargs)
    return console


def _seconds(values: list[float | None]) -> str:
    return " / ".join(f"{v:.0f}" for v in values if v is not None)


def summary(stage: str, reports: list[ImageReport]) -> Table:
    """A rich table with one row per image: status, tags, and per platform (``/``-separated in the
    image's platform order) uncompressed size (MB), build, test and SBOM seconds; the digest its tags
    name."""
    table = Table(title=f"builder {stage}")
    for col in ("image", "status", "tags", "size MB", "build s", "test s", "SBOM s", "digest"):
        table.add_column(col)
    for r in reports:
        c = _COLOUR.get(r.status, "red")
        table.add_row(r.name, f"[{c}]{r.status}[/{c}]", ", ".join(r.tags),
                      " / ".join(f"{b.uncompressed_bytes / 1e6:.0f}" for b in r.platforms if b.uncompressed_bytes),
                      _seconds([b.build_seconds for b in r.platforms]),
                      _seconds([b.test.seconds if b.test else None for b in r.platforms]),
                      _seconds([b.sbom.seconds if b.sbom else None for b in r.platforms]),
                      (r.digest or "")[:19])
    return table
