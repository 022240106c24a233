"""The steps one image goes through in a run, each a function of the previous step's result:

``build`` (bake) -> :class:`Built` -> ``tag`` (the immutable tag) -> ``smoke_test`` ->
:class:`builder.smoke.TestResult` -> ``promote`` (``latest``) -> ``push``.

A step that fails raises :class:`StepFailed` with one line; :mod:`builder.pipeline` moves the image's
status (:class:`builder.report.Status`) and goes on with the other images. ``run`` is the
:class:`builder.pipeline.Pipeline` the image belongs to: its client, matrix, options and event lines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import docker
from rich.markup import escape

from builder import bake, build, children, engine, files, inputs, lock, naming, publish, render, sbom, smoke, tag
from builder.compat import DEFAULT_PLATFORM
from builder.expand import ImageSpec
from builder.report import ImageReport, Status


class StepFailed(Exception):
    """A step failed; the message is the one line the report and the event line show."""


@dataclass
class Built:
    """A built image: its id (``sha256:<hex>``) and the temporary tag bake gave it."""

    image_id: str
    temporary: str


def _stop_if_interrupted() -> None:
    if children.stopping():
        raise children.Interrupted("the run was interrupted")


def multi(spec: ImageSpec) -> bool:
    """True for an image built for more than one platform (published as an image index)."""
    return len(spec.platforms) > 1


def record(rep: ImageReport, spec: ImageSpec, platform: str, **fields) -> None:
    """Store a step's figures: on the report itself for linux/amd64, and per platform in
    ``rep.platforms`` for an image built for several or published per platform."""
    if platform == DEFAULT_PLATFORM:
        for k, v in fields.items():
            setattr(rep, k, v)
    if multi(spec) or rep.by_platform:
        rep.platforms.setdefault(platform, {}).update(fields)


def local_ref(rep: ImageReport, platform: str = DEFAULT_PLATFORM) -> str:
    """The local reference of an image's build for ``platform``: its per-platform tag for an image
    built for several platforms, else its immutable tag."""
    if platform in rep.platforms:
        return f"{rep.repository}:{rep.platforms[platform]['tag']}"
    return f"{rep.repository}:{rep.tags[0]}"


def _label(spec: ImageSpec, platform: str) -> str:
    # The name logs and messages use for one platform's build: <name>, or <name>-arm64.
    return spec.name if platform == DEFAULT_PLATFORM else f"{spec.name}-{lock.arch(platform)}"


def build_image(run, spec: ImageSpec, rep: ImageReport, platform: str = DEFAULT_PLATFORM) -> Built:
    """Build ``spec`` for ``platform`` through bake with a per-run override file (base or parent for
    the target and the build platform, wheelhouse, secrets, the platform). Raises StepFailed with
    the failing step's last line."""
    opt = run.opt
    target = bake.target_name(spec.name)
    args = {"WHEELHOUSE_IMAGE": run.wheelhouse}
    if spec.parent is None:
        args["BASE_IMAGE"] = run.base_refs[spec.name, platform]
        args["BUILD_BASE_IMAGE"] = run.base_refs[spec.name, run.build_platform]
    else:
        parent = run.reports[spec.parent]
        if run.build_platform not in run.specs[spec.parent].platforms:
            raise StepFailed(f"its build stage runs on {run.build_platform}, for which this run does not build "
                             f"the parent {spec.parent}: build that platform too, or run {platform} on a native runner")
        args["PARENT_IMAGE"] = local_ref(parent, platform)
        args["BUILD_PARENT_IMAGE"] = local_ref(parent, run.build_platform)
    labels = build.vcs_labels([opt.images_dir / a for a in run.lineage(spec)])
    temporary = f"build-{run.run_id}" + ("" if platform == DEFAULT_PLATFORM else f"-{lock.arch(platform)}")
    override = opt.build_dir / "bake" / f"{target}.{run.run_id}.{lock.arch(platform)}.json"
    override.parent.mkdir(parents=True, exist_ok=True)
    if platform != run.build_platform:
        engine.ensure_emulation(platform)  # apt and venv creation run under QEMU
    run.say(spec.name, "building" + ("" if platform == DEFAULT_PLATFORM else f" {platform}"))
    with run.sources.secrets() as secrets, run.build_slot():
        files.write_atomic(override, json.dumps({"target": {target: {"args": args, "secret": secrets, "platforms": [platform]}}},
                                       indent=2))
        try:
            result = build.bake(
                spec.name, target, [render.bake_path(opt.images_dir).resolve(), override.resolve()],
                opt.images_dir.resolve().parent,
                {"REGISTRY": run.registry, "TAG": temporary, "REVISION": labels["org.opencontainers.image.revision"],
                 "CREATED": labels["org.opencontainers.image.created"]},
                run.logs / f"{_label(spec, platform)}.build.log", no_cache=opt.no_cache,
                on_step=lambda line: run.show(spec.name, escape(line)))
        finally:
            override.unlink(missing_ok=True)
    record(rep, spec, platform, build_seconds=round(result.seconds, 1), build_log=str(result.log_path),
           cached_steps=result.cached_steps, steps=result.steps)
    _stop_if_interrupted()
    if not result.ok:
        raise StepFailed(f"{result.error} (log {result.log_path})")
    return Built(result.image_id, temporary)


