"""Tag step: once every platform passed (each build recorded under its run tag by the scheduler's
thread, :class:`builder.run.tasks.Lane`), name the builds by the image's publish policy
(:mod:`builder.run.policy`, ``tag_builds``) and point a child's recorded base at its parent's own
tags (``rebase``); give an image whose every platform passed its moving tags (``promote``); at the
end of the run, drop the run tags (``drop_run_tags``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from rich.markup import escape

from builder.engine import children
from builder.engine.images import uncompressed_bytes
from builder.matrix import ImageSpec, naming
from builder.matrix.platform import Platform
from builder.run import taggers
from builder.run.context import RunContext
from builder.run.report import ImageReport, PlatformBuild, Status
from builder.run.steps import Built, local_ref, run_tag


class _Versions:
    """``versions(platform) -> (framework version, Python version)`` read by the taggers in that
    platform's build, once each; ``read`` holds what was read."""

    def __init__(self, ctx: RunContext, spec: ImageSpec, builts: dict[Platform, Built]):
        self.ctx, self.spec, self.builts = ctx, spec, builts
        self.read: dict[Platform, tuple[str, str]] = {}

    def __call__(self, platform: Platform) -> tuple[str, str]:
        if platform not in self.read:
            image_id, client = self.builts[platform].image_id, self.ctx.client
            self.read[platform] = (taggers.framework_version(client, image_id, self.spec),
                                   taggers.python_version(client, image_id))
        return self.read[platform]


@dataclass(frozen=True)
class NamedBuild:
    """One build named: its ``image_id``, its own ``tag``, its ``uncompressed`` size (bytes; None
    when its lane counted it) and the ``versions`` the taggers read in it (framework, Python; None
    when the policy read none)."""

    platform: Platform
    image_id: str
    tag: str
    uncompressed: int | None
    versions: tuple[str, str] | None

    def record(self, rep: ImageReport) -> None:
        """Write it on the build of its platform in ``rep``."""
        b = rep.build(self.platform)
        b.image_id, b.tag = self.image_id, self.tag
        if self.uncompressed is not None:
            b.uncompressed_bytes = self.uncompressed
        if self.versions is not None:
            b.framework_version, b.python_version = self.versions


@dataclass(frozen=True)
class Named:
    """The image's builds named: the image's ``tags`` and each build (:class:`NamedBuild`)."""

    tags: tuple[str, ...]
    builds: tuple[NamedBuild, ...]

    def record(self, rep: ImageReport) -> None:
        """Write it on ``rep``."""
        for b in self.builds:
            b.record(rep)
        rep.tags = list(self.tags)


def tag_builds(ctx: RunContext, spec: ImageSpec, rep: ImageReport, builts: dict[Platform, Built]) -> Named:
    """:func:`name_builds`, with the image's event line: it is built (its report then moves to
    built)."""
    named = name_builds(ctx, spec, rep, builts)
    view = rep.model_copy(deep=True)
    named.record(view)
    ctx.say(spec.name, f"built {rep.repository}:{', '.join(named.tags)} ({'; '.join(map(figures, view.platforms))})")
    return named


def name_builds(ctx: RunContext, spec: ImageSpec, rep: ImageReport, builts: dict[Platform, Built]) -> Named:
    """Give each build its own tag in the Engine (the policy's name for it) and return the names,
    each build's image id, its size (unless its lane counted it) and the versions the taggers read
    (``rep`` is only read). The run tags stay until the run ends (a child's build may still name
    them: :func:`drop_run_tags`). The image's tags are its immutable tag, or for a run split by
    platform each build's tag."""
    client, publish_as = ctx.client, ctx.policy(rep)
    versions = _Versions(ctx, spec, builts)
    images = {p: client.images.get(b.image_id) for p, b in builts.items()}

    def existing(platform: Platform) -> str | None:  # a tag the policy gave this very image before
        image = images[platform]
        return taggers.existing_immutable(ctx.matrix.data.tags, naming.own_tags(image.tags, rep.repository), image.id)

    image_tags, own = publish_as.build_tags({p: image.id for p, image in images.items()}, versions, existing)
    named = []
    for platform in builts:
        image, b = images[platform], rep.built(platform)
        image.tag(rep.repository, own[platform])
        counted = b is not None and b.uncompressed_bytes is not None and b.image_id == image.id  # by its lane
        named.append(NamedBuild(platform, image.id, own[platform],
                                None if counted else uncompressed_bytes(client, image.id), versions.read.get(platform)))
    return Named(tuple(image_tags), tuple(named))


