"""Build step: one platform's build of an image through bake, with a per-run override file.

Reproducible images. Each build gets ``SOURCE_DATE_EPOCH`` (the commit time of the last change to
the image's inputs, :func:`builder.run.buildx.vcs_source`) and, on the containerd image store,
BuildKit's ``rewrite-timestamp``, which sets every file time in the new layers and the image's
times to it (https://github.com/moby/buildkit/blob/master/docs/build-repro.md); the build streams
into the image store as :mod:`builder.engine.export` explains, and its image id is the reproducible
manifest digest. On the classic store the build is stored with the ``image`` exporter (its image id
is the config's digest); that store recompresses layers on push, so its pushed digests are not
reproducible (measured). Without default attestations
(:data:`builder.engine.plugins.BUILDX_ENV`) nothing else in the image records when or where it was
built. The build context's files are dated SOURCE_DATE_EPOCH before each build
(:func:`date_context`), so their checkout times never reach an image.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import docker
from rich.markup import escape

from builder import engine, files
from builder.engine import debian_index, export, images
from builder.generate import apt_lock, bake, render
from builder.matrix import ImageSpec
from builder.matrix.platform import DEFAULT, Platform
from builder.run import build_id, buildx
from builder.run.context import RunContext
from builder.run.report import ImageReport, PlatformBuild
from builder.run.steps import StepFailed, label, local_ref, run_tag


@dataclass(frozen=True)
class Build:
    """One platform's build through bake, passed or not: ``image_id`` once it passed (named by its
    run tag, ``temporary``), else ``error`` (one line); what it took (``seconds``, ``log``,
    ``cached_steps`` of ``steps``); what it was built from (``args`` as bake got them, ``base`` and
    its image id ``base_digest``). Recorded on the image's report by :meth:`record` only."""

    platform: Platform
    temporary: str
    image_id: str | None = None
    error: str | None = None
    seconds: float | None = None
    log: str | None = None
    cached_steps: int | None = None
    steps: int | None = None
    args: tuple[tuple[str, str], ...] = ()
    base: str | None = None
    base_digest: str | None = None

    def record(self, b: PlatformBuild) -> None:
        """Write the build's figures, and its image id and run tag once it passed, on ``b``."""
        b.build_seconds, b.build_log, b.cached_steps, b.steps = self.seconds, self.log, self.cached_steps, self.steps
        b.build_args, b.base, b.base_digest = dict(self.args), self.base, self.base_digest
        if self.image_id is not None:
            b.image_id, b.tag = self.image_id, self.temporary


def _target(ctx: RunContext, spec: ImageSpec, platform: Platform, epoch: int, ref: str) -> dict:
    # The override of the image's bake target: its args (the base, for a root image, or the parent's
    # tested build, for the target platform and for the build stage's platform; the wheelhouse;
    # SOURCE_DATE_EPOCH), the build id label (bake merges it with the target's labels), for a child
    # the parent's tested build as its ``parent`` context (so bake
    # does not build the parent's target again), and the output storing it as ``ref``
    # (:func:`builder.engine.export.output`).
    args = {**build_args(ctx, spec, platform), "SOURCE_DATE_EPOCH": str(epoch)}
    rep = ctx.reports.get(spec.name)
    built = rep.built(platform) if rep else None
    labels = {build_id.label(ctx.matrix.data.project.label_prefix): (built.build_id if built else None) or ""}
    contexts = {bake.PARENT_CONTEXT: f"docker-image://{args['PARENT_IMAGE']}"} if spec.parent else {}
    try:
        output = export.output(ref, ctx.containerd_store, ctx.matrix.data.compression)
    except ValueError as exc:
        raise StepFailed(str(exc)) from None
    return {"args": args, "labels": labels, "platforms": [platform.name], **({"contexts": contexts} if contexts else {}),
            "output": [output], **_cache(ctx, spec, platform)}