def tag_image(run, spec: ImageSpec, rep: ImageReport, built: Built) -> str:
    """Give the built image its immutable tag (taggers read the real versions; an identical image
    keeps the tag it had) and drop the temporary one. Returns the immutable tag."""
    client = run.client
    image = client.images.get(built.image_id)
    rep.image_id, rep.size_bytes = image.id, image.attrs["Size"]
    policy = run.matrix.data.tags
    own = naming.own_tags(image.tags, rep.repository)
    immutable = tag.existing_immutable(policy, own, image.id) or tag.immutable_tag(
        policy, tag.framework_version(client, image.id, spec), tag.python_version(client, image.id), image.id)
    image.tag(rep.repository, immutable)
    client.api.remove_image(f"{rep.repository}:{built.temporary}", noprune=True)  # only the temporary tag
    rep.tags = [immutable]
    rep.move(Status.BUILT)
    run.say(spec.name, f"built {rep.repository}:{immutable} in {rep.build_seconds:.0f} s "
                       f"({rep.cached_steps}/{rep.steps} steps cached, {rep.size_bytes / 1e6:.0f} MB)")
    return immutable


def _tag_build(run, spec: ImageSpec, rep: ImageReport, platform: str, built: Built, image, own: str, **facts) -> None:
    # One platform's build (``image``, docker-py) under its own tag ``own``: bake's temporary tag
    # dropped, the build recorded.
    image.tag(rep.repository, own)
    run.client.api.remove_image(f"{rep.repository}:{built.temporary}", noprune=True)
    record(rep, spec, platform, image_id=image.id, size_bytes=image.attrs["Size"], tag=own, **facts)


def tag_platforms(run, spec: ImageSpec, rep: ImageReport, builts: dict[str, Built]) -> str:
    """Tag the builds of an image built for several platforms. The index's immutable tag is the tag
    policy filled with the versions the taggers read in the linux/amd64 image and, for the image id,
    the sha256 of every platform's image id (so it names exactly these builds); each build gets that
    tag plus ``-<arch>`` locally and in the registry. Returns the index's immutable tag."""
    client = run.client
    images = {p: client.images.get(b.image_id) for p, b in builts.items()}
    first = images[DEFAULT_PLATFORM]
    immutable = tag.index_tag(run.matrix.data.tags, tag.framework_version(client, first.id, spec),
                              tag.python_version(client, first.id), [images[p].id for p in spec.platforms])
    for platform, image in images.items():
        _tag_build(run, spec, rep, platform, builts[platform], image, f"{immutable}-{lock.arch(platform)}")
    rep.tags = [immutable]
    rep.move(Status.BUILT)
    seconds = ", ".join("%s %.0f s" % (p, rep.platforms[p]["build_seconds"]) for p in spec.platforms)
    run.say(spec.name, f"built {rep.repository}:{immutable} ({seconds})")
    return immutable


