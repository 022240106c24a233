"""Push step: every build under the tags its publish policy gives it, its SBOM beside it, attested
and signed (:mod:`builder.run.steps.sign`), then the image index the policy asks for, signed, and
only then the moving tags; and, for ``builder publish``, the image a test run left tagged
``latest``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import docker
from rich.markup import escape

from builder.engine.images import uncompressed_bytes
from builder.matrix import ImageSpec, naming
from builder.matrix.platform import DEFAULT, Platform
from builder.run import policy, publish, sbom
from builder.run.context import RunContext
from builder.run.report import ImageReport, PlatformBuild, SbomRecord, Status
from builder.run.steps import StepFailed, size, stop_if_interrupted
from builder.run.steps.sign import Signed, earlier_build, sign_build, sign_index
from builder.run.steps.test import make_sbom, sbom_path


@dataclass(frozen=True)
class PushedBuild:
    """One build pushed: the manifest ``digest`` its immutable tags name, its ``compressed_bytes``,
    its SBOM's ``sbom_digest`` (None without one), how it was ``signed`` (None: no signer), and
    whether anything was ``pushed``."""

    platform: Platform
    digest: str
    compressed_bytes: int | None
    sbom_digest: str | None
    signed: Signed | None
    pushed: bool

    def record(self, rep: ImageReport) -> None:
        """Write it on the build of its platform in ``rep``."""
        b = rep.build(self.platform)
        b.digest, b.compressed_bytes = self.digest, self.compressed_bytes
        if self.sbom_digest is not None and b.sbom is not None:
            b.sbom.digest = self.sbom_digest
        if self.signed is not None:
            self.signed.record(rep, self.platform)


@dataclass(frozen=True)
class Pushed:
    """An image published: each of its ``builds``, the ``digest`` its tags name (None for one job
    of a run split by platform), the index's signing (``index_signed``), its ``status``
    (published, or unchanged when the registry had everything) and ``signature``."""

    builds: tuple[PushedBuild, ...]
    digest: str | None
    index_signed: Signed | None
    status: Status
    signature: str

    def record(self, rep: ImageReport) -> None:
        """Write it on ``rep`` and move it to its status. Raises ValueError (the state machine)."""
        self.record_pushed(rep)
        rep.signature = self.signature  # type: ignore[assignment]
        rep.move(self.status)

    def record_pushed(self, rep: ImageReport) -> None:
        """Write the builds, the digest and the index's signing on ``rep``; not its status."""
        for b in self.builds:
            b.record(rep)
        rep.digest = self.digest
        if self.index_signed is not None:
            self.index_signed.record(rep)


def _push_build(ctx: RunContext, spec: ImageSpec, view: ImageReport, platform: Platform, tags: list[str]) -> PushedBuild:
    # One build under its immutable ``tags``, its SBOM beside it, then attested and signed (with a
    # signer); recorded on ``view``, push's own copy of the image's report.
    b = view.build(platform)
    result = publish.push(ctx.client, ctx.registry_client, view.repository, tags)
    digest = None
    if b.sbom is not None:
        try:
            digest = sbom.push(ctx.registry_client, view.repository, result.digest, Path(b.sbom.path))
        except sbom.SbomError as exc:
            raise StepFailed(f"SBOM push: {exc}") from None
    pushed = PushedBuild(platform, result.digest, result.compressed_bytes, digest, None, result.pushed)
    pushed.record(view)  # signing reads the digest
    pushed = replace(pushed, signed=sign_build(ctx, spec, view, platform))
    if pushed.signed is not None:
        pushed.signed.record(view, platform)
    return pushed


def _move(ctx: RunContext, rep: ImageReport, publish_as: policy.Manifest) -> bool:
    # The moving tags (:func:`builder.run.policy.latest_moves` over the run's builds: the pipeline
    # pushes an image once every platform of the run passed), once everything they will name is
    # signed: each build's, then the image's (an index's); each must name what was signed. True when
    # any moved. Raises PublishError.
    moves = policy.latest_moves(publish_as, rep, [b.platform for b in rep.platforms])
    if moves is None:
        raise publish.PublishError(f"{rep.repository}: the moving tags do not move: the image is {rep.status}, "
                                   f"pushed for {', '.join(b.platform.name for b in rep.platforms if b.digest)}")
    moved = False
    for platform, tags in moves.builds.items():
        if tags:
            result = publish.push(ctx.client, ctx.registry_client, rep.repository, tags)
            if result.digest != rep.build(platform).digest:
                raise publish.PublishError(f"{rep.repository}: {', '.join(tags)} would name {result.digest}, "
                                           f"not the signed build {rep.build(platform).digest}")
            moved |= result.pushed
    return publish_as.move_image(ctx.registry_client, rep, moves.image) or moved


