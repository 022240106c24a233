"""Signing and attesting what a run publishes, and verifying it, with cosign
(:mod:`.cosign`): the predicates (:mod:`.predicates`), and ``builder verify`` (:mod:`.verify`).

A :class:`Signer` is made once per run when a signing key is configured (``--signing-key`` or
``BUILDER_SIGNING_KEY``, or ``--keyless``); without one, publishing pushes unsigned images and the report
says ``unsigned``. It signs in the bundle form where the registry serves the OCI 1.1 referrers API,
in the legacy ``.sig``/``.att`` tags otherwise (:meth:`Signer.form`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from builder import __version__, files
from builder.engine.registry import Credentials, Registry, RegistryError, host_of
from builder.sign import cosign
from builder.sign.cosign import BUNDLE, LEGACY, Cosign, Form, SignError

__all__ = ["Signer", "SignError"]


@dataclass(frozen=True)
class Signer:
    """What signs a run's published manifests and indexes: ``cosign`` with its registry settings,
    the ``key`` reference (a key file's absolute path or a key manager URI; empty with keyless),
    the versions of the ``tools`` that made the builds (the provenance's builder), the run's
    ``started`` time (RFC 3339, UTC) and the path of the key's ``public_key`` (PEM; empty with
    keyless), with which a run checks what an earlier one already signed."""

    cosign: Cosign
    key: str
    started: str
    tools: dict[str, str] = field(default_factory=dict)
    public_key: str = ""
    forms: dict[str, Form] = field(default_factory=dict, compare=False)

    def __repr__(self) -> str:  # the key reference is no secret, but nothing of it needs logging
        return f"Signer(keyless={self.cosign.keyless})"

    @classmethod
    def make(cls, build_dir: Path, key: str, keyless: bool, tools: dict[str, str]) -> Signer:
        """A signer for a command that publishes with ``key`` (:func:`builder.sign.cosign.key_reference`)
        or ``keyless``: cosign put in place when missing (:func:`builder.sign.cosign.ensure`), the
        registry credentials of the environment, the key's public key written to
        ``build_dir``/signing-key.pub, ``tools`` plus this builder's and cosign's versions. Raises
        SignError (a wrong password: cosign cannot read the key)."""
        tool = Cosign(cosign.ensure(build_dir), Credentials.from_env(), keyless=keyless)
        if not keyless:
            tool = tool.offline_signing_config(files.claim_folder(build_dir))
        public = "" if keyless else str(files.write_atomic(files.claim_folder(build_dir) / "signing-key.pub",
                                                          tool.public_key(key)))
        tools = {**tools, "inference-image-builder": __version__, "cosign": cosign.version(tool.executable) or "unknown"}
        return cls(tool, key, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), tools, public)

    def signed(self, ref: str) -> bool:
        """True when this signer's public key verifies a signature of ``ref`` (``repository@digest``)
        already in the registry (always False keyless: cosign then needs an identity to check)."""
        if not self.public_key:
            return False
        try:
            return bool(self.cosign.verify(ref, self.public_key))
        except SignError:
            return False

    def form(self, ref: str) -> Form:
        """How ``ref`` (``repository@digest``) is signed and attested: :data:`~builder.sign.cosign.BUNDLE`
        when its registry serves the OCI 1.1 referrers API for its repository
        (:meth:`builder.engine.registry.Registry.serves_referrers`), else
        :data:`~builder.sign.cosign.LEGACY`; asked once per repository. Raises SignError when the
        registry cannot be asked."""
        repository, _, digest = ref.partition("@")
        if repository not in self.forms:
            try:
                serves = Registry(host_of(repository), self.cosign.credentials).serves_referrers(repository, digest)
            except RegistryError as exc:
                raise SignError(f"cannot tell whether the registry serves OCI referrers: {exc}") from None
            self.forms[repository] = BUNDLE if serves else LEGACY
        return self.forms[repository]

    def attest(self, ref: str, predicate: Path, predicate_type: str) -> None:
        """Attach the attestation ``predicate`` of ``predicate_type`` to ``ref`` in :meth:`form`. Raises SignError."""
        self.cosign.attest(ref, self.key, predicate, predicate_type, self.form(ref))

    def sign(self, ref: str, force: bool = False) -> None:
        """Sign ``ref`` (``repository@digest``) in :meth:`form` unless :meth:`signed` (``force``:
        always). Raises SignError."""
        if force or not self.signed(ref):
            self.cosign.sign(ref, self.key, self.form(ref))