@dataclass(frozen=True)
class Rebased:
    """A child's recorded parent references moved to the parent's own tags: ``refs`` maps each
    parent build's run-tag reference to its own-tag reference."""

    refs: Mapping[str, str]

    def record(self, rep: ImageReport) -> None:
        """Write it on ``rep``: each build's base and build arguments that name a run tag of the
        parent name its own tag instead."""
        for b in rep.platforms:
            b.base = self.refs.get(b.base, b.base) if b.base else b.base
            b.build_args = {k: self.refs.get(v, v) for k, v in b.build_args.items()} if b.build_args else b.build_args


def rebase(ctx: RunContext, spec: ImageSpec) -> Rebased:
    """Once the parent has its own tags: where a build of the child recorded the parent by a run tag
    (its base and its ``PARENT_IMAGE``/``BUILD_PARENT_IMAGE`` arguments, which provenance reports),
    the parent's own tag of the same build instead; a parent's build without an own tag (its image
    failed) stays recorded by its run tag."""
    parent = ctx.reports.get(spec.parent) if spec.parent else None
    if parent is None:
        return Rebased({})
    return Rebased({f"{parent.repository}:{run_tag(ctx.run_id, b.platform)}": local_ref(parent, b.platform)
                    for b in parent.platforms if b.image_id and b.tag and b.tag != run_tag(ctx.run_id, b.platform)})


def drop_run_tags(ctx: RunContext) -> None:
    """Remove this run's run tags (:func:`builder.run.steps.run_tag`) from the Engine, once no build
    of the run can name them any more. The builds of an image that failed once every platform was
    built (a smoke test, the size gate) get their own tags first (:func:`name_builds`), as a build
    that passed, but no moving tag; a build that still has no tag of its own (its image failed
    before every platform was built, or the run was stopped) is removed with its run tag (its last
    tag); the report keeps its image id and its ``tag`` becomes None. A child's recorded base then
    moves to its parent's own tags (:func:`rebase`), whatever became of the child. Never raises: a
    tag that cannot be removed is left where it is."""
    for rep in ctx.reports.values():  # build order: a parent is named before its children are rebased
        _name_failed(ctx, rep)
        spec = ctx.specs.get(rep.name)
        if spec is not None and rep.status != Status.UP_TO_DATE:
            rebase(ctx, spec).record(rep)
        for b in rep.platforms:
            if b.build_log is None:  # not built in this run (up to date, or never started)
                continue
            ref = f"{rep.repository}:{run_tag(ctx.run_id, b.platform)}"
            if b.tag == run_tag(ctx.run_id, b.platform):
                b.tag = None
            try:
                ctx.client.api.remove_image(ref, noprune=True)  # the tag; the image too when it was its last
            except Exception:  # noqa: BLE001 - docker.errors.ImageNotFound (never made) or the Engine went away
                pass


def _name_failed(ctx: RunContext, rep: ImageReport) -> None:
    # A failed image's builds, every platform built and none named yet: their own tags (never raises).
    spec, runs = ctx.specs.get(rep.name), {b.platform: run_tag(ctx.run_id, b.platform) for b in rep.platforms}
    if spec is None or rep.status not in (Status.TEST_FAILED, Status.SIZE_GATE, Status.BUILD_FAILED) \
            or children.stopping() or not rep.platforms or any(
            b.image_id is None or b.tag != runs[b.platform] for b in rep.platforms):
        return
    try:
        name_builds(ctx, spec, rep, {b.platform: Built(b.image_id, b.tag) for b in rep.platforms}).record(rep)
    except Exception as exc:  # noqa: BLE001 - docker-py's errors: the builds keep their image ids only
        ctx.events.console.print(f"{rep.name}: its failed builds were not tagged: {exc}", highlight=False, markup=False)


def figures(b: PlatformBuild) -> str:
    """A build's figures for an event line: ``linux/amd64 41 s, 10/12 steps cached, 193 MB``
    (uncompressed)."""
    seconds = f" {b.build_seconds:.0f} s," if b.build_seconds is not None else ""
    return f"{b.platform}{seconds} {b.cached_steps}/{b.steps} steps cached, {(b.uncompressed_bytes or 0) / 1e6:.0f} MB"


def promote(ctx: RunContext, spec: ImageSpec, rep: ImageReport) -> list[str]:
    """Give an image whose smoke tests passed on every platform the moving tags its policy gives
    each local build (``latest``, or ``latest-<arch>``); returns the image's tags, immutable first
    (``rep`` is only read: the image is tested with these tags)."""
    publish_as = ctx.policy(rep)
    for b in rep.platforms:
        image = ctx.client.images.get(f"{rep.repository}:{b.tag}")
        for moving in publish_as.local_moving(b.platform):
            image.tag(rep.repository, moving)
    tags = publish_as.image_tags(rep)
    outcomes = "; ".join(b.test.outcome for b in rep.platforms if b.test)
    ctx.say(rep.name, f"[green]smoke test passed[/green] ({escape(outcomes)}); tagged {', '.join(tags)}")
    return tags
