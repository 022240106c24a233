"""cosign, the one tool that signs, attests and verifies (https://docs.sigstore.dev/cosign/): found on
PATH, or put in place from Debian 13's ``cosign`` package (a static binary, like the buildx plugin,
:mod:`builder.engine.debian_suite`) as root on Debian.

Every call goes through :class:`Cosign`: references are checked against their grammar and passed
after ``--``, so none can read as an option. Key-based signing without a transparency log is the
default (no Rekor is reachable from every build machine); ``keyless`` leaves the key out and lets
cosign use Sigstore's Fulcio and Rekor. The key's password reaches cosign as ``COSIGN_PASSWORD``
from the caller's environment only; the registry credentials as a Docker config file in a private
temporary folder (never on a command line, where ``ps`` shows them).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from builder import files
from builder.engine import debian_suite
from builder.engine.host import EngineError, can_provision
from builder.engine.registry import Credentials, host_of, insecure
from builder.matrix import grammar

#: Where a provisioned cosign goes (the Debian package's own binary, unchanged).
INSTALLED = Path("/usr/local/bin/cosign")
#: The Debian 13 package that holds cosign 2.5.
PACKAGE = "cosign"
#: URI schemes of the key managers cosign takes a key reference from
#: (https://docs.sigstore.dev/cosign/key_management/overview/).
KMS_SCHEMES = ("awskms://", "gcpkms://", "azurekms://", "hashivault://", "k8s://", "pkcs11:")
#: Seconds one cosign call may take (a registry round trip or a few).
TIMEOUT = 600


class SignError(RuntimeError):
    """cosign is missing, or a signature, attestation or verification failed (one line)."""


#: The cosign major version whose flags and storage (``sha256-<hex>.sig``/``.att`` tags) this module uses.
MAJOR = "v2."


def version(path: str | Path = "cosign") -> str | None:
    """cosign's ``GitVersion`` (``v2.5.0``), or None when it cannot run."""
    try:
        r = subprocess.run([str(path), "version", "--json"], capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        return json.loads(r.stdout).get("gitVersion") if r.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError, AttributeError):
        return None


def supported(path: str | Path) -> bool:
    """True for a cosign of major version 2 (:data:`MAJOR`), or an unstamped build (Debian's reports
    ``devel``) whose ``sign`` still has version 2's ``--tlog-upload`` flag."""
    found = version(path)
    if found is None or found.startswith(MAJOR):
        return found is not None
    if found != "devel":
        return False
    r = subprocess.run([str(path), "sign", "--help"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    return "--tlog-upload" in r.stdout


def ensure(state_dir: Path, mirror: str | None = None) -> Path:
    """The cosign executable: ``cosign`` on PATH when it is version 2 (:data:`MAJOR`), else
    :data:`INSTALLED` from Debian 13's package (downloaded under ``state_dir``/tools, as root on
    Debian only). Raises SignError naming the package anywhere else, or when the download or the
    installed binary fails."""
    found = shutil.which("cosign")
    if found and supported(found):
        return Path(found)
    if not can_provision() or (found and Path(found) == INSTALLED):
        raise SignError(f"cosign {MAJOR}x is missing{f' ({found} is {version(found)})' if found else ''}: install it "
                        "(Debian 13: the cosign package; https://docs.sigstore.dev/cosign/system_config/installation/)")
    files.claim_folder(state_dir)
    try:
        [deb] = debian_suite.download([PACKAGE], files.make_folder(state_dir / "tools").resolve(), mirror)
    except EngineError as exc:
        raise SignError(str(exc)) from None
    unpacked = deb.parent / "unpacked"
    shutil.rmtree(unpacked, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    files.copy_atomic(unpacked / "usr/bin/cosign", INSTALLED, files.EXEC_MODE)
    shutil.rmtree(unpacked)
    if not supported(INSTALLED):
        raise SignError(f"installed {INSTALLED} from {deb.name}, but it is no cosign {MAJOR}x")
    return INSTALLED


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
    """One cosign executable with its registry settings: ``credentials`` for the registry (none:
    what ``docker login`` stored), ``keyless`` for Sigstore's public services instead of a key."""

    executable: Path
    credentials: Credentials = Credentials()
    keyless: bool = False

    def sign(self, ref: str, key: str) -> None:
        """Sign the manifest or index ``ref`` (``repository@digest``) with ``key``
        (:func:`key_reference`). Raises SignError."""
        self._run(["sign", "--yes", *self._key(key), *self._registry(ref), "--", ref], ref)

    def attest(self, ref: str, key: str, predicate: Path, predicate_type: str) -> None:
        """Attach an in-toto attestation of ``predicate`` (a JSON file) of ``predicate_type`` (a
        cosign type name or a URI) to ``ref``, signed with ``key``, replacing an earlier one of the
        same type. Raises SignError."""
        self._run(["attest", "--yes", "--replace", f"--type={predicate_type}", f"--predicate={predicate}",
                   *self._key(key), *self._registry(ref), "--", ref], ref)

    def verify(self, ref: str, public_key: str) -> list[dict]:
        """The signed payloads (simple signing JSON) of ``ref`` whose signature ``public_key``
        verifies. Raises SignError when none does."""
        out = self._run(["verify", f"--key={public_key}", *self._verify_flags(), *self._registry(ref),
                         "--output=json", "--", ref], ref)
        return _json_lines(out, ref)

    def attestations(self, ref: str, public_key: str, predicate_type: str) -> list[dict]:
        """The in-toto statements of ``predicate_type`` attached to ``ref`` whose signature
        ``public_key`` verifies (cosign checks their subject is ``ref``'s digest). Raises SignError
        when there is none."""
        out = self._run(["verify-attestation", f"--key={public_key}", f"--type={predicate_type}",
                         *self._verify_flags(), *self._registry(ref), "--output=json", "--", ref], ref)
        return [_statement(envelope, ref) for envelope in _json_lines(out, ref)]

    def public_key(self, key: str) -> str:
        """The PEM public key of the private ``key``. Raises SignError (a wrong or missing password)."""
        self._key(key)
        return self._run(["public-key", f"--key={key}"])

    def _key(self, key: str) -> list[str]:
        # A key file is encrypted: without COSIGN_PASSWORD cosign would wait for a terminal.
        if not self.keyless and not key.startswith(KMS_SCHEMES) and "COSIGN_PASSWORD" not in os.environ:
            raise SignError("COSIGN_PASSWORD is not set: cosign needs the signing key's password")
        return [] if self.keyless else [f"--key={key}", "--tlog-upload=false"]

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