def _cache(ctx: RunContext, spec: ImageSpec, platform: Platform) -> dict:
    # With --cache-registry: the image's and platform's cache ref in it, imported and exported with
    # every layer (mode=max, https://docs.docker.com/build/cache/backends/registry/).
    if not ctx.options.cache_registry:
        return {}
    ref = f"{ctx.options.cache_registry}/{spec.name}:{cache_tag(platform)}"
    return {"cache-from": [f"type=registry,ref={ref}"], "cache-to": [f"type=registry,ref={ref},mode=max"]}


def cache_tag(platform: Platform) -> str:
    """The tag of an image's BuildKit cache in the cache registry: ``cache-amd64``, ``cache-arm64``."""
    return f"cache-{platform.arch}"


def build_args(ctx: RunContext, spec: ImageSpec, platform: Platform) -> dict[str, str]:
    """The build arguments of ``spec``'s ``platform`` build but SOURCE_DATE_EPOCH: the wheelhouse
    image, and the base image (root image) or the parent's tested build (child) for the target
    platform and for the build stage's. Raises StepFailed when the build stage's platform has no
    base lock or parent build in this run."""
    args = {"WHEELHOUSE_IMAGE": ctx.wheelhouse}
    if spec.parent is None:
        if ctx.build_platform not in ctx.matrix.image(spec.name).platforms:  # no apt lock for its build stage
            raise StepFailed(f"its build stage runs on {ctx.build_platform}, for which it has no Debian package lock "
                             f"({apt_lock.file_name(ctx.build_platform)}): add that platform to its matrix cell")
        args["BASE_IMAGE"] = ctx.base_refs[spec.name, platform]
        args["BUILD_BASE_IMAGE"] = ctx.base_refs[spec.name, ctx.build_platform]
        return args
    if ctx.build_platform not in ctx.specs[spec.parent].platforms:
        raise StepFailed(f"its build stage runs on {ctx.build_platform}, for which this run does not build "
                         f"the parent {spec.parent}: build that platform too, or run {platform} on a native runner")
    parent = ctx.reports[spec.parent]
    args["PARENT_IMAGE"] = local_ref(parent, platform)
    args["BUILD_PARENT_IMAGE"] = local_ref(parent, ctx.build_platform)
    return args


def build_image(ctx: RunContext, spec: ImageSpec, rep: ImageReport, platform: Platform) -> Build:
    """Build ``spec`` for ``platform`` (``linux/arm64``) through bake with a per-run override file
    (base or parent for the target and the build platform, wheelhouse, secrets, the platform); reads
    ``rep`` (its repository and build id), never writes it. A build that ran and failed is a
    :class:`Build` with its ``error`` (the failing step's last line). Raises StepFailed when it
    cannot start (no base for its build stage), EngineError, OSError."""
    opt, name = ctx.options, label(spec, platform)
    target = bake.target_name(spec.name)
    revision, epoch = ctx.vcs[spec.name]
    date_context(opt.images_dir / spec.name, epoch)
    temporary = run_tag(ctx.run_id, platform)
    override = ctx.build_dir / "bake" / f"{target}.{ctx.run_id}.{name}.json"
    ref = f"{rep.repository}:{temporary}"
    override_target = _target(ctx, spec, platform, epoch, ref)
    files.make_folder(override.parent)
    if platform != ctx.build_platform:
        engine.ensure_emulation(platform)  # apt and venv creation run under QEMU
    ctx.say(spec.name, "building" + ("" if platform == DEFAULT else f" {platform}"))
    with ctx.sources.secrets() as secrets, ctx.events.build_slot(spec.name, platform):
        files.write_atomic(override, json.dumps(
            {"target": {target: {**override_target, "secret": secrets}}}, indent=2))
        try:
            result = buildx.bake(
                spec.name, target, [render.bake_path(opt.images_dir).resolve(), override.resolve()],
                opt.images_dir.resolve().parent,
                {"REGISTRY": ctx.registry, "TAG": temporary, "REVISION": revision, "CREATED": buildx.rfc3339(epoch)},
                ctx.logs / f"{name}.build.log", no_cache=opt.no_cache,
                on_step=lambda line: ctx.events.show(spec.name, escape(line)),
                load_into=ctx.client if ctx.containerd_store else None,
                reads=[Path(spec.partition(",src=")[2]) for spec in secrets])
        finally:
            override.unlink(missing_ok=True)
    return _outcome(ctx, spec, Build(platform, temporary), result, dict(override_target["args"]), ref)


