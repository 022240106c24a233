"""The run report file (``build/report.json``) read back as hostile input.

``builder merge`` and ``builder catalog`` read reports an earlier run (often another CI job) wrote;
a report's repository, tags and digests reach ``docker buildx imagetools`` and the registry, so
every report read passes :func:`read`: at most :data:`MAX_BYTES`, UTF-8, JSON nested at most
:data:`builder.inputs.MAX_DEPTH` levels, and the one model :class:`ReportFile` of what
:func:`builder.report.write` writes, each repository, tag, digest, platform and image name checked
against its grammar (:mod:`builder.grammar`). The written shape is unchanged: an entry mirrors
:class:`builder.report.ImageReport`, ``platforms`` maps a platform to that build's figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from builder import grammar, inputs
from builder.inputs import ConfigError
from builder.report import Status

#: Largest report read (bytes); at most one byte more is read, so ``--report /dev/zero`` ends.
MAX_BYTES = 16 << 20
#: The longest path or other one-line text field (characters).
MAX_TEXT = 4096

ImageName = Annotated[str, BeforeValidator(grammar.image_name)]
Repository = Annotated[str, BeforeValidator(lambda v: v if v == "" else grammar.repository(v))]
Tag = Annotated[str, BeforeValidator(grammar.tag)]
Digest = Annotated[str, BeforeValidator(grammar.digest)]
Platform = Annotated[str, BeforeValidator(grammar.platform)]
Version = Annotated[str, BeforeValidator(grammar.version)]
Line = Annotated[str, Field(max_length=MAX_TEXT, pattern=r"^[^\x00-\x1f\x7f]*$")]  # a path the run wrote
#: Text of several lines (an error, a log tail): tabs and newlines, no other control character (no
#: terminal escape sequence), at most ``max_length`` characters.
Text = Annotated[str, Field(max_length=MAX_TEXT, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]*$")]
LogTail = Annotated[str, Field(max_length=1 << 20, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]*$")]
Count = Annotated[int, Field(ge=0)]
Seconds = Annotated[float, Field(ge=0)]
StatusName = Literal[tuple(s.value for s in Status)]  # type: ignore[valid-type]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Figures(_Strict):
    """What a build's steps record (:func:`builder.steps.record`), on an entry and per platform."""

    image_id: Digest | None = None
    registry_digest: Digest | None = None
    sbom: Line | None = None
    sbom_components: Count | None = None
    sbom_digest: Digest | None = None
    size_bytes: Count | None = None
    build_seconds: Seconds | None = None
    cached_steps: Count | None = None
    steps: Count | None = None
    test_seconds: Seconds | None = None
    test_outcome: Line | None = None
    seconds_to_healthy: Seconds | None = None
    build_log: Line | None = None
    test_log: Line | None = None
    container_logs: list[Line] = []


class PlatformBuild(_Figures):
    """One platform's build: its own ``tag`` and the versions the taggers read in it."""

    tag: Tag | None = None
    framework_version: Version | None = None
    python_version: Version | None = None


class Entry(_Figures):
    """One image's outcome (:class:`builder.report.ImageReport`)."""

    name: ImageName
    parent: ImageName | None = None
    status: StatusName
    repository: Repository = ""
    tags: list[Tag] = []
    platforms: dict[Platform, PlatformBuild] = {}
    by_platform: bool = False
    container_log_tail: LogTail | None = None
    error: Text | None = None


class ReportFile(_Strict):
    """``{"generated", "stage", <run figures>, "images": [Entry...]}`` (:func:`builder.report.write_entries`)."""

    generated: Annotated[str, Field(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")] | None = None
    stage: Literal["build", "test", "publish", "all", "merge"] | None = None
    jobs: Count | None = None
    peak_parallel_builds: Count | None = None
    images: list[Entry]


def read(path: Path) -> list[dict]:
    """The entries of the report at ``path``, as the JSON dicts it holds (validated, unchanged: keys
    it lacks stay absent, the order stays). Raises ConfigError with one line per problem, each naming ``path`` and the key path."""
    fname = f"--report: {path}"
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError([f"{fname}: cannot read: {exc.strerror or exc}"]) from None
    if len(data) > MAX_BYTES:
        raise ConfigError([f"{fname}: larger than {MAX_BYTES} bytes; not a report written by `builder`"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([f"{fname}: not UTF-8 text; not a report written by `builder`"]) from None
    raw = inputs.load_json(text, fname)
    if not isinstance(raw, dict):
        raise ConfigError([f"{fname}: not a report written by `builder` (expected an object with an images list, "
                           f"got {type(raw).__name__})"])
    try:
        ReportFile.model_validate(raw)  # strict: nothing is coerced, so the dicts are what was checked
    except ValidationError as exc:
        raise ConfigError(inputs.pydantic_lines(fname, exc, ReportFile)[:10]) from None
    return raw["images"]
