"""The run's record, in one shape: :class:`RunReport` of one :class:`ImageReport` per image, each with
one :class:`PlatformBuild` per platform it was built for (``build/report.json``).

The same pydantic models describe what the pipeline records, what ``builder merge`` and
``builder catalog`` read back (:func:`builder.run.report_file.read`, strictly: extra keys refused,
nothing coerced) and what they write, so a single-platform image, an image index and one job of a
run split by platform differ only in their ``publish`` policy (:mod:`builder.run.policy`), never in
the report's shape. Sizes are bytes, durations seconds.
"""

from __future__ import annotations

import enum
import time
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from builder import files
from builder.matrix import grammar
from builder.matrix.inputs import text_block
from builder.matrix.platform import Platform

#: The longest path or other one-line text field (characters).
MAX_TEXT = 4096

ImageName = Annotated[str, BeforeValidator(grammar.image_name)]
Repository = Annotated[str, BeforeValidator(lambda v: v if v == "" else grammar.repository(v))]
Tag = Annotated[str, BeforeValidator(grammar.tag)]
Digest = Annotated[str, BeforeValidator(grammar.digest)]
Version = Annotated[str, BeforeValidator(grammar.version)]
Line = Annotated[str, Field(max_length=MAX_TEXT, pattern=r"^[^\x00-\x1f\x7f]*$")]  # a path the run wrote
#: Text of several lines (an error, a log tail): tabs and newlines, no other control character (no
#: terminal escape sequence).
Text = Annotated[str, Field(max_length=MAX_TEXT, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]*$")]
LogTail = Annotated[str, Field(max_length=1 << 20, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]*$")]
#: Numbers read back are bounded (:mod:`builder.matrix.grammar`): a count, a size in bytes, seconds.
Count = Annotated[int, Field(ge=0, le=grammar.MAX_COUNT)]
Bytes = Annotated[int, Field(ge=0, le=grammar.MAX_SIZE)]
Seconds = Annotated[float, Field(ge=0, le=grammar.MAX_SECONDS, allow_inf_nan=False)]


class Status(str, enum.Enum):
    """Where an image is in the run. The allowed moves are :data:`MOVES`; every change goes through
    :meth:`ImageReport.move`."""

    PLANNED = "planned"
    BUILT = "built"
    TESTED = "tested"
    PUBLISHED = "published"
    UNCHANGED = "unchanged"  # already published: the registry held the same manifest
    UP_TO_DATE = "up-to-date"  # not built: the registry publishes its build id, tested
    BUILD_FAILED = "build-failed"
    TEST_FAILED = "test-failed"
    PUBLISH_FAILED = "publish-failed"
    SIZE_GATE = "size-gate"  # grew more than 10 % over its catalog size (builder.run.steps.size)
    SKIPPED = "skipped"
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:
        return self.value


S = Status
#: The image status machine: planned -> built -> tested -> published|unchanged, each with its
#: failure, and size-gate (grew too much); planned -> up-to-date (the registry publishes its build
#: id); skipped (a parent failed, or nothing to publish) and interrupted from any unfinished state.
#: An image is built once every platform is: one platform's smoke test or size gate can fail first.
MOVES: dict[Status, set[Status]] = {
    S.PLANNED: {S.BUILT, S.BUILD_FAILED, S.TEST_FAILED, S.SIZE_GATE, S.SKIPPED, S.INTERRUPTED, S.TESTED,
                S.UP_TO_DATE},  # tested: `publish` of a tested image
    S.BUILT: {S.TESTED, S.TEST_FAILED, S.INTERRUPTED, S.SIZE_GATE},
    S.TESTED: {S.PUBLISHED, S.UNCHANGED, S.PUBLISH_FAILED, S.INTERRUPTED, S.SIZE_GATE},
    S.UP_TO_DATE: {S.BUILD_FAILED, S.INTERRUPTED},  # `builder build|test`: making it local failed
    S.PUBLISHED: set(), S.UNCHANGED: set(), S.BUILD_FAILED: set(), S.TEST_FAILED: set(),
    S.PUBLISH_FAILED: set(), S.SIZE_GATE: set(), S.SKIPPED: set(), S.INTERRUPTED: set(),
}
#: What a step's failure moves an image to, by the status it had.
FAILURE = {S.PLANNED: S.BUILD_FAILED, S.UP_TO_DATE: S.BUILD_FAILED, S.BUILT: S.TEST_FAILED, S.TESTED: S.PUBLISH_FAILED}
#: Statuses whose image passed its smoke test (and, but for tested, is in the registry).
PASSED = (S.TESTED, S.PUBLISHED, S.UNCHANGED, S.UP_TO_DATE)
#: Statuses of an image the registry publishes.
PUSHED = (S.PUBLISHED, S.UNCHANGED, S.UP_TO_DATE)


class _Model(BaseModel):
    # Strict for what is read back (JSON mode still takes an enum's value); assignment unchecked.
    model_config = ConfigDict(extra="forbid", strict=True)


#: What the GPU smoke tests (tests/by_image/gpu) record of a GPU image, as ``gpu.<key>`` JUnit
#: properties: the CUDA runtime, cuDNN and NCCL versions it resolves, the CUDA targets its framework
#: was built for (``arch``: ``sm_80 sm_90 compute_90``), the minimum driver (``driver-min``) and
#: where it was verified (``verified-on``: ``cpu`` until a GPU test passed, then ``gpu``).
GpuKey = Literal["cuda", "cudnn", "nccl", "arch", "driver-min", "verified-on"]
#: A GPU fact's value: a version, a list of CUDA targets, or ``cpu``/``gpu``.
GpuValue = Annotated[str, Field(max_length=400, pattern=r"^(?:[0-9]{1,6}(?:\.[0-9]{1,6}){0,3}"
                                                        r"|(?:sm|compute)_[0-9]{2,3}[a-z]?(?: (?:sm|compute)_[0-9]{2,3}[a-z]?){0,31}"
                                                        r"|cpu|gpu)$")]


class TestRecord(_Model):
    """One platform's smoke test: ``outcome`` is pytest's summary line, ``log`` its log file,
    ``container_logs`` the scoring containers' logs, ``gpu`` what the GPU tests recorded
    (:data:`GpuKey`; empty for a CPU image)."""

    __test__ = False  # not a pytest class
    outcome: Line
    seconds: Seconds
    log: Line
    container_logs: list[Line] = []
    seconds_to_healthy: Seconds | None = None
    gpu: dict[GpuKey, GpuValue] = {}

    @property
    def passed(self) -> bool:
        """True when the suite ran and nothing failed (pytest's summary line)."""
        return "passed" in self.outcome and not any(w in self.outcome for w in ("failed", "error"))


class SbomRecord(_Model):
    """One platform's CycloneDX SBOM: its file, component count, the seconds it took to make and,
    once pushed, the artifact's manifest digest."""

    path: Line
    components: Count
    seconds: Seconds | None = None
    digest: Digest | None = None


#: The predicate types a published build is attested with (:mod:`builder.sign.predicates`).
PredicateType = Literal["https://cyclonedx.org/bom", "https://slsa.dev/provenance/v1",
                        "https://in-toto.io/attestation/test-result/v0.1"]
#: A build argument's name (the Dockerfile's ARG names).
ArgName = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]{0,63}$")]


class PlatformBuild(_Model):
    """One platform's build of an image: ``tag`` is its own tag (the image's immutable tag for an
    image published as one manifest, ``<tag>-<arch>`` otherwise), ``digest`` the manifest digest
    the registry serves for it, ``framework_version``/``python_version`` what the taggers read.
    Sizes mean the same on either image store: ``uncompressed_bytes`` is the image's layers
    uncompressed (:func:`builder.engine.images.uncompressed_bytes`), ``compressed_bytes`` the
    layers the registry serves for it, once pushed. ``attestations``: the predicate types of the
    signed attestations attached to ``digest`` (:mod:`builder.run.steps.sign`). ``base`` is the
    reference the build started FROM (the base image, or the parent's tested build), ``base_digest``
    its image id, ``build_args`` what bake passed (never a secret): the provenance's inputs.
    ``build_id``: the sha256 of the build's inputs (:mod:`builder.run.build_id`), also its label."""

    platform: Platform
    image_id: Digest | None = None
    tag: Tag | None = None
    uncompressed_bytes: Bytes | None = None
    compressed_bytes: Bytes | None = None
    build_seconds: Seconds | None = None
    cached_steps: Count | None = None
    steps: Count | None = None
    build_log: Line | None = None
    framework_version: Version | None = None
    python_version: Version | None = None
    test: TestRecord | None = None
    sbom: SbomRecord | None = None
    digest: Digest | None = None
    attestations: list[PredicateType] = []
    base: Line | None = None
    base_digest: Digest | None = None
    build_args: dict[ArgName, Line] = {}
    build_id: Digest | None = None


PublishName = Literal["manifest", "index", "per-platform"]


class ImageReport(_Model):
    """One image's outcome. ``tags`` are the image's tags (immutable first, moving last) and
    ``digest`` what they name in the registry: the one build's manifest (``publish`` manifest), an
    image index of every build (index), or nothing (per-platform: one job of a run split by
    platform; each build has its own tags and digest, ``builder merge`` makes the index).
    ``status``: :class:`Status`. ``container_log_tail``: the last lines of each scoring container's
    log after a failed smoke test. ``signature``: ``signed`` once what the tags name (and each
    build) is signed, by digest, before the moving tags moved; ``sign_seconds`` what attesting and
    signing took (checks of earlier signatures included)."""

    name: ImageName
    parent: ImageName | None = None
    status: Status = Status.PLANNED
    publish: PublishName = "manifest"
    repository: Repository = ""
    tags: list[Tag] = []
    digest: Digest | None = None
    platforms: list[PlatformBuild] = []
    container_log_tail: LogTail | None = None
    error: Text | None = None
    signature: Literal["signed", "unsigned"] = "unsigned"
    sign_seconds: Seconds | None = None

    @property
    def failed(self) -> bool:
        """True for every status that ends the image's run without success."""
        return self.status in (S.BUILD_FAILED, S.TEST_FAILED, S.PUBLISH_FAILED, S.SIZE_GATE, S.SKIPPED, S.INTERRUPTED)

    def build(self, platform: Platform) -> PlatformBuild:
        """The build for ``platform`` (``linux/arm64``), added when missing."""
        for b in self.platforms:
            if b.platform == platform:
                return b
        self.platforms.append(PlatformBuild(platform=platform))
        return self.platforms[-1]

    def built(self, platform: Platform) -> PlatformBuild | None:
        """The build for ``platform``, or None."""
        return next((b for b in self.platforms if b.platform == platform), None)

    def move(self, status: Status, error: str | None = None) -> None:
        """Change the status along :data:`MOVES`. Raises ValueError for a move the machine does not have."""
        if status not in MOVES[self.status]:
            raise ValueError(f"{self.name}: status {self.status} cannot become {status}")
        self.status = status
        if error is not None:
            self.error = text_block(error, MAX_TEXT)

    def adopt(self, other: ImageReport) -> None:
        """Take every field of ``other``: the record of this image a task made on its own copy
        (:func:`builder.run.tasks.run`), whose moves the state machine already checked. Raises
        ValueError when ``other`` is another image's."""
        if other.name != self.name:
            raise ValueError(f"{self.name}: cannot take the record of {other.name}")
        for field in type(self).model_fields:
            setattr(self, field, getattr(other, field))

    def fail(self, error: str) -> None:
        """The failure of the step the image is in (build, test or publish), or interrupted."""
        self.move(FAILURE.get(self.status, S.INTERRUPTED), error)


class RunReport(_Model):
    """``build/report.json``: when and by which stage it was written, the run's figures, the images
    whose local copies the run removed when a build needed their space (``local_copies_removed``:
    the registry holds them, :class:`builder.run.space.LocalCopyRemover`) and one
    :class:`ImageReport` per image."""

    generated: Annotated[str, Field(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")] | None = None
    stage: Literal["build", "test", "publish", "all", "merge"] | None = None
    jobs: Count | None = None
    peak_parallel_builds: Count | None = None
    local_copies_removed: list[ImageName] = []
    images: list[ImageReport]


def write(path: Path, stage: str, images: list[ImageReport], local_copies_removed: list[str] | None = None,
          **figures: int) -> Path:
    """Write a :class:`RunReport` of ``images`` by ``stage`` (and run ``figures``, and the images
    whose ``local_copies_removed``) to ``path`` atomically (:func:`builder.files.write_atomic`);
    returns ``path``."""
    doc = RunReport(generated=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), stage=stage, images=images,
                    local_copies_removed=list(local_copies_removed or []), **figures)
    return files.write_atomic(path, doc.model_dump_json(indent=2, exclude_none=False) + "\n")