def _outcome(ctx: RunContext, spec: ImageSpec, started: Build, result: buildx.BuildResult, args: dict[str, str],
             ref: str) -> Build:
    # What bake's ``result`` of ``args`` built (stored as ``ref``), or why it failed.
    done = replace(started, seconds=round(result.seconds, 1), log=str(result.log_path),
                   cached_steps=result.cached_steps, steps=result.steps, args=tuple(args.items()),
                   base=args.get("PARENT_IMAGE") or args["BASE_IMAGE"])
    try:
        done = replace(done, base_digest=ctx.client.images.get(done.base).id)
        if not result.ok:
            return replace(done, error=f"{_unserved(spec, result.log_path) or result.error} (log {result.log_path})")
        return replace(done, image_id=_loaded(ctx, ref) if ctx.containerd_store else result.image_id)
    except StepFailed as exc:
        return replace(done, error=str(exc))
    except Exception as exc:  # docker-py's errors reading the base or the build: the build's failure
        return replace(done, error=f"{type(exc).__name__}: {exc}")


def date_context(folder: Path, epoch: int) -> None:
    """Give every file of the build context ``folder`` (one the builder rendered) a modification time
    just after ``epoch``: ``epoch`` plus 1 s to one day, taken from the file's content
    (:func:`content_offset`); folders get ``epoch``. ``rewrite-timestamp`` clamps every time newer
    than SOURCE_DATE_EPOCH to it in the image, and BuildKit's cache keys of a COPY ignore times, so
    a file's checkout time never reaches an image: without dating, a fresh clone's files (newer,
    clamped) and an older working tree's (kept) gave two digests of the same commit (measured).
    The times differ by content because BuildKit sends a build context file again only when its
    size or time changed: with one time for every file, a lock edited to a pin of the same length
    (joblib 1.5.3 -> 1.5.2) before a commit kept the old lock in the build (measured)."""
    for path in (folder, *folder.rglob("*")):
        when = epoch if path.is_dir() and not path.is_symlink() else epoch + content_offset(path)
        os.utime(path, (when, when), follow_symlinks=False)


def content_offset(path: Path) -> int:
    """1 to 86400 (seconds) from the sha256 of the file at ``path`` (of a symbolic link: the path it
    names), so files of different content get different times with near certainty."""
    data = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
    return 1 + int.from_bytes(hashlib.sha256(data).digest()[:4], "big") % 86400


def _unserved(spec: ImageSpec, log_path: Path, tail_bytes: int = 1 << 16) -> str | None:
    # The one line for a root image whose apt step asked for a locked Debian version the mirror no
    # longer serves (apt's "E: Version ... was not found" in the log's last ``tail_bytes``), else None.
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - tail_bytes))
            missing = debian_index.missing_version(f.read().decode(errors="replace"))
    except OSError:
        return None
    if missing is None:
        return None
    return (f"{missing[0]}={missing[1]} (locked for {spec.name}) is no longer served by the mirror; "
            f"run `builder refresh --select {spec.name}`, then `builder render`")


def _loaded(ctx: RunContext, ref: str) -> str:
    # The image id ``ref`` names once the streamed build is loaded.
    try:
        return ctx.client.images.get(ref).id
    except docker.errors.DockerException as exc:
        raise StepFailed(f"the loaded build is not {ref}: {images.explained(exc)}") from None
