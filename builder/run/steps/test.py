"""Test step: smoke-test one platform's build (:mod:`builder.run.smoke`) -> :class:`Tested`, which
the scheduler's thread records on the build; make its SBOM (:mod:`builder.run.sbom`), recorded on the
build."""

from __future__ import annotations

import time
from dataclasses import dataclass

from builder.generate import lock
from builder.matrix import ImageSpec, inputs
from builder.matrix.platform import DEFAULT, Platform
from builder.run import sbom, smoke
from builder.run.context import RunContext
from builder.run.report import ImageReport, SbomRecord, TestRecord
from builder.run.steps import StepFailed, label, local_ref, stop_if_interrupted


@dataclass(frozen=True)
class Tested:
    """One platform's smoke test: its ``record`` and, when it failed, ``error`` (one line) and the
    scoring containers' ``log_tail``."""

    __test__ = False  # not a pytest class
    record: TestRecord
    error: str | None = None
    log_tail: str | None = None


def smoke_test(ctx: RunContext, spec: ImageSpec, ref: str, platform: Platform) -> Tested:
    """Run the image's smoke tests on its ``platform`` build, the local image ``ref`` (at most
    ``test_jobs`` at once; another platform than the build platform's under QEMU). A suite that ran
    and failed is a :class:`Tested` with its ``error``. Raises OSError, docker-py's errors."""
    with ctx.events.test_slot():
        ctx.say(spec.name, "smoke testing" + ("" if platform == DEFAULT else f" {platform}"))
        t = smoke.run(spec, ctx.matrix.data.runtime, lock.read(ctx.options.images_dir, spec.name, platform),
                      ref, ctx.options.tests_root, ctx.logs, label=label(spec, platform),
                      emulated=platform != ctx.build_platform)
    record = TestRecord(outcome=inputs.one_line(t.summary), seconds=round(t.seconds, 1), log=str(t.log_path),
                        container_logs=[str(p) for p in t.container_logs], seconds_to_healthy=t.seconds_to_healthy,
                        gpu=t.gpu)
    if t.ok:
        return Tested(record)
    return Tested(record, f"{platform}: {t.summary} (log {t.log_path})", inputs.text_block(t.log_tail(), 1 << 20))


def sbom_path(ctx: RunContext, spec: ImageSpec, platform: Platform):
    """``<build dir>/sbom/<name>[-<arch>].cdx.json``."""
    return ctx.build_dir / "sbom" / f"{label(spec, platform)}.cdx.json"


def make_sbom(ctx: RunContext, spec: ImageSpec, rep: ImageReport, platform: Platform) -> SbomRecord:
    """Write the SBOM (:func:`builder.run.sbom.generate`) of the tested build of ``platform`` in
    ``rep`` (only read) and return its record, for the build's ``sbom``. Raises StepFailed: an
    image without its SBOM gets no ``latest``."""
    stop_if_interrupted()
    out = sbom_path(ctx, spec, platform)
    start = time.monotonic()
    b = rep.built(platform)
    versions = sbom.version_properties(ctx.matrix.data.project.label_prefix, b.framework_version if b else None,
                                       b.python_version if b else None)
    try:
        made = sbom.generate(ctx.client, local_ref(rep, platform), spec.name, ctx.matrix.data.runtime.venv,
                             spec.python, out, platform, versions)
    except sbom.SbomError as exc:
        raise StepFailed(f"SBOM: {exc}") from None
    record = SbomRecord(path=made["path"], components=made["components"], seconds=round(time.monotonic() - start, 1))
    ctx.say(spec.name, f"SBOM {out} ({made['components']} components)")
    return record
