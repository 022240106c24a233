"""Sign step: once a build's manifest is pushed under its immutable tag, attest it (its CycloneDX
SBOM, SLSA provenance v1, the smoke test's result; :mod:`builder.sign.predicates`) and sign it, by
digest, before any moving tag names it; the same for the image index. Attestations come first and
the signature last, so a valid signature means the whole set was attached: a later run that finds
it (:meth:`builder.sign.cosign.Cosign.verify` with the run's public key) signs nothing again.

A failure raises StepFailed: the image is publish-failed and ``latest`` does not move.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from builder.generate import apt_lock, base_lock, lock
from builder.matrix import ImageSpec
from builder.matrix.inputs import ConfigError
from builder.matrix.platform import Platform
from builder.run import report_file, smoke
from builder.run.context import RunContext
from builder.run.report import ImageReport, PlatformBuild
from builder.run.steps import StepFailed, label
from builder.sign import SignError, cosign, predicates

#: The largest JUnit XML file a test-result attestation reads (bytes).
MAX_JUNIT = 8 << 20


@dataclass(frozen=True)
class Signed:
    """What signing one pushed manifest gave: the predicate types attached to it
    (``attestations``; none for an image index) and the ``seconds`` it took."""

    attestations: tuple[str, ...]
    seconds: float

    def record(self, rep: ImageReport, platform: Platform | None = None) -> None:
        """Write it on ``rep``: the attestations on the build of ``platform`` (None: the index),
        the seconds added to the image's signing time."""
        if platform is not None:
            rep.build(platform).attestations = list(self.attestations)
        rep.sign_seconds = round((rep.sign_seconds or 0.0) + self.seconds, 1)


def sign_build(ctx: RunContext, spec: ImageSpec, rep: ImageReport, platform: Platform) -> Signed | None:
    """Attest and sign the pushed build of ``platform`` (its ``digest`` in ``rep``, which is only
    read) unless the registry already holds this run's key's signature of it; None when the run has
    no signer. Raises StepFailed."""
    signer, b, start = ctx.signer, rep.built(platform), time.monotonic()
    if signer is None or b is None:
        return None
    ref = cosign.by_digest(rep.repository, b.digest)
    if not signer.signed(ref):
        folder = Path(tempfile.mkdtemp(prefix=".attest-", dir=ctx.build_dir))
        try:
            for kind, doc in _predicates(ctx, spec, rep, b).items():
                path = folder / f"{label(spec, platform)}.{predicates.COSIGN_TYPES[kind].rsplit('/', 1)[-1]}.json"
                path.write_text(json.dumps(doc, indent=1))
                signer.attest(ref, path, predicates.COSIGN_TYPES[kind])
            signer.sign(ref, force=True)
        except SignError as exc:
            raise StepFailed(f"signing {ref}: {exc}") from None
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return Signed(tuple(sorted(predicates.COSIGN_TYPES)), round(time.monotonic() - start, 1))


def sign_index(ctx: RunContext, repository: str, digest: str | None) -> Signed | None:
    """Sign the image index ``repository@digest`` (its platforms' builds carry the attestations);
    None when the run has no signer or there is no index. Raises StepFailed."""
    if ctx.signer is None or digest is None:
        return None
    ref, start = cosign.by_digest(repository, digest), time.monotonic()
    try:
        ctx.signer.sign(ref)
    except SignError as exc:
        raise StepFailed(f"signing {ref}: {exc}") from None
    return Signed((), round(time.monotonic() - start, 1))


def earlier_build(ctx: RunContext, name: str, platform: Platform, image_id: str) -> PlatformBuild | None:
    """``builder publish``: this very build of ``platform`` (its ``image_id``) as the test run
    recorded it in this build folder's report (read back as hostile input), with a passed smoke
    test; None when the report has none. Raises StepFailed for a report that fails its grammar."""
    path = ctx.build_dir / "report.json"
    try:
        entries = report_file.read(path) if path.exists() else []
    except ConfigError as exc:
        raise StepFailed(f"cannot read the build to attest: {exc.lines[0]}") from None
    found = (e.built(platform) for e in entries if e.name == name)
    return next((f for f in found if f and f.image_id == image_id and f.test and f.test.passed), None)


