"""The local builds a run superseded, removed after it: the builder's images of a repository
(by the matrix's cell-digest label), the rule of which are superseded, and their removal by tag
(:func:`untag`, which the run's removal of local copies the registry holds shares,
:class:`builder.run.space.LocalCopyRemover`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Sequence

import docker
import requests


@dataclass(frozen=True)
class LocalBuild:
    """One local image of a repository: ``id``, its ``tags`` (``repository:tag``), ``created``
    (epoch seconds), ``arch`` (its OCI architecture), ``size`` (bytes) and its ``labels``."""

    id: str
    tags: tuple[str, ...]
    created: float
    arch: str
    size: int
    labels: dict[str, str] = field(default_factory=dict, hash=False, compare=False)


def superseded(builds: list[LocalBuild], current: set[str], keep_last: int, moving: tuple[str, ...],
               used: set[str], before: float) -> list[LocalBuild]:
    """The local builds of one repository to remove after a run: ``builds`` of the architectures
    this run built (``current``: its image ids; a build for another platform is not superseded by
    this one) created ``before`` the run started (epoch seconds: a concurrent run's build is never
    taken for an old one), less ``current``, less any tagged with a moving tag (``moving``: the last
    build that passed keeps ``latest``, ``latest-<arch>``), less any a container uses (``used``),
    keeping per architecture the ``keep_last - 1`` newest of the rest (``keep_last`` counts the
    current build). A build still holding a run's temporary tag (``build-<run id>``) is in flight
    and kept."""
    def has_moving_tag(b: LocalBuild) -> bool:  # or a run's temporary tag (build-<run id>): in flight
        names = [t.rsplit(":", 1)[1] for t in b.tags]
        return any(t == m or t.startswith(f"{m}-") for t in names for m in (*moving, "build"))

    built = {b.arch for b in builds if b.id in current}
    others = sorted((b for b in builds if b.arch in built and b.created < before and b.id not in current | used
                     and not has_moving_tag(b)), key=lambda b: b.created, reverse=True)
    out: list[LocalBuild] = []
    for arch in sorted(built):
        out += [b for b in others if b.arch == arch][max(0, keep_last - 1):]
    return out


def local_builds(client: docker.DockerClient, repository: str | None, label: str) -> list[LocalBuild]:
    """The builder's images in ``repository`` (None: in any): those carrying the label ``label``
    (the matrix's cell-digest label), from ``GET /images/json`` then one inspect each, which gives
    every tag of the image, in any repository (an image removed meanwhile is left out)."""
    out = []
    for row in client.api.images(name=repository, filters={"label": label}):
        try:
            found = client.api.inspect_image(row["Id"])
        except docker.errors.NotFound:
            continue
        out.append(LocalBuild(row["Id"], tuple(found.get("RepoTags") or ()), float(row.get("Created", 0)),
                              found.get("Architecture", ""), int(row.get("Size", 0)), row.get("Labels") or {}))
    return out


def engine_time(client: docker.DockerClient) -> float:
    """The Engine's clock now (epoch seconds, from ``GET /info`` SystemTime), the clock its images'
    creation times use; this machine's when the Engine does not say."""
    try:
        return datetime.fromisoformat(client.info()["SystemTime"]).timestamp()
    except (KeyError, TypeError, ValueError, docker.errors.DockerException, requests.RequestException):
        return time.time()


def images_in_use(client: docker.DockerClient) -> set[str]:
    """The ids (``sha256:<hex>``) of the images a container, running or not, was created from: one
    ``GET /containers/json?all=1``, no per-container inspect. Raises docker.errors.DockerException,
    requests.RequestException."""
    return {c["ImageID"] for c in client.api.containers(all=True)}


def remove_superseded(client: docker.DockerClient, repositories: dict[str, set[str]], label: str, keep_last: int,
                      moving: tuple[str, ...], before: float, log: Callable[[str], None]) -> int:
    """Untag and remove, in each repository of ``repositories`` (``{repository: this run's image
    ids}``), the builds :func:`superseded` names among the builder's (:func:`local_builds` with
    ``label``); an image another repository also tags keeps those
    tags and its layers. Returns at most the bytes freed (the removed images' sizes, shared layers
    included, though those stay).
    Housekeeping only: an Engine error is one ``log`` line, never an exception."""
    freed = 0
    try:
        used = images_in_use(client)
        for repository, current in repositories.items():
            for build in superseded(local_builds(client, repository, label), current, keep_last, moving, used, before):
                freed += _untag(client, build, repository, log)
    except (docker.errors.DockerException, requests.RequestException) as exc:
        log(f"superseded builds not removed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
    return freed


def untag(client: docker.DockerClient, tags: Sequence[str], repository: str, log: Callable[[str], None]) -> list[str]:
    """Remove, one by one, the tags of ``tags`` (an image's ``repository:tag`` references, as the
    Engine lists them) that are in ``repository``, with docker-py's ``remove_image(tag,
    noprune=False)`` (``DELETE /images/<tag>``): once no tag names the image, the Engine removes it,
    its content and snapshots. A tag of another repository is never touched. Returns the tags
    removed (empty when none is in ``repository``); when the Engine refuses one, one ``log`` line
    (``kept <tag>: why``), and the tags after it stay: the image was removed only when the list
    returned is all of ``tags``. Raises docker.errors.DockerException (but APIError) and
    requests.RequestException."""
    removed: list[str] = []
    for t in (t for t in tags if t.rsplit(":", 1)[0] == repository):
        try:
            client.api.remove_image(t, noprune=False)
        except docker.errors.APIError as exc:
            log(f"kept {t}: {exc.explanation or exc}")
            break
        removed.append(t)
    return removed


def _untag(client: docker.DockerClient, build: LocalBuild, repository: str, log: Callable[[str], None]) -> int:
    # Remove build's tags in repository; the bytes freed when that was every tag it had.
    own = untag(client, build.tags, repository, log)
    if not own:  # untagged meanwhile, or the Engine kept the first
        return 0
    if len(own) < len(build.tags):  # another repository, or a tag the Engine kept, still names it: its layers stay
        log(f"untagged superseded {', '.join(own)} (the image keeps its other tags)")
        return 0
    log(f"removed superseded {', '.join(own)} (up to {build.size / 1e6:.0f} MB: layers kept builds share stay)")
    return build.size
