"""Publish: push a build's tags through the Engine and make image indexes, each checked against
what the registry then serves (:class:`builder.engine.registry.Registry`).

Tags are pushed in the order given (immutable first, ``latest`` last), so a push that breaks off
never leaves ``latest`` on an image whose immutable tag is missing. Publishing tags that already
name the same manifest (or the same index) is a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass

import docker

from builder.engine.registry import Credentials, Registry, RegistryError, make_index
from builder.matrix import grammar


class PublishError(RuntimeError):
    """A push failed or the registry's digest differs from the pushed one."""


@dataclass(frozen=True)
class PublishResult:
    """``digest`` is the manifest (or index) digest (``sha256:<hex>``) every pushed tag names;
    ``pushed`` is False when the registry already had it."""

    repository: str
    tags: list[str]
    digest: str
    pushed: bool


def _digests(registry: Registry, repository: str, tags: list[str]) -> dict[str, str | None]:
    try:
        return {t: registry.digest(repository, t) for t in tags}
    except RegistryError as exc:
        raise PublishError(str(exc)) from None


def _engine_push(client: docker.DockerClient, credentials: Credentials, repository: str, tag: str) -> str | None:
    # The Engine pushes the layers and the manifest; returns the digest its stream reported.
    digest = None
    for chunk in client.api.push(repository, tag=tag, stream=True, decode=True, auth_config=credentials.docker_auth()):
        if "error" in chunk:
            raise PublishError(f"push {repository}:{tag}: {chunk['error']}")
        digest = chunk.get("aux", {}).get("Digest") or digest
    return digest


def push(client: docker.DockerClient, registry: Registry, repository: str, tags: list[str]) -> PublishResult:
    """Push ``repository:tag`` for each of ``tags`` (already tagged locally) and check that the
    registry serves what the Engine pushed for every tag. Skips the push when the registry already
    serves, for every tag, the manifest this Engine last pushed or pulled for the first one.
    Raises PublishError on a push error or a digest mismatch."""
    current = _digests(registry, repository, tags)
    local = _local_digest(client, f"{repository}:{tags[0]}")
    if local is not None and set(current.values()) == {local}:
        return PublishResult(repository, tags, local, pushed=False)
    reported = {t: _engine_push(client, registry.credentials, repository, t) for t in tags}
    served = _digests(registry, repository, tags)
    for t in tags:
        if served[t] is None or served[t] != reported[t]:
            raise PublishError(f"{repository}:{t}: registry serves {served[t]}, the push reported {reported[t]}")
    if len(set(served.values())) != 1:
        raise PublishError(f"{repository}: tags {tags} point at different manifests {sorted(set(served.values()))}")
    return PublishResult(repository, tags, served[tags[0]], pushed=True)


def _local_digest(client: docker.DockerClient, ref: str) -> str | None:
    # RepoDigests holds "<repository>@sha256:..." once this Engine pushed or pulled the image.
    repository = ref.rsplit(":", 1)[0]
    try:
        image = client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None
    for rd in image.attrs.get("RepoDigests", []):
        repo, _, digest = rd.partition("@")
        if repo == repository:
            return digest
    return None


def _check_names(repository: str, tags: list[str], digests: dict[str, str]) -> None:
    # Everything that becomes part of an imagetools argument, against its grammar.
    try:
        grammar.repository(repository)
        for t in tags:
            grammar.tag(t)
        for d in digests.values():
            grammar.digest(d)
    except ValueError as exc:
        raise PublishError(f"not making an index: {exc}") from None


def _indexes(registry: Registry, repository: str, tags: list[str]) -> dict[str, tuple[str, dict[str, str]] | None]:
    try:
        return {t: registry.index(repository, t) for t in tags}
    except RegistryError as exc:
        raise PublishError(str(exc)) from None


def _same_index(found: dict, wanted: dict[str, str]) -> str | None:
    # The one index digest every tag names, when each names an index of exactly ``wanted``.
    if any(f is None or f[1] != wanted for f in found.values()) or len({f[0] for f in found.values()}) != 1:
        return None
    return next(iter(found.values()))[0]


def push_index(registry: Registry, repository: str, tags: list[str], digests: dict[str, str]) -> PublishResult:
    """Make every one of ``tags`` (the immutable tag first, ``latest`` last) name one image index of
    the already pushed manifests ``digests`` ({platform: digest}, :func:`builder.engine.registry.make_index`).
    Tags already naming exactly these manifests are left alone. Raises PublishError when the index
    cannot be made or the registry serves something else afterwards, or before running anything
    when a repository, tag or digest does not pass its grammar (:mod:`builder.matrix.grammar`)."""
    _check_names(repository, tags, digests)
    same = _same_index(_indexes(registry, repository, tags), digests)
    if same is not None:
        return PublishResult(repository, tags, same, pushed=False)
    for t in tags:  # one at a time, in order: latest only after the immutable tag exists
        try:
            make_index(repository, t, list(digests.values()))
        except RegistryError as exc:
            raise PublishError(str(exc)) from None
    made = _same_index(_indexes(registry, repository, tags), digests)
    if made is None:
        raise PublishError(f"{repository}: tags {tags} do not all name an index of {sorted(digests)}")
    return PublishResult(repository, tags, made, pushed=True)
