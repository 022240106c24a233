"""The run's record: one :class:`ImageReport` per image, ``build/report.json`` and the summary table."""

from __future__ import annotations

import enum
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from builder import files
from builder.inputs import ConfigError, text_block


class Status(str, enum.Enum):
    """Where an image is in the run. The allowed moves are :data:`MOVES`; every change goes through
    :meth:`ImageReport.move`."""

    PLANNED = "planned"
    BUILT = "built"
    TESTED = "tested"
    PUBLISHED = "published"
    UNCHANGED = "unchanged"  # already published: the registry held the same manifest
    BUILD_FAILED = "build-failed"
    TEST_FAILED = "test-failed"
    PUBLISH_FAILED = "publish-failed"
    SKIPPED = "skipped"
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:
        return self.value


S = Status
#: The image status machine: planned -> built -> tested -> published|unchanged, each with its
#: failure; skipped (a parent failed, or nothing to publish) and interrupted from any unfinished state.
MOVES: dict[Status, set[Status]] = {
    S.PLANNED: {S.BUILT, S.BUILD_FAILED, S.SKIPPED, S.INTERRUPTED, S.TESTED},  # tested: `publish` of a tested image
    S.BUILT: {S.TESTED, S.TEST_FAILED, S.INTERRUPTED},
    S.TESTED: {S.PUBLISHED, S.UNCHANGED, S.PUBLISH_FAILED, S.INTERRUPTED},
    S.PUBLISHED: set(), S.UNCHANGED: set(), S.BUILD_FAILED: set(), S.TEST_FAILED: set(),
    S.PUBLISH_FAILED: set(), S.SKIPPED: set(), S.INTERRUPTED: set(),
}
#: What a step's failure moves an image to, by the status it had.
FAILURE = {S.PLANNED: S.BUILD_FAILED, S.BUILT: S.TEST_FAILED, S.TESTED: S.PUBLISH_FAILED}


@dataclass
class ImageReport:
    """One image's outcome, as written to build/report.json. Sizes in bytes, durations in seconds.

    ``status`` is one of planned, built, tested, published, unchanged (already published),
    build-failed, test-failed, publish-failed, skipped, interrupted (the run was stopped before
    this image was done: it got no ``latest`` and was not pushed). On a failed smoke test
    ``container_log_tail`` holds the last 100 lines of each scoring container's log (a server with
    several workers logs each one's failure). ``sbom`` is the SBOM's path (build/sbom/<name>.cdx.json),
    ``sbom_components`` its component count, ``sbom_digest`` the manifest digest of the artifact
    pushed beside the image. An image built for more than one platform has ``platforms``:
    ``{platform: {image_id, tag, size_bytes, build_seconds, test_outcome, registry_digest, sbom, ...}}``;
    its top-level ``tags`` and ``registry_digest`` are then those of the image index, the other
    top-level fields those of linux/amd64. ``by_platform`` marks one job of a run split by platform:
    every build is in ``platforms`` (with the ``framework_version`` and ``python_version`` the
    taggers read), ``tags`` are per-platform tags, and ``builder merge`` makes the index.
    """

    name: str
    parent: str | None
    status: Status = Status.PLANNED
    repository: str = ""
    tags: list[str] = field(default_factory=list)
    image_id: str | None = None
    registry_digest: str | None = None
    sbom: str | None = None
    sbom_components: int | None = None
    sbom_digest: str | None = None
    platforms: dict[str, dict] = field(default_factory=dict)
    by_platform: bool = False
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
        """True for every status that ends the image's run without success."""
        return self.status in (S.BUILD_FAILED, S.TEST_FAILED, S.PUBLISH_FAILED, S.SKIPPED, S.INTERRUPTED)

    def move(self, status: Status, error: str | None = None) -> None:
        """Change the status along :data:`MOVES`. Raises ValueError for a move the machine does not have."""
        if status not in MOVES[self.status]:
            raise ValueError(f"{self.name}: status {self.status} cannot become {status}")
        self.status = status
        if error is not None:
            self.error = text_block(error, 4096)

    def fail(self, error: str) -> None:
        """The failure of the step the image is in (build, test or publish), or interrupted."""
        self.move(FAILURE.get(self.status, S.INTERRUPTED), error)


def wide_console(**kwargs) -> Console:
    """A rich console that does not wrap report lines at 80 columns when output is not a terminal."""
    console = Console(highlight=False, **kwargs)
    if not console.is_terminal:
        console = Console(highlight=False, width=200, **kwargs)
    return console


def write(path: Path, stage: str, reports: list[ImageReport], **run: object) -> Path:
    """Write ``{"generated", "stage", <run figures>, "images": [ImageReport...]}`` to ``path``."""
    return write_entries(path, stage, [{**asdict(r), "status": str(r.status)} for r in reports], **run)


def write_entries(path: Path, stage: str, entries: list[dict], **run: object) -> Path:
    """Write report ``entries`` (:class:`ImageReport` as JSON dicts) as :func:`write` does; returns ``path``."""
    return files.write_atomic(path, json.dumps({"generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                                "stage": stage, **run, "images": entries}, indent=2) + "\n")


def read_entries(paths: list[Path], names: list[str] | None = None) -> dict[str, list[dict]]:
    """``{image name: [its entry in each report of paths that has it, in order]}`` over run reports
    (``build/report.json``), each validated by :func:`builder.report_file.read`. With ``names`` (the
    matrix's images), an entry naming another image is refused. Raises ConfigError (one line each)
    for a report that is missing, too large, too deep or not this tool's report."""
    from builder import report_file  # it imports this module

    out: dict[str, list[dict]] = {}
    for path in paths:
        for entry in report_file.read(Path(path)):
            if names is not None and entry["name"] not in names:
                raise ConfigError([f"--report: {path}: image {entry['name']} is not in the matrix"])
            out.setdefault(entry["name"], []).append(entry)
    return out


def refuse_foreign(path: Path) -> None:
    """Raise ConfigError when ``path`` is a symlink or an existing file that is not a run report:
    the tool never replaces a file it did not write."""
    if path.is_symlink() or (path.exists() and not _is_report(path)):
        raise ConfigError([f"{path} exists and is not a report written by `builder`; refusing to replace it"])


def _is_report(path: Path) -> bool:
    from builder import report_file

    try:
        report_file.read(path)
    except ConfigError:
        return False
    return True


def summary(stage: str, reports: list[ImageReport]) -> Table:
    """A rich table with one row per image."""
    table = Table(title=f"builder {stage}")
    for col in ("image", "status", "tags", "size MB", "build s", "test s", "digest"):
        table.add_column(col)
    colour = {S.PUBLISHED: "green", S.UNCHANGED: "green", S.TESTED: "green", S.BUILT: "cyan", S.SKIPPED: "yellow"}
    for r in reports:
        c = colour.get(r.status, "red")
        table.add_row(r.name, f"[{c}]{r.status}[/{c}]", ", ".join(r.tags),
                      f"{r.size_bytes / 1e6:.0f}" if r.size_bytes else "",
                      f"{r.build_seconds:.0f}" if r.build_seconds is not None else "",
                      f"{r.test_seconds:.0f}" if r.test_seconds is not None else "",
                      (r.registry_digest or "")[:19])
    return table
