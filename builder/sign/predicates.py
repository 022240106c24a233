"""The predicates a published build is attested with, each a JSON object cosign wraps in an in-toto
statement whose subject is the build's manifest digest (https://github.com/in-toto/attestation):

- :func:`provenance`: SLSA provenance v1 (https://slsa.dev/spec/v1.0/provenance), predicate type
  :data:`PROVENANCE`; the build type is documented in ``docs/supply-chain.md``.
- :func:`test_result`: in-toto's test result v0.1
  (https://github.com/in-toto/attestation/blob/main/spec/predicates/test-result.md), predicate type
  :data:`TEST_RESULT`: the smoke-test suite's folders (by content digest), its test cases, and the
  tested image with the suite's outcome line and seconds.

The SBOM attestation's predicate is the CycloneDX document itself (cosign's ``cyclonedx`` type).
Both functions are pure: what they need is gathered in :class:`BuildFacts` and :class:`TestFacts`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from builder.generate.apt_lock import AptLock
from builder.generate.base_lock import BaseLock
from builder.generate.lock import Lock
from builder.matrix.platform import Platform

#: SLSA provenance v1's predicate type.
PROVENANCE = "https://slsa.dev/provenance/v1"
#: in-toto's test result predicate type.
TEST_RESULT = "https://in-toto.io/attestation/test-result/v0.1"
#: CycloneDX's predicate type, as cosign's ``--type cyclonedx`` writes it.
CYCLONEDX = "https://cyclonedx.org/bom"
#: cosign's name of each predicate type (``cosign attest --type``).
COSIGN_TYPES = {PROVENANCE: "slsaprovenance1", TEST_RESULT: TEST_RESULT, CYCLONEDX: "cyclonedx"}


@dataclass(frozen=True)
class BuildFacts:
    """What one platform's build was made from. ``source`` is the project's repository URL and
    ``revision`` the commit of the image's build contexts; ``dockerfile`` its path in the
    repository and ``dockerfile_sha256`` the hex digest of its bytes; ``build_args`` what bake passed
    (secrets never are); ``base`` the ``(reference, digest)`` the build started FROM (the base image,
    or the parent's published build); ``tools`` ``{name: version}`` (the builder, the Engine, buildx);
    ``started``/``finished`` RFC 3339 times of the run."""

    image: str
    platform: Platform
    source: str
    revision: str
    cell_digest: str
    dockerfile: str
    dockerfile_sha256: str
    build_args: dict[str, str]
    base: tuple[str, str]
    wheels: Lock
    debs: AptLock | None
    tools: dict[str, str]
    run_id: str
    started: str
    finished: str
    base_debs: BaseLock | None = None


def build_type(source: str) -> str:
    """The URI of this project's build type: its documentation in the repository at ``source``."""
    return f"{source.rstrip('/')}/blob/main/docs/supply-chain.md#provenance"


def _digest_map(digest: str) -> dict[str, str]:
    algorithm, _, hex_ = digest.partition(":")
    return {algorithm: hex_}


def _wheels(lock: Lock) -> list[dict]:
    # Every locked distribution; the lock allows one of several files (wheels per platform, sdist)
    # for a version, so their sha256 digests are annotations, not the descriptor's one digest.
    return [{"uri": f"pkg:pypi/{e.name}@{e.version}", "name": e.name,
             "annotations": {"sha256": sorted(h.split(":", 1)[1] for h in e.hashes)}}
            for e in sorted(lock.entries.values(), key=lambda e: e.name)]


def _debs(debs: AptLock | None, base: BaseLock | None, platform: Platform) -> list[dict]:
    # Every Debian package of the base lock and the apt lock (the apt step's version wins), with its suite.
    versions = {**(base.versions if base else {}), **(debs.versions if debs else {})}
    suites = {**(base.package_suites if base else {}), **(debs.suites if debs else {})}
    arch = platform.arch
    return [{"uri": f"pkg:deb/debian/{name}@{version}?arch={arch}", "name": name,
             **({"annotations": {"suite": suites[name]}} if suites.get(name, "-") != "-" else {})}
            for name, version in sorted(versions.items())]


def provenance(f: BuildFacts) -> dict:
    """The SLSA provenance v1 predicate of the build ``f``: external parameters (the source commit,
    the matrix cell, the platform), internal ones (the Dockerfile by digest, the build arguments),
    resolved dependencies (the base or parent image by digest, every wheel of the lock, every
    Debian package of the base lock and the apt lock, each with its suite) and the run's builder and times."""
    base_ref, base_digest = f.base
    return {
        "buildDefinition": {
            "buildType": build_type(f.source),
            "externalParameters": {
                "source": {"uri": f.source, "digest": {"gitCommit": f.revision}},
                "image": f.image, "platform": f.platform.name, "cellDigest": f.cell_digest},
            "internalParameters": {
                "dockerfile": {"path": f.dockerfile, "digest": {"sha256": f.dockerfile_sha256}},
                "buildArgs": dict(sorted(f.build_args.items()))},
            "resolvedDependencies": [
                {"uri": f"git+{f.source}@{f.revision}", "digest": {"gitCommit": f.revision}},
                {"uri": base_ref, "name": "base", "digest": _digest_map(base_digest)},
                *_wheels(f.wheels), *_debs(f.debs, f.base_debs, f.platform)]},
        "runDetails": {
            "builder": {"id": f"{f.source.rstrip('/')}#builder", "version": dict(sorted(f.tools.items()))},
            "metadata": {"invocationID": f.run_id, "startedOn": f.started, "finishedOn": f.finished}},
    }


@dataclass(frozen=True)
class TestFacts:
    """One platform's smoke test: the test folders it ran (root's first), the tested image id, the
    suite's outcome line and seconds, the test cases by outcome (pytest node names) and, for a GPU
    image, what its GPU tests read in it (``gpu``: the CUDA runtime, cuDNN and NCCL versions it
    resolves, its framework's CUDA targets, the driver floor, ``verified-on`` cpu or gpu)."""

    __test__ = False  # not a pytest class
    folders: list[Path]
    root: Path
    image_id: str
    outcome: str
    seconds: float
    passed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    gpu: dict[str, str] = field(default_factory=dict)


def tree_sha256(folder: Path) -> str:
    """The hex sha256 of a folder's files: each file's path relative to ``folder`` and the sha256 of
    its bytes, one line each, sorted (``__pycache__`` left out)."""
    lines = sorted(f"{p.relative_to(folder).as_posix()} {hashlib.sha256(p.read_bytes()).hexdigest()}"
                   for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def test_result(t: TestFacts) -> dict:
    """The in-toto test result predicate of ``t``: PASSED or FAILED, the suite's folders by content
    digest and the tested image (annotated with the outcome line and seconds) as its configuration,
    the test cases by outcome (skipped ones, such as the GPU-only tests on a machine without one,
    are the warned tests). A GPU image's tested-image annotations carry ``gpu``: what its GPU tests
    read in it (:class:`TestFacts`)."""
    return {
        "result": "FAILED" if t.failed or "passed" not in t.outcome else "PASSED",
        "configuration": [
            *({"name": p.relative_to(t.root).as_posix() if p.is_relative_to(t.root) else p.name,
               "digest": {"sha256": tree_sha256(p)}} for p in t.folders),
            {"name": "tested-image", "digest": _digest_map(t.image_id),
             "annotations": {"outcome": t.outcome, "seconds": t.seconds,
                             **({"gpu": dict(sorted(t.gpu.items()))} if t.gpu else {})}}],
        "passedTests": sorted(t.passed), "warnedTests": sorted(t.skipped), "failedTests": sorted(t.failed),
    }


test_result.__test__ = False  # not a pytest test


def about(statements: list[dict], predicate_type: str, digest: str) -> list[dict]:
    """The in-toto ``statements`` of ``predicate_type`` whose subject is the manifest ``digest``
    (``sha256:<hex>``), oldest first (https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md)."""
    hex_ = digest.rsplit(":", 1)[1]
    return [s for s in statements if s.get("predicateType") == predicate_type
            and any((x.get("digest") or {}).get("sha256") == hex_ for x in s.get("subject") or [])]


def tested_image(predicate: dict) -> dict:
    """The ``tested-image`` entry of a :func:`test_result` predicate's configuration, ``{}`` when
    it has none."""
    return next((c for c in predicate.get("configuration") or [] if isinstance(c, dict)
                 and c.get("name") == "tested-image"), {})
