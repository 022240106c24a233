"""Tag step: once every platform passed (each build recorded under its run tag by the scheduler's
thread, :class:`builder.run.tasks.Lane`), name the builds by the image's publish policy
(:mod:`builder.run.policy`, ``tag_builds``) and point a child's recorded base at its parent's own
tags (``rebase``); give an image whose every platform passed its moving tags (``promote``); at the
end of the run, drop the run tags (``drop_run_tags``)."""

from __future__ import annotations

from rich.markup import escape

from builder.engine import children
from builder.engine.images import uncompressed_bytes
from builder.matrix import ImageSpec, naming
from builder.run import taggers
from builder.run.context import RunContext
from builder.run.report import ImageReport, PlatformBuild, Status
from builder.run.steps import Built, local_ref, run_tag


class _Versions:
    """``versions(platform) -> (framework version, Python version)`` read by the taggers in that
    platform's build, once each; ``read`` holds what was read."""

    def __init__(self, ctx: RunContext, spec: ImageSpec, builts: dict[str, Built]):
        self.ctx, self.spec, self.builts = ctx, spec, builts
        self.read: dict[str, tuple[str, str]] = {}

    def __call__(self, platform: str) -> tuple[str, str]:
        if platform not in self.read:
            image_id, client = self.builts[platform].image_id, self.ctx.client
            self.read[platform] = (taggers.framework_version(client, image_id, self.spec),
                                   taggers.python_version(client, image_id))
        return self.read[platform]


def tag_builds(ctx: RunContext, spec: ImageSpec, rep: ImageReport, builts: dict[str, Built]) -> list[str]:
    """:func:`name_builds`, then the image is built (its status and event line). Returns its tags."""
    name_builds(ctx, spec, rep, builts)
    rep.move(Status.BUILT)
    ctx.say(spec.name, f"built {rep.repository}:{', '.join(rep.tags)} ({'; '.join(map(figures, rep.platforms))})")
    return rep.tags


def name_builds(ctx: RunContext, spec: ImageSpec, rep: ImageReport, builts: dict[str, Built]) -> list[str]:
    """Give each build its own tag (the policy's name for it) and record each build's image id, size
    (unless its lane counted it) and the versions the taggers read. The run tags stay until the run ends (a child's build may
    still name them: :func:`drop_run_tags`). Returns the image's tags (``rep.tags``): its immutable
    tag, or for a run split by platform each build's tag."""
    client, publish_as = ctx.client, ctx.policy(rep)
    versions = _Versions(ctx, spec, builts)
    images = {p: client.images.get(b.image_id) for p, b in builts.items()}

    def existing(platform: str) -> str | None:  # a tag the policy gave this very image before
        image = images[platform]
        return taggers.existing_immutable(ctx.matrix.data.tags, naming.own_tags(image.tags, rep.repository), image.id)

    image_tags, own = publish_as.build_tags({p: image.id for p, image in images.items()}, versions, existing)
    for platform, built in builts.items():
        image = images[platform]
        image.tag(rep.repository, own[platform])
        b = rep.build(platform)
        if b.uncompressed_bytes is None or b.image_id != image.id:  # its lane counted it (docker image save)
            b.uncompressed_bytes = uncompressed_bytes(client, image.id)
        b.image_id, b.tag = image.id, own[platform]
        if platform in versions.read:
            b.framework_version, b.python_version = versions.read[platform]
    rep.tags = image_tags
    return rep.tags


def rebase(ctx: RunContext, spec: ImageSpec, rep: ImageReport) -> None:
    """Once the parent has its own tags: where a build of the child ``rep`` recorded the parent by a
    run tag (its base and its ``PARENT_IMAGE``/``BUILD_PARENT_IMAGE`` arguments, which provenance
    reports), record the parent's own tag of the same build instead; a parent's build without an
    own tag (its image failed) stays recorded by its run tag."""
    parent = ctx.reports.get(spec.parent) if spec.parent else None
    if parent is None:
        return
    own = {f"{parent.repository}:{run_tag(ctx.run_id, b.platform)}": local_ref(parent, b.platform)
           for b in parent.platforms if b.image_id and b.tag and b.tag != run_tag(ctx.run_id, b.platform)}
    for b in rep.platforms:
        b.base = own.get(b.base, b.base) if b.base else b.base
        b.build_args = {k: own.get(v, v) for k, v in b.build_args.items()} if b.build_args else b.build_args


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
            rebase(ctx, spec, rep)
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
        name_builds(ctx, spec, rep, {b.platform: Built(b.image_id, b.tag) for b in rep.platforms})
    except Exception as exc:  # noqa: BLE001 - docker-py's errors: the builds keep their image ids only
        ctx.events.console.print(f"{rep.name}: its failed builds were not tagged: {exc}", highlight=False, markup=False)


def figures(b: PlatformBuild) -> str:
    """A build's figures for an event line: ``linux/amd64 41 s, 10/12 steps cached, 193 MB``
    (uncompressed)."""
    seconds = f" {b.build_seconds:.0f} s," if b.build_seconds is not None else ""
    return f"{b.platform}{seconds} {b.cached_steps}/{b.steps} steps cached, {(b.uncompressed_bytes or 0) / 1e6:.0f} MB"


def promote(ctx: RunContext, spec: ImageSpec, rep: ImageReport) -> list[str]:
    """Give an image whose smoke tests passed on every platform the moving tags its policy gives
    each local build (``latest``, or ``latest-<arch>``); returns the image's tags, immutable first."""
    publish_as = ctx.policy(rep)
    for b in rep.platforms:
        image = ctx.client.images.get(f"{rep.repository}:{b.tag}")
        for moving in publish_as.local_moving(b.platform):
            image.tag(rep.repository, moving)
    rep.tags = publish_as.image_tags(rep)
    rep.move(Status.TESTED)
    outcomes = "; ".join(b.test.outcome for b in rep.platforms if b.test)
    ctx.say(rep.name, f"[green]smoke test passed[/green] ({escape(outcomes)}); tagged {', '.join(rep.tags)}")
    return rep.tags
