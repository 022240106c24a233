"""The base image of an extension, verified before anything is written or built: with a public key
(``--verify-key``, or ``verify: {key: …}`` in the config), ``builder extend`` runs ``builder verify``'s
checks (:mod:`builder.sign.verify`) on the base reference and builds FROM the digest it verified,
never the tag, which could move to another image between the check and the build.
"""

from __future__ import annotations

from pathlib import Path

from builder.engine.registry import Credentials, Registry, RegistryError, host_of
from builder.extend.inference_config import ExtendError, InferenceConfig, Paths
from builder.matrix import Matrix
from builder.matrix.inputs import shown
from builder.sign import cosign
from builder.sign import verify as checks


def key_of(cfg: InferenceConfig, config_path: Path, option: str | None, allow_outside: list[Path] = ()) -> str | None:
    """The verification key: ``option`` (``--verify-key``) when given (an empty one is refused),
    else the config's ``verify.key`` (a path relative to the config's folder that must stay inside
    it or one of ``allow_outside``, as every path of the config, :class:`Paths`; or a key manager
    URI), else None. Raises ExtendError when it names neither an existing file nor a key manager
    URI, or a file outside those folders."""
    value, where = (option, "--verify-key") if option is not None else (cfg.verify.key if cfg.verify else None, "verify.key")
    if value is None:
        return None
    if where == "verify.key" and not value.startswith(cosign.KMS_SCHEMES):
        path = config_path.parent / value
        value = str(path.resolve())
        paths = Paths(config_path, list(allow_outside))
        if not paths.inside(path):
            raise ExtendError([f"{config_path.name}: verify.key: {shown(cfg.verify.key)} resolves to {value}, outside the "
                               f"config's folder {config_path.parent} (name another root with --allow-outside)"])
    try:
        return cosign.key_reference(value)
    except ValueError as exc:
        raise ExtendError([f"{where}: {exc}"]) from None


def verified_base(ref: str, key: str, matrix: Matrix, build_dir: Path, credentials: Credentials = Credentials()) -> str:
    """``repository@digest`` of the base ``ref`` (``host[:port]/path:tag`` or ``…@sha256:…``) once
    every check of :func:`builder.sign.verify.verify` holds for it with ``key``, reading the registry
    with ``credentials`` (the config's ``baseImageRegistry``; none: the environment's, or what
    ``docker login`` stored). Raises ExtendError with the first failed check (an unsigned, tampered
    or wrongly signed base)."""
    credentials = credentials if credentials.username else Credentials.from_env()
    try:
        repository, reference = checks.split_reference(ref)
    except ValueError as exc:
        raise ExtendError([f"baseImage: {exc}; only a registry reference can be verified (or pass --no-verify)"]) from None
    registry = Registry(host_of(repository), credentials)
    try:
        digest = registry.digest(repository, reference)
    except RegistryError as exc:
        raise ExtendError([f"baseImage: {exc}"]) from None
    if digest is None:
        raise ExtendError([f"baseImage: the registry has no {ref}"])
    pinned = cosign.by_digest(repository, digest)
    tool = cosign.Cosign(cosign.ensure(build_dir), credentials)
    failed = [f for f in checks.verify(pinned, tool, key, registry, matrix) if not f.ok]
    if failed:
        raise ExtendError([f"baseImage: {ref} fails verification ({len(failed)} check(s)): {failed[0].line()}"])
    return pinned
