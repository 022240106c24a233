"""Stage 7 — publish: push an image's tags to the registry and read the manifest digest back.

Credentials come from ``REGISTRY_USERNAME``/``REGISTRY_PASSWORD`` or the Docker config the Engine
client already uses; they are passed to the Engine, never logged. The manifest digest a registry
serves is read through the Engine (docker-py's ``images.get_registry_data``, the Engine's
``/distribution/<ref>/json``), so whatever auth the registry wants (basic, token: Docker Hub, GHCR,
ACR) is the Engine's business, and compared with the digest the push reported. Publishing an image
whose tags already point at the same manifest is a no-op. Tags are pushed in the order given
(immutable first, ``latest`` last), so a push that breaks off never leaves ``latest`` on an image
whose immutable tag is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass

import docker


class PublishError(RuntimeError):
    """A push failed or the registry's digest differs from the pushed one."""


@dataclass
class PublishResult:
    """``digest`` is the manifest digest (``sha256:<hex>``) the registry serves for every pushed tag."""

    repository: str
    tags: list[str]
    digest: str
    pushed: bool


def auth() -> dict | None:
    """The registry credentials from ``REGISTRY_USERNAME``/``REGISTRY_PASSWORD`` as docker-py's
    ``auth_config``, or None (the Engine's own configuration then applies)."""
    user, password = os.environ.get("REGISTRY_USERNAME"), os.environ.get("REGISTRY_PASSWORD")
    return {"username": user, "password": password} if user and password else None


def remote_digest(client: docker.DockerClient, repository: str, tag: str) -> str | None:
    """The manifest digest the registry serves for ``repository:tag``, or None when it has none.

    Raises PublishError when the registry cannot be asked (down, refusing the credentials).
    """
    try:
        return client.images.get_registry_data(f"{repository}:{tag}", auth_config=auth()).id
    except docker.errors.NotFound:
        return None
    except docker.errors.APIError as exc:
        raise PublishError(f"cannot read {repository}:{tag} from the registry: {exc.explanation or exc}") from None


def push(client: docker.DockerClient, repository: str, tags: list[str]) -> PublishResult:
    """Push ``repository:tag`` for each of ``tags`` (already tagged locally) and verify the digests.

    Skips the push when the registry already serves the same manifest for every tag.
    Raises PublishError on a push error or a digest mismatch.
    """
    current = {t: remote_digest(client, repository, t) for t in tags}
    if None not in current.values() and len(set(current.values())) == 1:
        local = _local_digest(client, f"{repository}:{tags[0]}")
        if local is not None and local == next(iter(current.values())):
            return PublishResult(repository, tags, local, pushed=False)
    pushed: dict[str, str] = {}
    for t in tags:
        for chunk in client.api.push(repository, tag=t, stream=True, decode=True, auth_config=auth()):
            if "error" in chunk:
                raise PublishError(f"push {repository}:{t}: {chunk['error']}")
            digest = chunk.get("aux", {}).get("Digest")
            if digest:
                pushed[t] = digest
    digests = set()
    for t in tags:
        remote = remote_digest(client, repository, t)
        if remote is None or remote != pushed.get(t):
            raise PublishError(f"{repository}:{t}: registry serves {remote}, the push reported {pushed.get(t)}")
        digests.add(remote)
    if len(digests) != 1:
        raise PublishError(f"{repository}: tags {tags} point at different manifests {sorted(digests)}")
    return PublishResult(repository, tags, digests.pop(), pushed=True)


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


def _imagetools(*args: str) -> subprocess.CompletedProcess:
    # Callers end the options with "--" before positional references: buildx is a cobra/pflag command,
    # and pflag stops parsing flags at "--" (https://github.com/spf13/pflag#command-line-flag-syntax),
    # so no reference, whatever a report held, can read as an option; flag values go as --flag=value.
    return subprocess.run(["docker", "buildx", "imagetools", *args], capture_output=True, text=True, timeout=600)


def index_manifests(ref: str) -> tuple[str, dict[str, str]] | None:
    """``(digest, {platform: manifest digest})`` of the image index ``ref`` in the registry (read
    with ``docker buildx imagetools inspect --raw``), or None when the registry has no such tag or
    it is not an index."""
    r = _imagetools("inspect", "--raw", "--", ref)
    if r.returncode != 0:
        return None
    try:
        doc = json.loads(r.stdout)
        platforms = {f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"] for m in doc["manifests"]}
    except (ValueError, KeyError, TypeError):
        return None
    return "sha256:" + hashlib.sha256(r.stdout.encode()).hexdigest(), platforms


def _check_names(repository: str, tags: list[str], digests: dict[str, str]) -> None:
    # Everything that becomes part of an imagetools argument, against its grammar.
    from builder import grammar

    try:
        grammar.repository(repository)
        for t in tags:
            grammar.tag(t)
        for d in digests.values():
            grammar.digest(d)
    except ValueError as exc:
        raise PublishError(f"not making an index: {exc}") from None


def push_index(repository: str, tags: list[str], digests: dict[str, str]) -> PublishResult:
    """Make every one of ``tags`` (the immutable tag first, ``latest`` last) name one image index of
    the already pushed manifests ``digests`` ({platform: digest}), with ``docker buildx imagetools
    create`` (https://docs.docker.com/reference/cli/docker/buildx/imagetools/create/). A tag already
    naming exactly these manifests is left alone. Raises PublishError when the index cannot be made
    or the registry serves something else afterwards, or before running anything when a repository,
    tag or digest does not pass its grammar (:mod:`builder.grammar`)."""
    _check_names(repository, tags, digests)
    wanted = {p: d for p, d in digests.items()}
    current = {t: index_manifests(f"{repository}:{t}") for t in tags}
    if all(c is not None and c[1] == wanted for c in current.values()) and len({c[0] for c in current.values()}) == 1:
        return PublishResult(repository, tags, next(iter(current.values()))[0], pushed=False)
    sources = [f"{repository}@{d}" for d in digests.values()]
    for t in tags:  # one at a time, in order: latest only after the immutable tag exists
        r = _imagetools("create", f"--tag={repository}:{t}", "--", *sources)
        if r.returncode != 0:
            raise PublishError(f"imagetools create {repository}:{t}: {' '.join(r.stderr.split())[-300:]}")
    found = {t: index_manifests(f"{repository}:{t}") for t in tags}
    if any(f is None or f[1] != wanted for f in found.values()) or len({f[0] for f in found.values()}) != 1:
        raise PublishError(f"{repository}: tags {tags} do not all name an index of {sorted(wanted)}")
    return PublishResult(repository, tags, next(iter(found.values()))[0], pushed=True)
