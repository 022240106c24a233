"""Stage 7 — publish: push an image's tags to the registry and read the manifest digest back.

Credentials come from ``REGISTRY_USERNAME``/``REGISTRY_PASSWORD`` or the Docker config the Engine
client already uses; they are passed to the Engine, never logged. After a push the manifest digest
is read back from the registry's HTTP API (``HEAD /v2/<repository>/manifests/<tag>``, see
https://distribution.github.io/distribution/spec/api/#existing-manifests) and compared with the
digest the Engine reported. Publishing an image whose tags already point at the same manifest is a
no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import docker
import requests

MANIFEST_TYPES = ", ".join((
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
))


class PublishError(RuntimeError):
    """A push failed or the registry's digest differs from the pushed one."""


@dataclass
class PublishResult:
    """``digest`` is the manifest digest (``sha256:<hex>``) the registry serves for every pushed tag."""

    repository: str
    tags: list[str]
    digest: str
    pushed: bool


def _auth() -> dict | None:
    user, password = os.environ.get("REGISTRY_USERNAME"), os.environ.get("REGISTRY_PASSWORD")
    return {"username": user, "password": password} if user and password else None


def _split(repository: str) -> tuple[str, str]:
    host, _, path = repository.partition("/")
    return host, path


def remote_digest(repository: str, tag: str, timeout: float = 30.0) -> str | None:
    """The manifest digest the registry serves for ``repository:tag``, or None when absent (404).

    ``repository`` is ``host[:port]/path``; loopback registries are spoken to over plain HTTP, others
    over HTTPS. Raises PublishError for any other answer.
    """
    host, path = _split(repository)
    scheme = "http" if host.split(":")[0] in ("127.0.0.1", "localhost") else "https"
    auth = _auth()
    try:
        r = requests.head(f"{scheme}://{host}/v2/{path}/manifests/{tag}", timeout=timeout,
                          headers={"Accept": MANIFEST_TYPES},
                          auth=(auth["username"], auth["password"]) if auth else None)
    except requests.RequestException as exc:
        raise PublishError(f"registry {host} did not answer: {exc}") from None
    if r.status_code == 404:
        return None
    if r.status_code != 200:
        raise PublishError(f"HEAD {path}:{tag} on {host} answered {r.status_code}")
    return r.headers.get("Docker-Content-Digest")


def push(client: docker.DockerClient, repository: str, tags: list[str]) -> PublishResult:
    """Push ``repository:tag`` for each of ``tags`` (already tagged locally) and verify the digests.

    Skips the push when the registry already serves the same manifest for every tag.
    Raises PublishError on a push error or a digest mismatch.
    """
    current = {t: remote_digest(repository, t) for t in tags}
    if None not in current.values() and len(set(current.values())) == 1:
        local = _local_digest(client, f"{repository}:{tags[0]}")
        if local is not None and local == next(iter(current.values())):
            return PublishResult(repository, tags, local, pushed=False)
    pushed: dict[str, str] = {}
    for t in tags:
        for chunk in client.api.push(repository, tag=t, stream=True, decode=True, auth_config=_auth()):
            if "error" in chunk:
                raise PublishError(f"push {repository}:{t}: {chunk['error']}")
            digest = chunk.get("aux", {}).get("Digest")
            if digest:
                pushed[t] = digest
    digests = set()
    for t in tags:
        remote = remote_digest(repository, t)
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
