"""Up-to-date step: compute each platform's build id (:mod:`builder.run.build_id`) and, when
the target registry already publishes those builds tested (and signed, when the run signs), record
that image instead of building, testing and pushing it again.

"Published tested" means the registry's moving tag names the builds: ``latest`` (an image's
manifest or image index) or, for one job of a run split by platform, ``latest-<arch>``. The
pipeline moves those tags only after every platform's smoke test passed and everything was pushed
and signed (:mod:`builder.run.steps.push`). Only manifests, image configurations and the tag list
are read (no layer is pulled); the image is pulled, by digest, only when a child that changed
builds FROM it, or when ``builder build|test`` asked for local images.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from rich.markup import escape

from builder.engine.registry import Registry, RegistryError, answers
from builder.generate import bake, render
from builder.matrix import ImageSpec, grammar
from builder.matrix.platform import DEFAULT, Platform
from builder.run import build_id, policy, publish, sbom, smoke
from builder.run.context import Options, RunContext
from builder.run.report import ImageReport, SbomRecord, Status, TestRecord
from builder.run.steps import StepFailed, published
from builder.run.steps.test import sbom_path
from builder.sign import SignError, cosign, predicates


def inputs_of(ctx: RunContext, spec: ImageSpec) -> dict[Platform, build_id.Inputs]:
    """``{platform: the build id's inputs}`` of each of ``spec``'s platform builds in this run
    (:class:`builder.run.build_id.Inputs`); what every platform shares (the VCS source, the bake
    file, the build context, the builder's and the tests' digests) is read once. A test folder that
    is missing is left out (the smoke test then fails on it). Raises OSError, KeyError."""
    images = ctx.options.images_dir
    revision, epoch = ctx.vcs[spec.name]
    target = json.loads(render.bake_path(images).read_text())["target"][bake.target_name(spec.name)]
    try:
        folders = smoke.folders(spec, ctx.options.tests_root)
    except FileNotFoundError:
        folders = [f for f in (ctx.options.tests_root / a for a in spec.ancestors) if f.is_dir()]
    shared = dict(build_platform=ctx.build_platform.name, context=build_id.folder_digests(images / spec.name),
                  bake_target=target, args={"REVISION": revision, "SOURCE_DATE_EPOCH": str(epoch)},
                  builder_version=build_id.version(), builder=build_id.builder_digests(), runtime=_runtime(ctx),
                  tests=build_id.suite_digests(ctx.options.tests_root, folders), compression=ctx.matrix.data.compression)
    return {p: build_id.Inputs(platform=p.name, **_ancestry(ctx, spec, p), **shared) for p in spec.platforms}


def _ancestry(ctx: RunContext, spec: ImageSpec, platform: Platform) -> dict[str, dict[str, str]]:
    # The base image ids (a root image) or the parent's build ids (a child) for ``platform`` and
    # the build platform, by platform name: {"bases": ..., "parent": ...}.
    both = dict.fromkeys((platform, ctx.build_platform))
    if spec.parent is None:
        refs = {p: ctx.base_refs.get((spec.name, p)) for p in both}
        return {"bases": {p.name: ctx.client.images.get(ref).id if ref else "" for p, ref in refs.items()}, "parent": {}}
    builds = {p: ctx.reports[spec.parent].built(p) for p in both}
    return {"bases": {}, "parent": {p.name: (b.build_id if b else None) or "" for p, b in builds.items()}}


def _runtime(ctx: RunContext) -> dict:
    # The matrix's runtime section, with the model mount the smoke tests use (kept out of its dump).
    runtime = ctx.matrix.data.runtime
    return {**runtime.model_dump(mode="json"), "model_mount": str(runtime.model_mount)}


def may_skip(ctx: RunContext, spec: ImageSpec, rep: ImageReport) -> str | None:
    """:func:`always_built` of the run's options for ``spec`` and its report's publish policy."""
    return always_built(ctx.options, spec, ctx.matrix.image(spec.name).platforms, ctx.policy(rep))


def always_built(opt: Options, spec: ImageSpec, matrix_platforms: tuple[Platform, ...],
                 publish_as: policy.Manifest) -> str | None:
    """Why ``spec`` is built whatever the registry holds, or None when it may be up to date: asked
    to (``--force``, ``--no-cache``); a run narrowed from the image's ``matrix_platforms`` (the
    registry's image has other platforms), unless ``publish_as`` is one job of a run split by
    platform (its builds are looked up under ``latest-<arch>`` each);
    keyless signing (a signature then has no key to check); ``builder build|test`` without
    ``--registry`` (nothing to look in)."""
    if opt.force or opt.no_cache:
        return "--force" if opt.force else "--no-cache"
    if spec.platforms != matrix_platforms and not publish_as.per_platform:  # a split job looks at latest-<arch>
        return "the run builds only some of its platforms"
    if opt.keyless:
        return "keyless signatures cannot be checked against a key"
    if not opt.steps.publish and not opt.registry:
        return "no --registry to look in"
    return None


@dataclass(frozen=True)
class ServedBuild:
    """One platform's build as the registry serves it: its image id (as this Engine's store names
    it), manifest ``digest``, own ``tag``, ``compressed_bytes``, the predicate types attached to it
    (``attestations``), its SBOM (read back from the registry) and the versions the taggers read in
    it (the SBOM records them; else the framework version its label gives)."""

    platform: Platform
    image_id: str
    digest: str
    tag: str
    compressed_bytes: int | None
    attestations: tuple[str, ...]
    sbom: SbomRecord
    framework_version: str | None
    python_version: str | None
    test: TestRecord | None = None


@dataclass(frozen=True)
class UpToDate:
    """An image the registry already publishes with this run's build ids: its ``builds``, its
    ``tags``, the ``digest`` they name (None for one job of a run split by platform) and its
    ``signature``."""

    builds: tuple[ServedBuild, ...]
    tags: tuple[str, ...]
    digest: str | None
    signature: str

    def record(self, rep: ImageReport) -> None:
        """Write it on ``rep`` and move it to up-to-date. Raises ValueError (the state machine)."""
        for s in self.builds:
            b = rep.build(s.platform)
            b.image_id, b.digest, b.tag, b.compressed_bytes = s.image_id, s.digest, s.tag, s.compressed_bytes
            b.attestations, b.sbom = list(s.attestations), s.sbom.model_copy()
            b.framework_version, b.python_version = s.framework_version, s.python_version
            b.test = s.test.model_copy() if s.test is not None else None
        rep.tags, rep.digest, rep.signature = list(self.tags), self.digest, self.signature  # type: ignore[assignment]
        rep.move(Status.UP_TO_DATE)


def up_to_date(ctx: RunContext, spec: ImageSpec, rep: ImageReport) -> UpToDate | None:
    """The image as the registry publishes it (:class:`UpToDate`) when the registry's moving tags
    name builds of every platform of ``spec``, each labelled with that platform's build id
    (``rep.build(p).build_id``; ``rep`` is only read), signed by the run's key when the run signs,
    and under the immutable tags the policy gives them; else None. A registry that cannot be read
    means "not up to date" (said in one line): the image is built."""
    if any(rep.build(p).build_id is None for p in spec.platforms) or may_skip(ctx, spec, rep) is not None:
        return None
    if not answers(ctx.registry_client.host):  # one quick check, not the client's retries (minutes)
        ctx.say(spec.name, f"[yellow]cannot look up its build id[/yellow]: {ctx.registry_client.host} does not answer")
        return None
    try:
        found = published.published(ctx, spec, rep)
        tags = published.tags(ctx, rep, found) if found else None
    except RegistryError as exc:
        ctx.say(spec.name, f"[yellow]cannot look up its build id[/yellow]: {escape(str(exc))}")
        return None
    if found is None or tags is None:
        return None
    return _served(ctx, spec, rep, found, tags)


def _version(labels: dict, key: str) -> str | None:
    # A version label read from the registry, when it passes the version grammar.
    try:
        return grammar.version(labels.get(key)) if isinstance(labels.get(key), str) else None
    except ValueError:
        return None


def _served(ctx: RunContext, spec: ImageSpec, rep: ImageReport, found: published.Published,
            tags: tuple[str | None, dict[Platform, str]]) -> UpToDate | None:
    # The up-to-date image: its tags, digests and SBOMs as the registry serves them; None when a
    # build's SBOM is missing or unusable, or a split run's job cannot recover the versions its
    # taggers read (builder merge names the index from them).
    publish_as, ids, (immutable, own) = ctx.policy(rep), published.image_ids(ctx, found), tags
    prefix = ctx.matrix.data.project.label_prefix
    builds = []
    for platform, b in found.builds.items():
        got = _sbom(ctx, spec, rep, platform, ids[platform], b.digest)
        if got is None or (got[1] is None and publish_as.per_platform):
            return None
        record, versions = got
        tested = _attested_test(ctx, spec, rep, platform, b.digest) if ctx.signer else None
        if ctx.signer and tested is None:
            return None
        builds.append(ServedBuild(platform, ids[platform], b.digest, own[platform], publish.layer_bytes(b.manifest),
                                  tuple(sorted(predicates.COSIGN_TYPES)) if ctx.signer else (),  # signed last
                                  record, versions[0] if versions else _version(Registry.labels(b.config),
                                                                                f"{prefix}.framework-version"),
                                  versions[1] if versions else None, tested))
    view = rep.model_copy(deep=True)  # the policy names the image's tags from its builds'
    for s in builds:
        view.build(s.platform).tag = s.tag
    view.tags = [immutable] if immutable else []
    served = UpToDate(tuple(builds), tuple(publish_as.image_tags(view)), found.digest,
                      "signed" if ctx.signer else "unsigned")
    where = f"@ {found.digest}" if found.digest else ", ".join(f"{b.platform} @ {b.digest}" for b in builds)
    ctx.say(spec.name, f"[green]up-to-date[/green]: {rep.repository}:{served.tags[0]} {where} has these build ids "
                       "(not built, tested or pushed)")
    return served


def _sbom(ctx: RunContext, spec: ImageSpec, rep: ImageReport, platform: Platform, image_id: str,
          digest: str) -> tuple[SbomRecord, tuple[str, str] | None] | None:
    # The build's SBOM as the registry holds it (written where a fresh build writes it) and the
    # versions it records; None, said in one line, when there is none or it cannot be used.
    try:
        got = sbom.fetch(ctx.registry_client, rep.repository, digest, image_id, sbom_path(ctx, spec, platform))
    except sbom.SbomError as exc:
        ctx.say(spec.name, f"[yellow]its {platform} build's SBOM cannot be used[/yellow]: {escape(str(exc))}")
        return None
    if got is None:
        ctx.say(spec.name, f"[yellow]the registry has no SBOM of its {platform} build[/yellow] @ {digest}")
        return None
    record = SbomRecord(path=got["path"], components=got["components"], digest=got["digest"])
    return record, sbom.installed_versions(ctx.matrix.data.project.label_prefix, got["properties"])


def _attested_test(ctx: RunContext, spec: ImageSpec, rep: ImageReport, platform: Platform, digest: str) -> TestRecord | None:
    # With a signer: the smoke test's record from the build's newest test-result attestation the
    # run's key verifies (builder.sign.predicates.test_result), when it PASSED and names this
    # build; None, said in one line, otherwise (read as hostile input: the report's grammar).
    ref = cosign.by_digest(rep.repository, digest)
    try:
        statements = ctx.signer.cosign.attestations(ref, ctx.signer.public_key, predicates.COSIGN_TYPES[predicates.TEST_RESULT])
    except SignError as exc:
        ctx.say(spec.name, f"[yellow]no signed smoke-test record of its {platform} build[/yellow]: {escape(str(exc))}")
        return None
    about = [s.get("predicate") for s in predicates.about(statements, predicates.TEST_RESULT, digest)]
    found = about[-1] if about and isinstance(about[-1], dict) else {}
    tested = predicates.tested_image(found)
    notes = tested.get("annotations") if isinstance(tested.get("annotations"), dict) else {}
    try:
        record = TestRecord(outcome=notes.get("outcome"), seconds=float(notes.get("seconds")),
                            log=f"{ref} (signed test-result attestation)", gpu=notes.get("gpu") or {})
    except (TypeError, ValueError):  # pydantic's ValidationError is a ValueError
        record = None
    if found.get("result") != "PASSED" or record is None:
        ctx.say(spec.name, f"[yellow]no passed, signed smoke-test record of its {platform} build[/yellow] @ {digest}")
        return None
    return record


def make_local(ctx: RunContext, rep: ImageReport, platforms: list[Platform], moving: bool = False) -> None:
    """Pull each of ``platforms``' builds of the up-to-date image ``rep`` by digest (when the Engine
    lacks it) and give it its own tag, and with ``moving`` its moving tags, as a build would have.
    Raises StepFailed."""
    publish_as = ctx.policy(rep)
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
                                  + ("" if platform == DEFAULT else f" ({platform})"))
                image = ctx.client.images.pull(rep.repository, tag=b.digest, platform=platform.name, auth_config=auth)
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
        wanted = [p for p in dict.fromkeys((*spec.platforms, ctx.build_platform)) if parent.built(p)]
        make_local(ctx, parent, wanted)