def push(ctx: RunContext, spec: ImageSpec, rep: ImageReport) -> Pushed:
    """Publish the tested image ``rep`` (only read) in the order that keeps ``latest`` on signed,
    tested images only: each build under its policy's immutable tag, its SBOM beside it, attested
    and signed; the image index the policy makes of them, signed; only then the moving tags
    (``latest``, ``latest-<arch>``) of the builds and of the index. Reads every digest back from
    the registry. Returns what was pushed (:class:`Pushed`). Raises PublishError, or StepFailed when
    an SBOM cannot be pushed or a signature or attestation fails."""
    stop_if_interrupted()
    ctx.say(rep.name, "pushing")
    publish_as, view = ctx.policy(rep), rep.model_copy(deep=True)  # what the steps below read
    builds = tuple(_push_build(ctx, spec, view, b.platform, publish_as.fixed_tags(view, b.platform))
                   for b in list(view.platforms))
    view.digest, image_pushed = publish_as.publish_image(ctx.registry_client, view, publish_as.fixed_tags(view))
    index_signed = sign_index(ctx, view.repository, view.digest) if publish_as.makes_index else None
    size.gate_pushed(ctx, view, ctx.size_baseline)  # before latest moves
    moved = _move(ctx, view, publish_as)
    status = Status.PUBLISHED if any(b.pushed for b in builds) or image_pushed or moved else Status.UNCHANGED
    done = Pushed(builds, view.digest, index_signed, status, "signed" if ctx.signer is not None else "unsigned")
    ctx.say(rep.name, f"[green]{status}[/green] {rep.repository} {', '.join(rep.tags)} @ "
                      + (done.digest or ", ".join(f"{b.platform} {b.digest}" for b in builds)) + f" ({done.signature})")
    return done


@dataclass(frozen=True)
class TestedImage:
    """For ``builder publish``: the image a test run left tagged ``latest``, its ``tags`` and each
    build (image id, own tag, size, SBOM, and what the test run recorded of it: its smoke test, base
    and build arguments); or, with ``skipped``, why there is none."""

    __test__ = False  # not a pytest class
    tags: tuple[str, ...] = ()
    builds: tuple[PlatformBuild, ...] = ()
    skipped: str | None = None

    def record(self, rep: ImageReport) -> None:
        """Write it on ``rep`` and move it to tested (or skipped). Raises ValueError."""
        if self.skipped is not None:
            rep.move(Status.SKIPPED, self.skipped)
            return
        for b in self.builds:
            rep.platforms = [p for p in rep.platforms if p.platform != b.platform] + [b.model_copy(deep=True)]
        rep.tags = list(self.tags)
        rep.move(Status.TESTED)


def _skip(ctx: RunContext, rep: ImageReport, why: str) -> TestedImage:
    ctx.say(rep.name, f"[yellow]skipped[/yellow]: {escape(why)}")
    return TestedImage(skipped=why)


def tested_image(ctx: RunContext, spec: ImageSpec, rep: ImageReport) -> TestedImage:
    """For ``builder publish``: the builds of the image a test run left tagged ``latest`` (named by
    the linux/amd64 build's newest own tag) and their SBOMs (made again when gone or of another
    image); a :class:`TestedImage` that says why it is skipped when there is none. ``rep`` is only
    read."""
    moving, client, publish_as = ctx.matrix.data.tags.moving, ctx.client, ctx.policy(rep)
    try:
        image = client.images.get(f"{rep.repository}:{moving[0]}")
    except docker.errors.ImageNotFound:
        return _skip(ctx, rep, f"no tested image {rep.repository}:{moving[0]} (run `builder test`)")
    own = [t for t in naming.own_tags(image.tags, rep.repository) if t not in moving]
    named = sorted(filter(None, (publish_as.immutable_of(t, DEFAULT) for t in own)), reverse=True)
    if not named:
        return _skip(ctx, rep, f"{rep.repository}:{moving[0]} has no tag of its own build (run `builder test`)")
    builds = tuple(_tested_build(ctx, spec, rep, platform, publish_as.build_tag(named[0], platform))
                   for platform in spec.platforms)
    return TestedImage((named[0], *moving), builds)


def _tested_build(ctx: RunContext, spec: ImageSpec, rep: ImageReport, platform: Platform, own_tag: str) -> PlatformBuild:
    # One tested build found by its own tag: its image id, size and SBOM, and what the test run
    # recorded of this very build (earlier_build).
    image = ctx.client.images.get(f"{rep.repository}:{own_tag}")
    earlier = earlier_build(ctx, rep.name, platform, image.id)
    b = earlier.model_copy(deep=True) if earlier else PlatformBuild(platform=platform)
    b.image_id, b.tag = image.id, own_tag
    b.uncompressed_bytes = uncompressed_bytes(ctx.client, image.id)
    b.digest, b.compressed_bytes, b.attestations = None, None, []  # what this push will record
    made = sbom.made_for(sbom_path(ctx, spec, platform), image.id)
    if made is None:  # the test run's SBOM is gone or describes another image: make it again
        view = rep.model_copy(deep=True)
        view.platforms = [b]
        b.sbom = make_sbom(ctx, spec, view, platform)
    else:
        b.sbom = SbomRecord(path=made["path"], components=made["components"])
    return b