def _predicates(ctx: RunContext, spec: ImageSpec, rep: ImageReport, b: PlatformBuild) -> dict[str, dict]:
    if b.sbom is None or b.image_id is None:
        raise StepFailed(f"{b.platform}: no SBOM to attest")
    if b.test is None or not b.test.passed:  # builder publish: the test run recorded none
        raise StepFailed(f"{b.platform}: {ctx.build_dir / 'report.json'} records no passed smoke test of "
                         f"{b.image_id} to attest: run `builder test` with this build folder first, or `builder all`")
    if b.base is None or b.base_digest is None:
        raise StepFailed(f"{b.platform}: the report does not say which base the build started FROM")
    try:
        sbom = json.loads(Path(b.sbom.path).read_text())
        return {predicates.CYCLONEDX: sbom,
                predicates.PROVENANCE: predicates.provenance(_build_facts(ctx, spec, b)),
                predicates.TEST_RESULT: predicates.test_result(_test_facts(ctx, spec, b))}
    except (OSError, ValueError, ConfigError) as exc:
        raise StepFailed(f"{b.platform}: cannot gather what to attest: {exc}") from None


def _build_facts(ctx: RunContext, spec: ImageSpec, b: PlatformBuild) -> predicates.BuildFacts:
    images, signer = ctx.options.images_dir, ctx.signer
    revision, _ = ctx.vcs[spec.name]
    dockerfile = images / spec.name / "Dockerfile"
    return predicates.BuildFacts(
        image=spec.name, platform=b.platform, source=ctx.matrix.data.project.source, revision=revision,
        cell_digest=f"sha256:{spec.cell_digest}", dockerfile=f"{images.name}/{spec.name}/Dockerfile",
        dockerfile_sha256=hashlib.sha256(dockerfile.read_bytes()).hexdigest(), build_args=dict(b.build_args),
        base=(b.base, b.base_digest), wheels=lock.read(images, spec.name, b.platform),
        debs=apt_lock.read(images, spec.name, b.platform) if spec.parent is None else None,
        tools=signer.tools, run_id=ctx.run_id, started=signer.started,
        finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        base_debs=(base_lock.read(Path(ctx.matrix.path).resolve().parent, spec.base, b.platform)
                   if spec.parent is None and not spec.from_cuda_image else None))


def _test_facts(ctx: RunContext, spec: ImageSpec, b: PlatformBuild) -> predicates.TestFacts:
    cases = junit_cases(ctx.logs / f"{label(spec, b.platform)}.junit.xml")
    return predicates.TestFacts(folders=smoke.folders(spec, ctx.options.tests_root), root=ctx.options.tests_root.parent,
                                image_id=b.image_id, outcome=b.test.outcome, seconds=b.test.seconds,
                                gpu=dict(b.test.gpu), **cases)


def junit_cases(path: Path) -> dict[str, list[str]]:
    """``{"passed": [...], "skipped": [...], "failed": [...]}``: the test cases of a JUnit XML file
    as pytest writes it (``classname::name``). Raises StepFailed when the file is missing, larger
    than :data:`MAX_JUNIT` bytes or not JUnit XML."""
    try:
        if path.stat().st_size > MAX_JUNIT:
            raise StepFailed(f"{path}: larger than {MAX_JUNIT} bytes")
        root = ET.fromstring(path.read_bytes())
    except (OSError, ET.ParseError) as exc:
        raise StepFailed(f"the smoke test's JUnit XML {path}: {exc}") from None
    out: dict[str, list[str]] = {"passed": [], "skipped": [], "failed": []}
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        kind = ("failed" if case.find("failure") is not None or case.find("error") is not None
                else "skipped" if case.find("skipped") is not None else "passed")
        out[kind].append(name)
    return out
