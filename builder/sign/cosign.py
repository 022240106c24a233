"""cosign 3, the one tool that signs, attests and verifies (https://docs.sigstore.dev/cosign/): found on
PATH, or put in place from Debian forky's ``cosign`` package (3.1.1, a static binary that needs only
libc6 >= 2.34, :mod:`builder.engine.debian_suite`) as root on Debian.

Every call goes through :class:`Cosign`: references are checked against their grammar and passed
after ``--``, so none can read as an option. Key-based signing without a transparency log is the
default (no Rekor is reachable from every build machine); ``keyless`` leaves the key out and lets
cosign use Sigstore's Fulcio and Rekor. The key's password reaches cosign as ``COSIGN_PASSWORD``
from the caller's environment only; the registry credentials as a Docker config file in a private
temporary folder (never on a command line, where ``ps`` shows them).

Two storage forms (:data:`BUNDLE`, :data:`LEGACY`), measured with cosign 3.1.1 on Debian's
docker-registry 2.8 (which has no referrers API):

- ``bundle``: Sigstore bundles (``application/vnd.dev.sigstore.bundle.v0.3+json``) as OCI 1.1
  referrers of the image; cosign 3's default. A registry without the referrers API gets them in the
  tag-schema fallback index ``sha256-<hex>``. cosign 2.5 does not see them.
- ``legacy``: cosign 2's ``sha256-<hex>.sig`` and ``.att`` tags, written by cosign 3 with its
  deprecated ``--new-bundle-format=false --use-signing-config=false --tlog-upload=false``.

``cosign verify`` 3 reads the bundles when the image has any and the legacy tags only when it has
none; :meth:`Cosign.verify` and :meth:`Cosign.attestations` therefore ask for the legacy form
(``--new-bundle-format=false``) when the first answer is no.
"""

from __future__ import annotations

import base64
import contextlib
import json
import mmap
import os
import re
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

from builder import files
from builder.engine import debian_suite
from builder.engine.host import EngineError, can_provision
from builder.engine.registry import Credentials, host_of, insecure
from builder.matrix import grammar

#: Where a provisioned cosign goes (the Debian package's own binary, unchanged).
INSTALLED = Path("/usr/local/bin/cosign")
#: The Debian package that holds cosign 3.1.1, and its suite (Debian forky, testing).
PACKAGE, SUITE = "cosign", "forky"
#: URI schemes of the key managers cosign takes a key reference from
#: (https://docs.sigstore.dev/cosign/key_management/overview/).
KMS_SCHEMES = ("awskms://", "gcpkms://", "azurekms://", "hashivault://", "k8s://", "pkcs11:")
#: Seconds one cosign call may take (a registry round trip or a few).
TIMEOUT = 600
#: The cosign major version whose flags this module passes.
MAJOR = 3
#: The storage forms (module docstring).
Form = Literal["bundle", "legacy"]
BUNDLE: Form = "bundle"
LEGACY: Form = "legacy"
#: The main package path a Go binary's build information records (``go version -m``:
#: https://pkg.go.dev/debug/buildinfo): cosign 3's is ``github.com/sigstore/cosign/v3/cmd/cosign``.
_GO_PATH = re.compile(rb"path\tgithub\.com/sigstore/cosign(/v(\d+))?/cmd/cosign\n")


class SignError(RuntimeError):
    """cosign is missing, or a signature, attestation or verification failed (one line)."""


def major_of(git_version: str | None, go_path: bytes | None) -> int | None:
    """cosign's major version from ``cosign version --json``'s ``gitVersion`` (``v3.0.2`` -> 3), or,
    for a build without one (Debian's say ``devel``), from the main package path of its Go build
    information (``.../cosign/v3/cmd/cosign`` -> 3; a path without ``/vN``, as Debian's cosign 2.5
    has, -> None: not told). None when neither tells."""
    found = re.fullmatch(r"v(\d+)\.\d+\.\d+.*", git_version or "")
    if found:
        return int(found[1])
    matched = _GO_PATH.search(go_path or b"")
    return int(matched[2]) if matched and matched[2] else None


def version(path: str | Path = "cosign") -> str | None:
    """cosign's ``GitVersion`` (``v3.0.2``; ``devel`` for Debian's builds), or None when it cannot run."""
    try:
        r = subprocess.run([str(path), "version", "--json"], capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        return json.loads(r.stdout).get("gitVersion") if r.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError, AttributeError):
        return None


