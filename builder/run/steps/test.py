"""Test step: smoke-test one platform's build (:mod:`builder.run.smoke`) and make its SBOM
(:mod:`builder.run.sbom`), each recorded on the build."""

from __future__ import annotations

import time

from builder.generate import lock
from builder.matrix import ImageSpec, inputs
from builder.matrix.platform import DEFAULT
from builder.run import sbom, smoke
from builder.run.context import RunContext
from builder.run.report import ImageReport, SbomRecord, TestRecord
from builder.run.steps import StepFailed, label, local_ref, stop_if_interrupted


def smoke_test(ctx: RunContext, spec: ImageSpec, rep: ImageReport, platform: str) -> TestRecord:
    """Run the image's smoke tests on its ``platform`` build (at most ``test_jobs`` at once; another
    platform than the build platform's under QEMU) and record them on the build. Raises StepFailed,
    with the scoring containers' log tails kept in the report, when they fail."""
    with ctx.events.test_slot():
        ctx.say(spec.name, "smoke testing" + ("" if platform == DEFAULT.name else f" {platform}"))
        t = smoke.run(spec, ctx.matrix.data.runtime, lock.read(ctx.options.images_dir, spec.name, platform),
                      local_ref(rep, platform), ctx.options.tests_root, ctx.logs, label=label(spec, platform),
                      emulated=platform != ctx.build_platform)
    record = TestRecord(outcome=inputs.one_line(t.summary), seconds=round(t.seconds, 1), log=str(t.log_path),
                        container_logs=[str(p) for p in t.container_logs], seconds_to_healthy=t.seconds_to_healthy,
                        gpu=t.gpu)
    rep.build(platform).test = record
    stop_if_interrupted()
    if not t.ok:
        rep.container_log_tail = inputs.text_block(t.log_tail(), 1 << 20)
        raise StepFailed(f"{platform}: {t.summary} (log {t.log_path})")
    return record


def sbom_path(ctx: RunContext, spec: ImageSpec, platform: str):
    """``<build dir>/sbom/<name>[-<arch>].cdx.json``."""
    return ctx.build_dir / "sbom" / f"{label(spec, platform)}.cdx.json"


def make_sbom(ctx: RunContext, spec: ImageSpec, rep: ImageReport, platform: str) -> SbomRecord:
    """Write the tested build's SBOM (:func:`builder.run.sbom.generate`) and record it on the build.
    Raises StepFailed: an image without its SBOM gets no ``latest``."""
    stop_if_interrupted()
    out = sbom_path(ctx, spec, platform)
    start = time.monotonic()
    try:
        made = sbom.generate(ctx.client, local_ref(rep, platform), spec.name, ctx.matrix.data.runtime.venv,
                             spec.python, out, platform)
    except sbom.SbomError as exc:
        raise StepFailed(f"SBOM: {exc}") from None
    rep.build(platform).sbom = record = SbomRecord(path=made["path"], components=made["components"],
                                                   seconds=round(time.monotonic() - start, 1))
    ctx.say(spec.name, f"SBOM {out} ({made['components']} components)")
    return record
