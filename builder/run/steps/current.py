"""Up-to-date step (issue 22): compute an image's build id (:mod:`builder.run.build_id`) and, when the
target registry already publishes it tested (and signed, when the run signs), record that image
instead of building, testing and pushing it again.

"Published tested" means the registry's moving tag (``latest``) names it: the pipeline moves that
tag only after every platform's smoke test passed and everything was pushed and signed
(:mod:`builder.run.steps.push`). Only manifests and image configurations are read (no layer is
pulled); the image is pulled, by digest, only when a child that changed builds FROM it, or when
``builder build|test`` asked for local images.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from rich.markup import escape

from builder.engine.registry import RegistryError
from builder.generate import bake, render
from builder.matrix import ImageSpec
from builder.matrix.compat import DEFAULT_PLATFORM
from builder.matrix.platform import oci_name
from builder.run import build, build_id, policy, publish, smoke, tag
from builder.run.context import Options, RunContext
from builder.run.report import ImageReport, Status
from builder.run.steps import StepFailed
from builder.sign import cosign, predicates


@dataclass(frozen=True)
class Published:
    """What the registry publishes for an image: the ``digest`` its moving tag names and, per
    platform, ``(manifest digest, manifest, image configuration)``."""

    digest: str
    builds: dict[str, tuple[str, dict, dict]]


def inputs_of(ctx: RunContext, spec: ImageSpec) -> build_id.Inputs:
    """The build id's inputs of ``spec`` in this run (:class:`builder.run.build_id.Inputs`): its
    build context and bake target, its bases' image ids (root image), its parent's build id, the
    revision and SOURCE_DATE_EPOCH it is built with, and its test folders. A test folder that is
    missing is left out (the smoke test then fails on it). Raises OSError, KeyError."""
    images = ctx.options.images_dir
    revision, epoch = build.vcs_source([images / a for a in ctx.matrix.lineage(spec.name)])
    targets = json.loads(render.bake_path(images).read_text())["target"]
    bases = {}
    if spec.parent is None:
        for platform in dict.fromkeys((*spec.platforms, ctx.build_platform)):
            ref = ctx.base_refs.get((spec.name, platform))
            bases[platform] = ctx.client.images.get(ref).id if ref else ""
    try:
        folders = smoke.folders(spec, ctx.options.tests_root)
    except FileNotFoundError:
        folders = [f for f in (ctx.options.tests_root / a for a in spec.ancestors) if f.is_dir()]
    return build_id.Inputs(
        context=build_id.folder_digests(images / spec.name), bake_target=targets[bake.target_name(spec.name)],
        bases=bases, build_platform=ctx.build_platform,
        parent=ctx.reports[spec.parent].build_id if spec.parent else None,
        args={"REVISION": revision, "SOURCE_DATE_EPOCH": str(epoch)}, builder_version=build_id.version(),
        harness=build_id.harness_digests(), tests=build_id.suite_digests(ctx.options.tests_root, folders))


def may_skip(ctx: RunContext, spec: ImageSpec, rep: ImageReport) -> str | None:
    """:func:`always_built` of the run's options for ``spec`` and its report's publish policy."""
    return always_built(ctx.options, spec, ctx.matrix.image(spec.name).platforms, rep.publish)


def always_built(opt: Options, spec: ImageSpec, matrix_platforms: tuple[str, ...], publish: str) -> str | None:
    """Why ``spec`` is built whatever the registry holds, or None when it may be up to date: asked
    to (``--force``, ``--no-cache``); one job of a run split by platform or a run narrowed from the
    image's ``matrix_platforms`` (the registry's image has other platforms); keyless signing (a
    signature then has no key to check); ``builder build|test`` without ``--registry`` (nothing to
    look in)."""
    if opt.force or opt.no_cache:
        return "--force" if opt.force else "--no-cache"
    if publish == "per-platform" or spec.platforms != matrix_platforms:
        return "the run builds only some of its platforms"
    if opt.keyless:
        return "keyless signatures cannot be checked against a key"
    if opt.stage != "all" and not opt.registry:
        return "no --registry to look in"
    return None


def up_to_date(ctx: RunContext, spec: ImageSpec, rep: ImageReport) -> bool:
    """True, with the image recorded from the registry and its status ``up-to-date``, when the
    registry's moving tag names an image of every platform of ``spec`` labelled with its build id
    (``rep.build_id``), signed by the run's key when the run signs. A registry that cannot be read
    means "not up to date" (said in one line): the image is built."""
    if rep.build_id is None or may_skip(ctx, spec, rep) is not None:
        return False
    try:
        found = _published(ctx, spec, rep)
        immutable = _immutable(ctx, rep, found) if found else None
    except RegistryError as exc:
        ctx.say(spec.name, f"[yellow]cannot look up its build id[/yellow]: {escape(str(exc))}")
        return False
    if found is None or immutable is None:
        return False
    _record(ctx, spec, rep, found, immutable)
    return True


def _published(ctx: RunContext, spec: ImageSpec, rep: ImageReport) -> Published | None:
    # What the moving tag names, when it is an image of exactly spec's platforms, each labelled
    # with the build id (and signed, with a signer). Raises RegistryError.
    registry, moving = ctx.registry_client, ctx.matrix.data.tags.moving
    found = registry.manifest(rep.repository, moving[0]) if moving else None
    if found is None:
        return None
    digest, doc = found
    if rep.publish == "index":
        listed = registry.index(rep.repository, digest)
        entries = listed[1] if listed else {}
        if set(entries) != set(spec.platforms):
            return None
        builds = {p: _platform(ctx, rep, p, entries[p]) for p in spec.platforms}
    else:
        builds = {spec.platforms[0]: _checked(ctx, rep, spec.platforms[0], digest, doc)}
    if any(b is None for b in builds.values()) or not _signed(ctx, rep, digest, builds):
        return None
    return Published(digest, builds)


def _platform(ctx: RunContext, rep: ImageReport, platform: str, digest: str) -> tuple[str, dict, dict] | None:
    # One platform's manifest of an index, read by digest and checked (_checked).
    found = ctx.registry_client.manifest(rep.repository, digest)
    return _checked(ctx, rep, platform, digest, found[1]) if found and found[0] == digest else None


def _checked(ctx: RunContext, rep: ImageReport, platform: str, digest: str, manifest: dict):
    # (digest, manifest, configuration) when the manifest is an image of ``platform`` labelled with
    # the build id; else None. Raises RegistryError.
    if "config" not in manifest:
        return None
    config = ctx.registry_client.config(rep.repository, manifest)
    labels = _labels(config)
    try:
        served = oci_name(config.get("os", ""), config.get("architecture", ""), config.get("variant"))
    except (ValueError, TypeError):
        return None
    wanted = build_id.label(ctx.matrix.data.project.label_prefix)
    if labels.get(wanted) != rep.build_id or served != platform:
        return None
    return digest, manifest, config


def _labels(config: dict) -> dict:
    # The labels of an image configuration (https://github.com/opencontainers/image-spec/blob/main/config.md).
    inner = config.get("config")
    labels = inner.get("Labels") if isinstance(inner, dict) else None
    return labels if isinstance(labels, dict) else {}


def _signed(ctx: RunContext, rep: ImageReport, digest: str, builds: dict) -> bool:
    # Without a signer: True. With one: its key verifies every build's signature and the index's.
    if ctx.signer is None:
        return True
    digests = {digest, *(b[0] for b in builds.values())}
    return all(ctx.signer.signed(cosign.by_digest(rep.repository, d)) for d in digests)


def _ids(ctx: RunContext, found: Published) -> dict[str, str]:
    # {platform: image id} in spec's platform order, as this Engine's store names the builds (the
    # builder's tags use it): the manifest digest on the containerd image store, the
    # configuration's digest on the classic one.
    return {p: (b[0] if ctx.containerd_store else b[1]["config"]["digest"]) for p, b in found.builds.items()}


def _immutable(ctx: RunContext, rep: ImageReport, found: Published) -> str | None:
    # The image's immutable tag in the registry: a tag of the policy's shape for these builds'
    # image ids (the index's combined id, :func:`builder.run.tag.index_id`) that names
    # ``found.digest``. Raises RegistryError.
    tags, ids = ctx.matrix.data.tags, _ids(ctx, found)
    image_id = tag.index_id(list(ids.values())) if rep.publish == "index" else next(iter(ids.values()))
    for candidate in sorted(ctx.registry_client.list_tags(rep.repository), reverse=True):
        if candidate in tags.moving or tag.existing_immutable(tags, [candidate], image_id) is None:
            continue
        if ctx.registry_client.digest(rep.repository, candidate) == found.digest:
            return candidate
    return None


def _record(ctx: RunContext, spec: ImageSpec, rep: ImageReport, found: Published, immutable: str) -> None:
    # The report of an up-to-date image: its tags and digests as the registry serves them.
    publish_as, ids = policy.of(rep, ctx.matrix.data.tags), _ids(ctx, found)
    prefix = ctx.matrix.data.project.label_prefix
    for platform, (digest, manifest, config) in found.builds.items():
        b = rep.build(platform)
        b.image_id, b.digest, b.tag = ids[platform], digest, publish_as.build_tag(immutable, platform)
        b.compressed_bytes = publish.layer_bytes(manifest)
        b.framework_version = _labels(config).get(f"{prefix}.framework-version")
        b.attestations = sorted(predicates.COSIGN_TYPES) if ctx.signer else []
    rep.tags = [immutable, *ctx.matrix.data.tags.moving]
    rep.digest = found.digest if rep.publish != "per-platform" else None
    rep.signature = "signed" if ctx.signer else "unsigned"
    rep.move(Status.UP_TO_DATE)
    ctx.say(spec.name, f"[green]up-to-date[/green]: {rep.repository}:{immutable} @ {found.digest} has build id "
                       f"{rep.build_id} (not built, tested or pushed)")


def make_local(ctx: RunContext, rep: ImageReport, platforms: list[str], moving: bool = False) -> None:
    """Pull each of ``platforms``' builds of the up-to-date image ``rep`` by digest (when the Engine
    lacks it) and give it its own tag, and with ``moving`` its moving tags, as a build would have.
    Raises StepFailed."""
    publish_as = policy.of(rep, ctx.matrix.data.tags)
    auth = ctx.registry_client.credentials.docker_auth()
    for platform in platforms:
        b = rep.build(platform)
        try:
            image = ctx.client.images.get(b.image_id)
        except Exception:  # docker.errors.ImageNotFound, or an Engine that cannot tell
            image = None
        try:
            if image is None:
                ctx.say(rep.name, f"pulling {rep.repository}@{b.digest}"
                                  + ("" if platform == DEFAULT_PLATFORM else f" ({platform})"))
                image = ctx.client.images.pull(rep.repository, tag=b.digest, platform=platform, auth_config=auth)
            image.tag(rep.repository, b.tag)
            for t in publish_as.local_moving(platform) if moving else []:
                image.tag(rep.repository, t)
        except Exception as exc:  # docker-py's errors: the image cannot be made local
            raise StepFailed(f"pulling the up-to-date {rep.repository}@{b.digest}: {exc}") from None


def parent_images(ctx: RunContext, spec: ImageSpec) -> None:
    """Before a child builds: make its up-to-date parent's builds local (:func:`make_local`), for the
    child's platforms and the build stage's."""
    parent = ctx.reports.get(spec.parent) if spec.parent else None
    if parent is not None and parent.status == Status.UP_TO_DATE:
        make_local(ctx, parent, list(dict.fromkeys((*spec.platforms, ctx.build_platform))))