def tag_by_platform(run, spec: ImageSpec, rep: ImageReport, builts: dict[str, Built]) -> list[str]:
    """Tag each build of a run split by platform on its own: the tag policy filled with the versions
    the taggers read in that build and its own image id, plus ``-<arch>`` (``1.9.1-py3.11.2-<id>-arm64``),
    so a job needs no other platform's build to name its own. The versions go into the report for
    ``builder merge``, which names the index from them and every platform's image id. Returns the tags."""
    client = run.client
    for platform, built in builts.items():
        image = client.images.get(built.image_id)
        fw, py = tag.framework_version(client, image.id, spec), tag.python_version(client, image.id)
        own = f"{tag.immutable_tag(run.matrix.data.tags, fw, py, image.id)}-{lock.arch(platform)}"
        _tag_build(run, spec, rep, platform, built, image, own, framework_version=fw, python_version=py)
    rep.tags = [rep.platforms[p]["tag"] for p in spec.platforms]
    rep.move(Status.BUILT)
    run.say(spec.name, f"built {rep.repository}:{', '.join(rep.tags)} (per platform)")
    return rep.tags


def smoke_test(run, spec: ImageSpec, rep: ImageReport, platform: str = DEFAULT_PLATFORM) -> smoke.TestResult:
    """Run the image's smoke tests on its ``platform`` build (at most ``test_jobs`` at once; another
    platform's under QEMU). Raises StepFailed, with the scoring containers' log tails kept in the
    report, when they fail."""
    label = _label(spec, platform)
    with run.test_slot():
        run.say(spec.name, "smoke testing" + ("" if platform == DEFAULT_PLATFORM else f" {platform}"))
        t = smoke.run(spec, run.matrix.data.runtime, lock.read(run.opt.images_dir, spec.name, platform),
                      local_ref(rep, platform), run.opt.tests_root, run.logs, label=label,
                      emulated=platform != run.build_platform)
    record(rep, spec, platform, test_seconds=round(t.seconds, 1), test_outcome=t.summary, test_log=str(t.log_path),
           container_logs=[str(p) for p in t.container_logs], seconds_to_healthy=t.seconds_to_healthy)
    _stop_if_interrupted()
    if not t.ok:
        rep.container_log_tail = inputs.text_block(t.log_tail(), 1 << 20)
        raise StepFailed(f"{platform}: {t.summary} (log {t.log_path})" if multi(spec) or rep.by_platform else
                         f"{t.summary} (log {t.log_path})")
    return t


def make_sbom(run, spec: ImageSpec, rep: ImageReport, platform: str = DEFAULT_PLATFORM) -> None:
    """Write the tested image's SBOM to ``build/sbom/<name>.cdx.json`` (``<name>-<arch>`` for another
    platform; :func:`builder.sbom.generate`). Raises StepFailed: an image without its SBOM gets no
    ``latest``."""
    _stop_if_interrupted()
    out = run.opt.build_dir / "sbom" / f"{_label(spec, platform)}.cdx.json"
    try:
        made = sbom.generate(run.client, local_ref(rep, platform), spec.name, run.matrix.data.runtime.venv,
                             spec.python, out, run.opt.build_dir, run.sources, platform)
    except sbom.SbomError as exc:
        raise StepFailed(f"SBOM: {exc}") from None
    record(rep, spec, platform, sbom=made["path"], sbom_components=made["components"])
    run.say(spec.name, f"SBOM {out} ({made['components']} components)")


def promote(run, spec: ImageSpec, rep: ImageReport, tested: smoke.TestResult) -> list[str]:
    """Give an image whose smoke tests passed (on every platform) the moving tags (``latest``);
    returns its tags. Locally the linux/amd64 build gets them, another platform's ``latest-<arch>``;
    in a run split by platform every build gets ``latest-<arch>`` only (``builder merge`` moves ``latest``)."""
    moving = run.matrix.data.tags.moving
    for platform in spec.platforms:
        image = run.client.images.get(local_ref(rep, platform))
        for tag_ in moving:
            own = platform == DEFAULT_PLATFORM and not rep.by_platform
            image.tag(rep.repository, tag_ if own else f"{tag_}-{lock.arch(platform)}")
    rep.tags += ([f"{m}-{lock.arch(p)}" for p in spec.platforms for m in moving] if rep.by_platform else list(moving))
    rep.move(Status.TESTED)
    run.say(rep.name, f"[green]smoke test passed[/green] ({escape(tested.summary)}); tagged {', '.join(rep.tags)}")
    return rep.tags


def _push_sbom(run, rep: ImageReport, spec: ImageSpec, platform: str, digest: str) -> None:
    path = rep.platforms[platform]["sbom"] if multi(spec) or rep.by_platform else rep.sbom
    if path:
        try:
            record(rep, spec, platform, sbom_digest=sbom.push(run.client, rep.repository, digest, Path(path)))
        except sbom.SbomError as exc:
            raise StepFailed(f"SBOM push: {exc}") from None


