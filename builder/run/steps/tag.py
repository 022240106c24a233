"""Tag step: name the builds of an image by its publish policy (:mod:`builder.run.policy`), and give an
image whose every platform passed its moving tags (``promote``)."""

from __future__ import annotations

from rich.markup import escape

from builder.engine.images import uncompressed_bytes
from builder.matrix import ImageSpec, naming
from builder.run import policy, tag
from builder.run.context import RunContext
from builder.run.report import ImageReport, PlatformBuild, Status
from builder.run.steps import Built


class _Versions:
    """``versions(platform) -> (framework version, Python version)`` read by the taggers in that
    platform's build, once each; ``read`` holds what was read."""

    def __init__(self, ctx: RunContext, spec: ImageSpec, builts: dict[str, Built]):
        self.ctx, self.spec, self.builts = ctx, spec, builts
        self.read: dict[str, tuple[str, str]] = {}

    def __call__(self, platform: str) -> tuple[str, str]:
        if platform not in self.read:
            image_id, client = self.builts[platform].image_id, self.ctx.client
            self.read[platform] = (tag.framework_version(client, image_id, self.spec),
                                   tag.python_version(client, image_id))
        return self.read[platform]


def tag_builds(ctx: RunContext, spec: ImageSpec, rep: ImageReport, builts: dict[str, Built]) -> list[str]:
    """Give each build its own tag (the policy's name for it), drop bake's temporary tags and record
    each build's image id, size and the versions the taggers read. Returns the image's tags
    (``rep.tags``): its immutable tag, or for a run split by platform each build's tag."""
    client, publish = ctx.client, policy.of(rep, ctx.matrix.data.tags)
    versions = _Versions(ctx, spec, builts)
    images = {p: client.images.get(b.image_id) for p, b in builts.items()}

    def existing(platform: str) -> str | None:  # a tag the policy gave this very image before
        image = images[platform]
        return tag.existing_immutable(ctx.matrix.data.tags, naming.own_tags(image.tags, rep.repository), image.id)

    image_tags, own = publish.build_tags({p: image.id for p, image in images.items()}, versions, existing)
    for platform, built in builts.items():
        image = images[platform]
        image.tag(rep.repository, own[platform])
        client.api.remove_image(f"{rep.repository}:{built.temporary}", noprune=True)  # only the temporary tag
        b = rep.build(platform)
        b.image_id, b.tag = image.id, own[platform]
        b.uncompressed_bytes = uncompressed_bytes(client, image.id)
        if platform in versions.read:
            b.framework_version, b.python_version = versions.read[platform]
    rep.tags = image_tags
    rep.move(Status.BUILT)
    ctx.say(spec.name, f"built {rep.repository}:{', '.join(rep.tags)} ({'; '.join(map(_figures, rep.platforms))})")
    return rep.tags


def _figures(b: PlatformBuild) -> str:
    # "linux/amd64 41 s, 10/12 steps cached, 193 MB" (uncompressed) for the event line.
    seconds = f" {b.build_seconds:.0f} s," if b.build_seconds is not None else ""
    return f"{b.platform}{seconds} {b.cached_steps}/{b.steps} steps cached, {(b.uncompressed_bytes or 0) / 1e6:.0f} MB"


def promote(ctx: RunContext, spec: ImageSpec, rep: ImageReport) -> list[str]:
    """Give an image whose smoke tests passed on every platform the moving tags its policy gives
    each local build (``latest``, or ``latest-<arch>``); returns the image's tags, immutable first."""
    publish = policy.of(rep, ctx.matrix.data.tags)
    for b in rep.platforms:
        image = ctx.client.images.get(f"{rep.repository}:{b.tag}")
        for moving in publish.local_moving(b.platform):
            image.tag(rep.repository, moving)
    rep.tags = publish.image_tags(rep)
    rep.move(Status.TESTED)
    outcomes = "; ".join(b.test.outcome for b in rep.platforms if b.test)
    ctx.say(rep.name, f"[green]smoke test passed[/green] ({escape(outcomes)}); tagged {', '.join(rep.tags)}")
    return rep.tags
