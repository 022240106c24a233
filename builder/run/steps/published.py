"""What the registry publishes for an image, as the up-to-date check (:mod:`.up_to_date`) reads it:
the builds its moving tags name (:func:`published`), each checked against this run's build id (its
configuration's label), its platform and, with a signer, the run's key; and the immutable tags that
name them (:func:`tags`). Only manifests, image configurations and the tag list are read.
"""

from __future__ import annotations

from dataclasses import dataclass

from builder.engine.registry import Registry
from builder.matrix import ImageSpec
from builder.matrix.platform import Platform, oci_name
from builder.run import build_id, taggers
from builder.run.context import RunContext
from builder.run.report import ImageReport
from builder.sign import cosign


@dataclass(frozen=True)
class Found:
    """One platform's build as the registry publishes it: manifest ``digest``, ``manifest`` and
    image ``config`` (JSON objects)."""

    digest: str
    manifest: dict
    config: dict


@dataclass(frozen=True)
class Published:
    """What the registry's moving tags name for an image: ``digest`` (the image's manifest or index;
    None for one job of a split run) and each platform's :class:`Found`."""

    digest: str | None
    builds: dict[Platform, Found]


def published(ctx: RunContext, spec: ImageSpec, rep: ImageReport) -> Published | None:
    """What the registry's moving tags name for ``spec`` when it is exactly its platforms' builds,
    each labelled with its build id (``rep.build(p).build_id``) and, with a signer, signed by the
    run's key; else None. Raises RegistryError."""
    moving, publish_as = ctx.matrix.data.tags.moving, ctx.policy(rep)
    if not moving:
        return None
    if publish_as.per_platform:
        builds = {p: _at(ctx, rep, p, publish_as.local_moving(p)[0]) for p in spec.platforms}
        digest = None
    else:
        found = ctx.registry_client.manifest(rep.repository, moving[0])
        if found is None:
            return None
        digest, builds = found[0], _builds_of(ctx, spec, rep, found[1], found[0])
    if builds is None or any(b is None for b in builds.values()) or not _signed(ctx, rep, digest, builds):
        return None
    return Published(digest, builds)


def _builds_of(ctx: RunContext, spec: ImageSpec, rep: ImageReport, doc: dict, digest: str) -> dict | None:
    # The builds an image's manifest (one platform) or index (several) names, each checked.
    if not ctx.policy(rep).makes_index:
        return {spec.platforms[0]: _checked(ctx, rep, spec.platforms[0], digest, doc)}
    entries = ctx.registry_client.index_entries(doc)  # by platform name: the index may list any
    if entries is None or set(entries) != {p.name for p in spec.platforms}:
        return None
    return {p: _at(ctx, rep, p, entries[p.name]) for p in spec.platforms}


def _at(ctx: RunContext, rep: ImageReport, platform: Platform, reference: str) -> Found | None:
    # The manifest at ``reference`` (a tag, or a digest an index listed) checked (_checked).
    found = ctx.registry_client.manifest(rep.repository, reference)
    if found is None or (reference.startswith("sha256:") and found[0] != reference):
        return None
    return _checked(ctx, rep, platform, found[0], found[1])


def _checked(ctx: RunContext, rep: ImageReport, platform: Platform, digest: str, manifest: dict) -> Found | None:
    # The build when the manifest is an image of ``platform`` labelled with its build id; else
    # None. Raises RegistryError.
    if not isinstance(manifest.get("config"), dict):
        return None
    config = ctx.registry_client.config(rep.repository, manifest)
    try:
        served = oci_name(str(config.get("os", "")), str(config.get("architecture", "")), config.get("variant"))
    except TypeError:
        return None
    wanted = build_id.label(ctx.matrix.data.project.label_prefix)
    if Registry.labels(config).get(wanted) != rep.build(platform).build_id or served != platform.name:
        return None
    return Found(digest, manifest, config)


def _signed(ctx: RunContext, rep: ImageReport, digest: str | None, builds: dict[Platform, Found]) -> bool:
    # Without a signer: True. With one: its key verifies every build's signature and the index's.
    if ctx.signer is None:
        return True
    digests = {b.digest for b in builds.values()} | ({digest} if digest else set())
    return all(ctx.signer.signed(cosign.by_digest(rep.repository, d)) for d in digests)


def image_ids(ctx: RunContext, found: Published) -> dict[Platform, str]:
    """``{platform: image id}`` of ``found``'s builds, as this Engine's store names them (the
    builder's tags use it): the manifest digest on the containerd image store, the configuration's
    digest on the classic one."""
    return {p: (b.digest if ctx.containerd_store else b.manifest["config"]["digest"]) for p, b in found.builds.items()}


def tags(ctx: RunContext, rep: ImageReport, found: Published) -> tuple[str | None, dict[Platform, str]] | None:
    """``(the image's immutable tag, None for a split run's job; {platform: the build's own tag})``:
    the registry's tags of the policy's shape for ``found``'s image ids that name them (an image
    index's immutable tag names the index). None when one is missing. Raises RegistryError."""
    publish_as, ids = ctx.policy(rep), image_ids(ctx, found)
    listed = ctx.registry_client.list_tags(rep.repository)
    if publish_as.makes_index:
        immutable = _immutable(ctx, rep, listed, taggers.index_id(list(ids.values())), "", found.digest)
        own = _index_builds(ctx, rep, listed, found, immutable) if immutable else None
        return (immutable, own) if own else None
    out = {}
    for platform, image_id in ids.items():
        suffix = publish_as.build_tag("", platform)
        stem = _immutable(ctx, rep, listed, image_id, suffix, found.builds[platform].digest)
        if stem is None:
            return None
        out[platform] = stem + suffix
    return (None if publish_as.per_platform else out[next(iter(out))]), out


def _index_builds(ctx: RunContext, rep: ImageReport, listed: list[str], found: Published,
                  immutable: str) -> dict[Platform, str] | None:
    # {platform: the build's own tag}: ``<immutable>-<arch>`` as `builder all` pushes it, else (an
    # index `builder merge` made of a split run's jobs) the job's own ``<its immutable>-<arch>``;
    # each must name the build. Raises RegistryError.
    publish_as, ids, out = ctx.policy(rep), image_ids(ctx, found), {}
    for platform, b in found.builds.items():
        own = publish_as.build_tag(immutable, platform)
        if ctx.registry_client.digest(rep.repository, own) != b.digest:
            suffix = publish_as.build_tag("", platform)
            stem = _immutable(ctx, rep, listed, ids[platform], suffix, b.digest)
            if stem is None:
                return None
            own = stem + suffix
        out[platform] = own
    return out


def _immutable(ctx: RunContext, rep: ImageReport, listed: list[str], image_id: str, suffix: str,
               digest: str | None) -> str | None:
    # The newest tag of ``listed`` that is the policy's immutable tag for ``image_id`` followed by
    # ``suffix`` and names ``digest`` in the registry; returned without the suffix.
    tags = ctx.matrix.data.tags
    for candidate in sorted(listed, reverse=True):
        stem = candidate[:len(candidate) - len(suffix)] if candidate.endswith(suffix) else None
        if not stem or candidate in tags.moving or taggers.existing_immutable(tags, [stem], image_id) is None:
            continue
        if ctx.registry_client.digest(rep.repository, candidate) == digest:
            return stem
    return None
