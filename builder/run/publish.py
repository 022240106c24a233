"""Publish: push a build's tags through the Engine and make image indexes, each checked against
what the registry then serves (:class:`builder.engine.registry.Registry`).

The pushed digest is read from the registry, never from the Engine's push stream (the containerd
image store reports none there). What the registry serves is the local image when its digest is the
image id (containerd image store: the id is the manifest's or index's digest) or its config's digest
is (classic store: the id is the config's digest, and the Engine compresses the layers anew when it
pushes, so the manifest digest is known only once pushed).

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
    ``pushed`` is False when the registry already had it; ``compressed_bytes`` the sum of the
    manifest's layers as the registry serves them (None for an index)."""

    repository: str
    tags: list[str]
    digest: str
    pushed: bool
    compressed_bytes: int | None = None


def _digests(registry: Registry, repository: str, tags: list[str]) -> dict[str, str | None]:
    try:
        return {t: registry.digest(repository, t) for t in tags}
    except RegistryError as exc:
        raise PublishError(str(exc)) from None


def _engine_push(client: docker.DockerClient, credentials: Credentials, repository: str, tag: str) -> None:
    # The Engine pushes the layers and the manifest; its stream only tells whether that failed.
    for chunk in client.api.push(repository, tag=tag, stream=True, decode=True, auth_config=credentials.docker_auth()):
        if "error" in chunk:
            raise PublishError(f"push {repository}:{tag}: {chunk['error']}")


def _served(registry: Registry, repository: str, tags: list[str], image_id: str) -> tuple[str, dict] | None:
    # The manifest every tag names, when they all name one and it is the local image (module doc).
    digests = set(_digests(registry, repository, tags).values())
    if len(digests) != 1 or None in digests:
        return None
    try:
        digest, manifest = registry.manifest(repository, digests.pop()) or (None, {})
    except RegistryError as exc:
        raise PublishError(str(exc)) from None
    config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    return (digest, manifest) if image_id in (digest, config.get("digest")) else None


def layer_bytes(manifest: dict) -> int | None:
    """The compressed size (bytes) of an image manifest's layers as listed in it; None for an index
    or a manifest whose layers do not say (https://github.com/opencontainers/image-spec/blob/main/manifest.md)."""
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not all(isinstance(layer, dict) and type(layer.get("size")) is int
                                               and layer["size"] >= 0 for layer in layers):
        return None
    return sum(layer["size"] for layer in layers)


def push(client: docker.DockerClient, registry: Registry, repository: str, tags: list[str]) -> PublishResult:
    """Push ``repository:tag`` for each of ``tags`` (already tagged locally), in order, and check
    that the registry then serves the local image (see the module doc) under every tag. Pushes
    nothing when it already does. Raises PublishError on a push error, or when the tags name
    different manifests or one that is not the local image."""
    image_id = client.images.get(f"{repository}:{tags[0]}").id
    found = _served(registry, repository, tags, image_id)
    pushed = found is None
    if pushed:
        for t in tags:
            _engine_push(client, registry.credentials, repository, t)
        found = _served(registry, repository, tags, image_id)
    if found is None:
        raise PublishError(f"{repository}: after the push, tags {tags} do not all name the local image {image_id} "
                           f"(the registry serves {sorted(map(str, _digests(registry, repository, tags).values()))})")
    return PublishResult(repository, tags, found[0], pushed=pushed, compressed_bytes=layer_bytes(found[1]))


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
    the already pushed manifests ``digests`` ({platform name: digest}, :func:`builder.engine.registry.make_index`).
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