def _go_path(path: str | Path) -> bytes | None:
    # The ``path\t...cosign...\n`` line of the binary's Go build information, or None.
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            found = _GO_PATH.search(m)
            return found[0] if found else None
    except (OSError, ValueError):
        return None


def major(path: str | Path) -> int | None:
    """The major version of the cosign at ``path`` (:func:`major_of`), or None when it cannot run or
    does not tell."""
    found = version(path)
    return None if found is None else major_of(found, _go_path(path))


def ensure(state_dir: Path, mirror: str | None = None) -> Path:
    """The cosign executable: ``cosign`` on PATH when it is version 3 (:data:`MAJOR`), else
    :data:`INSTALLED` from Debian forky's package (downloaded under ``state_dir``/tools, as root on
    Debian only; an older cosign at :data:`INSTALLED`, such as the Debian 13 cosign 2.5 earlier
    versions of the builder put there, is replaced). Raises SignError naming the package anywhere
    else, or when the download or the installed binary fails."""
    found = shutil.which("cosign")
    if found and major(found) == MAJOR:
        return Path(found)
    if not can_provision():
        raise SignError(f"cosign {MAJOR} is missing{f' ({found} is {version(found)})' if found else ''}: install it "
                        "(Debian forky: the cosign package; https://docs.sigstore.dev/cosign/system_config/installation/)")
    files.claim_folder(state_dir)
    try:
        [deb] = debian_suite.download([PACKAGE], files.make_folder(state_dir / "tools").resolve(), mirror, suite=SUITE)
    except EngineError as exc:
        raise SignError(str(exc)) from None
    unpacked = deb.parent / "unpacked"
    shutil.rmtree(unpacked, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    files.copy_atomic(unpacked / "usr/bin/cosign", INSTALLED, files.EXEC_MODE)
    shutil.rmtree(unpacked)
    if major(INSTALLED) != MAJOR:
        raise SignError(f"installed {INSTALLED} from {deb.name}, but it is no cosign {MAJOR}")
    return INSTALLED


def write_flags(form: Form, keyless: bool, signing_config: Path | None) -> list[str]:
    """The flags of ``cosign sign``/``attest`` 3 that write ``form`` (measured with cosign 3.1.1):

    - bundle, with a key: ``--signing-config`` naming a signing config without services
      (:meth:`Cosign.offline_signing_config`): no Rekor, no timestamp authority.
    - legacy, with a key: ``--new-bundle-format=false --use-signing-config=false --tlog-upload=false``
      (cosign 3 refuses ``--tlog-upload=false`` beside a signing config, and refuses the legacy form
      with one).
    - keyless: none for the bundle (Sigstore's public signing config), ``--new-bundle-format=false
      --use-signing-config=false`` for the legacy form (not tested: no Fulcio is reachable here).

    Raises ValueError for an unknown form, or a key-based bundle without ``signing_config``."""
    if form not in (BUNDLE, LEGACY):
        raise ValueError(f"{form!r} is not a cosign storage form ({BUNDLE}, {LEGACY})")
    if form == LEGACY:
        return ["--new-bundle-format=false", "--use-signing-config=false", *([] if keyless else ["--tlog-upload=false"])]
    if keyless:
        return []
    if signing_config is None:
        raise ValueError("a key-based bundle needs a signing config without services")
    return [f"--signing-config={signing_config}"]


def key_reference(value: str) -> str:
    """A signing or verification key as cosign takes it: a key manager URI (:data:`KMS_SCHEMES`)
    or the path of an existing regular file (a link to one is followed), returned absolute. Raises
    ValueError, one line naming ``value`` and what was expected, for anything else: an empty value,
    one that starts with ``-`` or holds a control character, a path too long for the file system
    (:func:`builder.matrix.grammar.local_path`), a missing file, a folder, a link to nothing, a
    file that cannot be looked at."""
    if not value or value.startswith("-") or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{value!r} is not a key file or a key manager URI")
    if value.startswith(KMS_SCHEMES):
        if len(value) > grammar.PATH_MAX:
            raise ValueError(f"{value[:40]!r}…: a key manager URI of more than {grammar.PATH_MAX} characters")
        return value
    expected = f"expected a cosign key file or one of {', '.join(KMS_SCHEMES)}"
    grammar.local_path(value)
    path = Path(os.path.expanduser(value))  # unchanged for an unknown ~user (Path.expanduser raises)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():
            raise ValueError(f"{value!r}: is a symbolic link to {os.readlink(path)!r}, which does not "
                             f"exist ({expected})") from None
        raise ValueError(f"{value!r}: no such key file ({expected})") from None
    except OSError as exc:
        raise ValueError(f"{value!r}: cannot use it as a key file: {exc.strerror or exc} ({expected})") from None
    if stat.S_ISDIR(mode):
        raise ValueError(f"{value!r}: is a folder, not a key file ({expected})")
    if not stat.S_ISREG(mode):
        raise ValueError(f"{value!r}: is not a regular file ({expected})")
    return str(path.resolve())


def by_digest(repository: str, digest: str) -> str:
    """``repository@digest``, each checked against its grammar (:mod:`builder.matrix.grammar`).
    Raises ValueError."""
    return f"{grammar.repository(repository)}@{grammar.digest(digest)}"


@dataclass(frozen=True)
class Cosign:
    """One cosign 3 executable with its registry settings: ``credentials`` for the registry (none:
    what ``docker login`` stored), ``keyless`` for Sigstore's public services instead of a key,
    ``signing_config`` (a signing config without services, :meth:`offline_signing_config`) for
    key-based bundles."""

    executable: Path
    credentials: Credentials = Credentials()
    keyless: bool = False
    signing_config: Path | None = None

    def offline_signing_config(self, folder: Path) -> Cosign:
        """This cosign with ``signing_config`` set to a signing config without services that
        ``cosign signing-config create`` writes into ``folder``/cosign-signing-config.json
        (https://docs.sigstore.dev/cosign/signing/signing_with_containers/). Raises SignError."""
        path = Path(folder) / "cosign-signing-config.json"
        self._run(["signing-config", "create", f"--out={path}"])
        return Cosign(self.executable, self.credentials, self.keyless, path)

    def sign(self, ref: str, key: str, form: Form = BUNDLE) -> None:
        """Sign the manifest or index ``ref`` (``repository@digest``) with ``key``
        (:func:`key_reference`), stored in ``form`` (:func:`write_flags`). Raises SignError."""
        self._run(["sign", "--yes", *self._key(key), *self._write(form), *self._registry(ref), "--", ref], ref)

    def attest(self, ref: str, key: str, predicate: Path, predicate_type: str, form: Form = BUNDLE) -> None:
        """Attach an in-toto attestation of ``predicate`` (a JSON file) of ``predicate_type`` (a
        cosign type name or a URI) to ``ref``, signed with ``key``, stored in ``form``; in the legacy
        form it replaces an earlier one of the same type (``--replace``), a bundle is one more
        referrer. Raises SignError."""
        replace = ["--replace"] if form == LEGACY else []
        self._run(["attest", "--yes", *replace, f"--type={predicate_type}", f"--predicate={predicate}",
                   *self._key(key), *self._write(form), *self._registry(ref), "--", ref], ref)

    def verify(self, ref: str, public_key: str) -> list[dict]:
        """The signature payloads (JSON; ``critical.type`` one of :data:`SIGNATURE_TYPES`) of ``ref``
        whose signature ``public_key`` verifies, in either form. cosign 3.1.1's ``verify`` also
        passes on an attestation bundle alone (measured), so payloads of another type do not count.
        Raises SignError when there is no such signature."""
        args = ["verify", f"--key={public_key}", *self._verify_flags(), *self._registry(ref), "--output=json"]
        return self._either(args, ref, signatures)

    def attestations(self, ref: str, public_key: str, predicate_type: str) -> list[dict]:
        """The in-toto statements of ``predicate_type`` attached to ``ref`` whose signature
        ``public_key`` verifies (cosign checks their subject is ``ref``'s digest), in either form.
        Raises SignError when there is none."""
        args = ["verify-attestation", f"--key={public_key}", f"--type={predicate_type}", *self._verify_flags(),
                *self._registry(ref), "--output=json"]
        return [_statement(envelope, ref) for envelope in self._either(args, ref, lambda found: found)]

    def _either(self, args: list[str], ref: str, keep) -> list[dict]:
        # What ``keep`` keeps of cosign 3's JSON answer for the bundles (or for the legacy tags when
        # there is no bundle), else of its answer for the legacy tags alone; SignError with the
        # first failure when neither keeps anything.
        first: SignError | None = None
        for legacy in ([], ["--new-bundle-format=false"]):
            try:
                kept = keep(_json_lines(self._run([*args, *legacy, "--", ref], ref), ref))
            except SignError as exc:
                first = first or exc
                continue
            if kept:
                return kept
            first = first or SignError(f"cosign verified no signature of {ref}, only attestations")
        raise first or SignError(f"cosign verified nothing for {ref}")

    def _write(self, form: Form) -> list[str]:
        try:
            return write_flags(form, self.keyless, self.signing_config)
        except ValueError as exc:
            raise SignError(str(exc)) from None

    def public_key(self, key: str) -> str:
        """The PEM public key of the private ``key``. Raises SignError (a wrong or missing password)."""
        self._key(key)
        return self._run(["public-key", f"--key={key}"])

    def _key(self, key: str) -> list[str]:
        # A key file is encrypted: without COSIGN_PASSWORD cosign would wait for a terminal.
        if not self.keyless and not key.startswith(KMS_SCHEMES) and "COSIGN_PASSWORD" not in os.environ:
            raise SignError("COSIGN_PASSWORD is not set: cosign needs the signing key's password")
        return [] if self.keyless else [f"--key={key}"]

    def _verify_flags(self) -> list[str]:
        return [] if self.keyless else ["--insecure-ignore-tlog=true"]

    @staticmethod
    def _registry(ref: str) -> list[str]:
        # A loopback registry speaks plain HTTP (builder.engine.registry.insecure).
        return ["--allow-http-registry=true", "--allow-insecure-registry=true"] if insecure(host_of(ref)) else []

    def _run(self, args: list[str], ref: str | None = None) -> str:
        with self._docker_config(host_of(ref) if ref else None) as env:
            try:
                r = subprocess.run([str(self.executable), *args], capture_output=True, text=True, timeout=TIMEOUT,
                                   env=env, stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                raise SignError(f"cosign {args[0]} took more than {TIMEOUT} s") from None
        if r.returncode != 0:
            last = [line for line in r.stderr.splitlines() if line.strip()][-1:] or [f"exit {r.returncode}"]
            raise SignError(f"cosign {args[0]}: {' '.join(last[0].split())[-400:]}")
        return r.stdout

    @contextlib.contextmanager
    def _docker_config(self, host: str | None) -> Iterator[dict[str, str]]:
        # The caller's environment; with credentials, DOCKER_CONFIG names a private folder whose
        # config.json holds them for ``host`` (mode 0600), removed afterwards.
        env = dict(os.environ)
        if not self.credentials.username or host is None:
            yield env
            return
        with tempfile.TemporaryDirectory(prefix="builder-cosign-") as folder:
            auth = base64.b64encode(f"{self.credentials.username}:{self.credentials.password}".encode()).decode()
            path = Path(folder) / "config.json"
            path.touch(mode=0o600)
            path.write_text(json.dumps({"auths": {host: {"auth": auth}}}))
            yield {**env, "DOCKER_CONFIG": folder}


#: ``critical.type`` of a signature payload: cosign's simple signing (legacy form) and cosign 3's
#: bundle (https://github.com/sigstore/cosign/blob/main/specs/SIGNATURE_SPEC.md).
SIGNATURE_TYPES = ("cosign container image signature", "https://sigstore.dev/cosign/sign/v1")


def signatures(payloads: list[dict]) -> list[dict]:
    """The payloads of ``cosign verify --output=json`` that are signatures (:data:`SIGNATURE_TYPES`),
    not attestations."""
    return [p for p in payloads if isinstance(p.get("critical"), dict) and p["critical"].get("type") in SIGNATURE_TYPES]


def _json_lines(out: str, ref: str) -> list[dict]:
    try:
        found = [json.loads(line) for line in out.splitlines() if line.strip().startswith(("{", "["))]
    except ValueError:
        raise SignError(f"cosign's verification output for {ref} is not JSON") from None
    flat = [x for item in found for x in (item if isinstance(item, list) else [item])]
    if not flat or not all(isinstance(x, dict) for x in flat):
        raise SignError(f"cosign verified nothing for {ref}")
    return flat


def _statement(envelope: dict, ref: str) -> dict:
    # The in-toto statement a DSSE envelope carries (base64 payload).
    try:
        statement = json.loads(base64.b64decode(envelope["payload"]))
    except (KeyError, TypeError, ValueError):
        raise SignError(f"an attestation of {ref} carries no in-toto statement") from None
    if not isinstance(statement, dict) or not isinstance(statement.get("predicate"), (dict, list)):
        raise SignError(f"an attestation of {ref} carries no predicate")
    return statement