def push(run, spec: ImageSpec, rep: ImageReport, tags: list[str]) -> str:
    """Push ``tags`` (immutable first, moving last) and read the digest back; for an image built for
    several platforms, push each build under its ``-<arch>`` tag, then make ``tags`` one image index
    of them (:func:`builder.publish.push_index`). Each build's SBOM goes beside it. Returns the
    digest ``tags`` name."""
    _stop_if_interrupted()
    run.say(rep.name, "pushing")
    if rep.by_platform:  # one job of a split run: each build under its own tags, no index
        pushed = False
        for platform in spec.platforms:
            arch = lock.arch(platform)
            one = publish.push(run.client, rep.repository, [t for t in tags if t.endswith(f"-{arch}")])
            pushed = pushed or one.pushed
            record(rep, spec, platform, registry_digest=one.digest)
            _push_sbom(run, rep, spec, platform, one.digest)
    elif not multi(spec):
        result = publish.push(run.client, rep.repository, tags)
        rep.registry_digest = result.digest
        _push_sbom(run, rep, spec, DEFAULT_PLATFORM, result.digest)
        pushed = result.pushed
    else:
        digests, pushed = {}, False
        for platform in spec.platforms:
            one = publish.push(run.client, rep.repository, [rep.platforms[platform]["tag"]])
            digests[platform], pushed = one.digest, pushed or one.pushed
            record(rep, spec, platform, registry_digest=one.digest)
            _push_sbom(run, rep, spec, platform, one.digest)
        index = publish.push_index(rep.repository, tags, digests)
        rep.registry_digest, pushed = index.digest, pushed or index.pushed
    rep.move(Status.PUBLISHED if pushed else Status.UNCHANGED)
    run.say(rep.name, f"[green]{rep.status}[/green] {rep.repository} {', '.join(tags)} @ "
                      + (rep.registry_digest or ", ".join(rep.platforms[p]["registry_digest"] for p in spec.platforms)))
    return rep.registry_digest


def tested_image(run, spec: ImageSpec, rep: ImageReport) -> list[str] | None:
    """For ``builder publish``: the tags of the image already tested and tagged ``latest`` (its
    newest immutable tag and the moving ones), or None (status skipped) when there is none."""
    moving = run.matrix.data.tags.moving
    try:
        image = run.client.images.get(f"{rep.repository}:{moving[0]}")
    except docker.errors.ImageNotFound:
        rep.move(Status.SKIPPED, f"no tested image {rep.repository}:{moving[0]} (run `builder test`)")
        run.say(spec.name, f"[yellow]skipped[/yellow]: {escape(rep.error)}")
        return None
    rep.image_id, rep.size_bytes = image.id, image.attrs["Size"]
    own = [t for t in naming.own_tags(image.tags, rep.repository) if t not in moving]
    if multi(spec):  # the amd64 build's "<index tag>-amd64" names the index tag and the other builds
        suffix = f"-{lock.arch(DEFAULT_PLATFORM)}"
        newest = sorted((t for t in own if t.endswith(suffix)), reverse=True)[:1]
        if not newest:
            rep.move(Status.SKIPPED, f"{rep.repository}:{moving[0]} has no per-platform tag (run `builder test`)")
            return None
        rep.tags = [newest[0][:-len(suffix)]] + list(moving)
        for platform in spec.platforms:
            one = run.client.images.get(f"{rep.repository}:{rep.tags[0]}-{lock.arch(platform)}")
            record(rep, spec, platform, image_id=one.id, size_bytes=one.attrs["Size"],
                   tag=f"{rep.tags[0]}-{lock.arch(platform)}")
    else:
        rep.tags = sorted(own, reverse=True)[:1] + list(moving)
    for platform in spec.platforms:
        out = run.opt.build_dir / "sbom" / f"{_label(spec, platform)}.cdx.json"
        made = sbom.made_for(out, run.client.images.get(local_ref(rep, platform)).id)
        if made is None:  # the test run's SBOM is gone or describes another image: make it again
            make_sbom(run, spec, rep, platform)
        else:
            record(rep, spec, platform, sbom=made["path"], sbom_components=made["components"])
    rep.move(Status.TESTED)
    return rep.tags
