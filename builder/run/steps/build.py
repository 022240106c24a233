"""Build step: one platform's build of an image through bake, with a per-run override file."""

from __future__ import annotations

import json

from rich.markup import escape

from builder import engine, files
from builder.generate import bake, render
from builder.matrix import ImageSpec
from builder.matrix.compat import DEFAULT_PLATFORM
from builder.run import build
from builder.run.context import RunContext
from builder.run.report import ImageReport
from builder.run.steps import Built, StepFailed, label, local_ref, stop_if_interrupted


def _target(ctx: RunContext, spec: ImageSpec, platform: str) -> dict:
    # The override of the image's bake target: its args (the base, for a root image, or the parent's
    # tested build, for the target platform and for the build stage's platform; the wheelhouse), and
    # for a child the parent's tested build as its ``parent`` context, so bake does not build the
    # parent's target again.
    args = _args(ctx, spec, platform)
    contexts = {bake.PARENT_CONTEXT: f"docker-image://{args['PARENT_IMAGE']}"} if spec.parent else {}
    return {"args": args, "platforms": [platform], **({"contexts": contexts} if contexts else {})}


def _args(ctx: RunContext, spec: ImageSpec, platform: str) -> dict[str, str]:
    args = {"WHEELHOUSE_IMAGE": ctx.wheelhouse}
    if spec.parent is None:
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


def build_image(ctx: RunContext, spec: ImageSpec, rep: ImageReport, platform: str) -> Built:
    """Build ``spec`` for ``platform`` (``linux/arm64``) through bake with a per-run override file
    (base or parent for the target and the build platform, wheelhouse, secrets, the platform) and
    record the build's figures in ``rep``. Raises StepFailed with the failing step's last line."""
    opt, name = ctx.options, label(spec, platform)
    target = bake.target_name(spec.name)
    override_target = _target(ctx, spec, platform)
    labels = build.vcs_labels([opt.images_dir / a for a in ctx.matrix.lineage(spec.name)])
    temporary = f"build-{ctx.run_id}" + name[len(spec.name):]
    override = ctx.build_dir / "bake" / f"{target}.{ctx.run_id}.{name}.json"
    override.parent.mkdir(parents=True, exist_ok=True)
    if platform != ctx.build_platform:
        engine.ensure_emulation(platform)  # apt and venv creation run under QEMU
    ctx.say(spec.name, "building" + ("" if platform == DEFAULT_PLATFORM else f" {platform}"))
    with ctx.sources.secrets() as secrets, ctx.events.build_slot():
        files.write_atomic(override, json.dumps(
            {"target": {target: {**override_target, "secret": secrets}}}, indent=2))
        try:
            result = build.bake(
                spec.name, target, [render.bake_path(opt.images_dir).resolve(), override.resolve()],
                opt.images_dir.resolve().parent,
                {"REGISTRY": ctx.registry, "TAG": temporary, "REVISION": labels["org.opencontainers.image.revision"],
                 "CREATED": labels["org.opencontainers.image.created"]},
                ctx.logs / f"{name}.build.log", no_cache=opt.no_cache,
                on_step=lambda line: ctx.events.show(spec.name, escape(line)))
        finally:
            override.unlink(missing_ok=True)
    b = rep.build(platform)
    b.build_seconds, b.build_log = round(result.seconds, 1), str(result.log_path)
    b.cached_steps, b.steps = result.cached_steps, result.steps
    stop_if_interrupted()
    if not result.ok:
        raise StepFailed(f"{result.error} (log {result.log_path})")
    return Built(result.image_id, temporary)
