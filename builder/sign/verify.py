"""``builder verify REF --key PUB``: is this image what the project published? For a tag or a digest
of one image or an image index (then every platform's build), with cosign
(:class:`builder.sign.cosign.Cosign`) and the registry's manifests and image configurations only (no
layer is pulled):

- ``signature``: the key verifies a signature of the digest (the index's and each build's);
- ``provenance``: a signed SLSA provenance v1 whose subject is the build's digest, whose source is
  the matrix's ``project.source`` at the commit the image's revision label names;
- ``test-result``: a signed test result that PASSED, whose tested image is the build (its manifest
  digest, or its configuration's digest on the classic image store);
- ``sbom``: a signed CycloneDX SBOM whose subject is the build and which lists the image's framework
  (the matrix cell its title label names) at the version of its framework-version label.

Each check gives one :class:`Finding`; the command prints one line each and exits 0 only when all hold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from builder.engine.registry import Registry, RegistryError
from builder.matrix import Matrix, grammar
from builder.matrix.inputs import shown
from builder.sign import predicates
from builder.sign.cosign import Cosign, SignError, by_digest

#: OCI annotation that marks an attestation manifest in a BuildKit index; such entries are no build.


@dataclass(frozen=True)
class Finding:
    """One check of one digest: ``check`` (signature, provenance, test-result, sbom), ``subject``
    (``repository@digest``, with its platform for a build of an index), ``ok`` and one line of detail."""

    check: str
    subject: str
    ok: bool
    detail: str

    def line(self) -> str:
        """``ok   signature  <subject>: <detail>`` (``FAIL`` when it does not hold)."""
        return f"{'ok  ' if self.ok else 'FAIL'} {self.check:<11} {self.subject}: {self.detail}"

    def as_dict(self) -> dict:
        """The finding as JSON-ready data."""
        return asdict(self)


def split_reference(ref: str) -> tuple[str, str]:
    """``(repository, tag or digest)`` of ``host[:port]/path:tag`` or ``host[:port]/path@sha256:…``.
    The first part must name a registry host as distribution's reference grammar tells one apart
    from a path (it holds a ``.`` or a ``:``, or is ``localhost``: ``splitDockerDomain`` in
    https://github.com/distribution/reference/blob/main/normalize.go). Raises ValueError for
    anything else (no registry host, no tag or digest, a bad character)."""
    if not isinstance(ref, str) or ref.startswith("-"):
        raise ValueError(f"{shown(ref)} is not an image reference")
    if "@" in ref:
        repository, _, digest = ref.partition("@")
        repository, reference = grammar.repository(repository), grammar.digest(digest)
    else:
        repository, sep, tag = ref.rpartition(":")
        if not sep or "/" in tag:
            raise ValueError(f"{shown(ref)}: expected host[:port]/path:tag or host[:port]/path@sha256:<hex>")
        repository, reference = grammar.repository(repository), grammar.tag(tag)
    host, slash, _ = repository.partition("/")
    if not slash or not ("." in host or ":" in host or host == "localhost"):
        raise ValueError(f"{shown(ref)} names no registry host (expected host[:port]/path:tag or "
                         "host[:port]/path@sha256:<hex>)")
    return repository, reference


class Verifier:
    """The checks of :func:`verify`, for one registry, public key and matrix."""

    def __init__(self, cosign: Cosign, public_key: str, registry: Registry, matrix: Matrix):
        self.cosign, self.key, self.registry, self.matrix = cosign, public_key, registry, matrix

    def image(self, repository: str, reference: str) -> list[Finding]:
        """Every check of the manifest or index ``repository:reference``."""
        found = self.registry.manifest(repository, reference)
        if found is None:
            return [Finding("signature", f"{repository}:{reference}", False, "the registry has no such tag or digest")]
        digest, doc = found
        if "manifests" not in doc:
            return self.build(repository, digest, doc, by_digest(repository, digest))
        out = [self.signature(by_digest(repository, digest))]
        builds = Registry.index_entries(doc)
        if not builds:
            why = "the index names no image" if builds == {} else "the index's entries fail the image index grammar"
            return out + [Finding("signature", by_digest(repository, digest), False, why)]
        for platform, entry in builds.items():
            child = self.registry.manifest(repository, entry)
            subject = f"{by_digest(repository, entry)} ({platform})"
            out += (self.build(repository, child[0], child[1], subject) if child
                    else [Finding("signature", subject, False, "the index names a manifest the registry does not have")])
        return out

    def build(self, repository: str, digest: str, manifest: dict, subject: str) -> list[Finding]:
        """The four checks of one image manifest ``digest``."""
        ref = by_digest(repository, digest)
        labels = Registry.labels(self.registry.config(repository, manifest))
        config_digest = (manifest.get("config") or {}).get("digest")
        return [self.signature(ref, subject),
                self._check("provenance", ref, subject, predicates.PROVENANCE,
                            lambda p: self._provenance(p, labels)),
                self._check("test-result", ref, subject, predicates.TEST_RESULT,
                            lambda p: _tested(p, {digest, config_digest})),
                self._check("sbom", ref, subject, predicates.CYCLONEDX, lambda p: self._sbom(p, labels))]

    def signature(self, ref: str, subject: str | None = None) -> Finding:
        """Whether the key verifies a signature of ``ref``."""
        try:
            self.cosign.verify(ref, self.key)
            return Finding("signature", subject or ref, True, "signed with the key")
        except SignError as exc:
            return Finding("signature", subject or ref, False, str(exc))

    def _check(self, check: str, ref: str, subject: str, predicate_type: str,
               judge: Callable[[dict], str | None]) -> Finding:
        # The newest signed statement of ``predicate_type`` about ``ref``'s digest, judged: None is ok.
        try:
            statements = self.cosign.attestations(ref, self.key, predicates.COSIGN_TYPES[predicate_type])
        except SignError as exc:
            return Finding(check, subject, False, str(exc))
        about = predicates.about(statements, predicate_type, ref.rsplit("@", 1)[1])
        if not about:
            return Finding(check, subject, False, f"no signed {predicate_type} statement about this digest")
        problem = judge(about[-1]["predicate"])
        return Finding(check, subject, problem is None, problem or "signed, and it holds")

    def _provenance(self, p: dict, labels: dict) -> str | None:
        source = ((p.get("buildDefinition") or {}).get("externalParameters") or {}).get("source") or {}
        want_uri, want_commit = self.matrix.data.project.source, labels.get("org.opencontainers.image.revision")
        if not want_commit:
            return "the image has no org.opencontainers.image.revision label"
        if source.get("uri") != want_uri:
            return f"source {source.get('uri')!r}, expected {want_uri}"
        if (source.get("digest") or {}).get("gitCommit") != want_commit:
            return f"commit {(source.get('digest') or {}).get('gitCommit')!r}, the image's revision label says {want_commit!r}"
        return None

    def _sbom(self, bom: dict, labels: dict) -> str | None:
        spec = next((s for s in self.matrix.images() if s.name == labels.get("org.opencontainers.image.title")), None)
        if spec is None:
            return f"the image's title {labels.get('org.opencontainers.image.title')!r} is no image of the matrix"
        version = labels.get(f"{self.matrix.data.project.label_prefix}.framework-version", "")
        if not version:
            return f"the image has no {self.matrix.data.project.label_prefix}.framework-version label"
        names = {(canonicalize_name(str(c.get("name", ""))), str(c.get("version", "")))
                 for c in bom.get("components") or [] if isinstance(c, dict)}
        if not any(n == canonicalize_name(spec.package) and _same_version(v, version) for n, v in names):
            return f"the SBOM lists no {spec.package} {version}"
        return None


def _same_version(a: str, b: str) -> bool:
    try:
        return Version(a).public == Version(b).public
    except InvalidVersion:
        return a == b


def _tested(p: dict, digests: set) -> str | None:
    # PASSED, and the tested image is this build.
    tested = predicates.tested_image(p)
    image = "sha256:" + str((tested.get("digest") or {}).get("sha256"))
    if p.get("result") != "PASSED":
        return f"the smoke test's result is {p.get('result')!r}"
    return None if image in digests else f"the tested image {image} is not this build"


def verify(ref: str, cosign: Cosign, public_key: str, registry: Registry, matrix: Matrix) -> list[Finding]:
    """Every :class:`Finding` of ``ref`` (a tag or a digest, :func:`split_reference`). Raises ValueError
    for a malformed reference; a registry that cannot be read is a failed finding."""
    repository, reference = split_reference(ref)
    try:
        return Verifier(cosign, public_key, registry, matrix).image(repository, reference)
    except (RegistryError, ValueError, TypeError, KeyError) as exc:  # a registry's answer of the wrong shape
        return [Finding("signature", ref, False, f"{type(exc).__name__}: {exc}")]
