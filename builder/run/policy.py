"""The publish policy: how an image's per-platform builds are named, tagged and published. Chosen once
per image (:func:`choose`) and recorded as the report's ``publish`` name; a run makes one object of
each policy (:func:`table`) and every step asks the image's (:meth:`builder.run.context.RunContext.policy`)
instead of branching on its name. When the moving tags move is :func:`latest_moves`, for single runs
and ``builder merge`` alike.

- :class:`Manifest`: an image built for one platform is published as that build's manifest under the
  immutable tag and the moving ones (``latest``).
- :class:`Index`: an image built for several platforms. Each build is pushed under
  ``<immutable>-<arch>``, then the immutable and moving tags name one OCI image index of them
  (https://github.com/opencontainers/image-spec/blob/main/image-index.md), as docker-library does.
- :class:`PerPlatform`: one job of a run split by platform (``--by-platform``). Each build is named
  from its own versions and image id and pushed under ``<tag>-<arch>`` and ``latest-<arch>`` only;
  ``builder merge`` makes the index (docker-stacks' merge-tags job).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Sequence

from builder.engine.registry import Registry
from builder.matrix.platform import DEFAULT, Platform
from builder.matrix.schema import TagPolicy
from builder.run import publish, taggers
from builder.run.report import ImageReport, PublishName, Status

#: ``versions(platform) -> (framework version, Python version)`` read in that platform's build.
Versions = Callable[[Platform], tuple[str, str]]


def _suffix(platform: Platform) -> str:
    return platform.tag_suffix


@dataclass(frozen=True)
class Manifest:
    """One platform, one manifest: the build carries the image's tags."""

    tags: TagPolicy
    name: PublishName = "manifest"
    #: The image's tags name an image index of its builds (which is signed on its own).
    makes_index: ClassVar[bool] = False
    #: Each build is published on its own, under per-platform tags; the image's tags name nothing
    #: as a whole.
    per_platform: ClassVar[bool] = False

    def merged(self) -> Manifest | None:
        """The policy ``builder merge`` publishes an image under from its jobs' reports of this
        policy, or None: the job published it whole."""
        return None

    def build_tags(self, image_ids: dict[Platform, str], versions: Versions,
                   existing: Callable[[Platform], str | None]) -> tuple[list[str], dict[Platform, str]]:
        """``(the image's tags, {platform: the build's own tag})`` for builds with ``image_ids``
        ({platform: ``sha256:<hex>``}). A tag the policy gave this very image before
        (``existing(platform)``) is kept without reading versions again."""
        (platform, image_id), = image_ids.items()
        own = existing(platform) or taggers.immutable_tag(self.tags, *versions(platform), image_id)
        return [own], {platform: own}

    def build_tag(self, immutable: str, platform: Platform) -> str:
        """The own tag of the build of ``platform`` of the image named ``immutable``."""
        return immutable

    def immutable_of(self, own_tag: str, platform: Platform) -> str | None:
        """The image's immutable tag a build's own tag names, or None when it is not such a tag."""
        return own_tag

    def local_moving(self, platform: Platform) -> list[str]:
        """The moving tags the local build of ``platform`` gets once every platform passed."""
        return list(self.tags.moving)

    def image_tags(self, rep: ImageReport) -> list[str]:
        """The image's tags once tested: immutable first, moving last."""
        return [rep.tags[0], *self.tags.moving]

    def pushed_tags(self, rep: ImageReport, platform: Platform) -> list[str]:
        """The tags the build of ``platform`` is pushed under, in push order."""
        return list(rep.tags)

    def moving_names(self, rep: ImageReport) -> set[str]:
        """Every moving tag of the image: the tag policy's and each build's local ones."""
        return set(self.tags.moving) | {t for b in rep.platforms for t in self.local_moving(b.platform)}

    def fixed_tags(self, rep: ImageReport, platform: Platform | None = None) -> list[str]:
        """The tags that never move, in push order: of the build of ``platform`` (its pushed tags),
        or with None of the image (``rep.tags``)."""
        tags, moving = rep.tags if platform is None else self.pushed_tags(rep, platform), self.moving_names(rep)
        return [t for t in tags if t not in moving]

    def publish_image(self, registry: Registry, rep: ImageReport, tags: list[str]) -> tuple[str | None, bool]:
        """Once every build is pushed: make ``tags`` (the image's immutable tags, then, once signed,
        its moving ones) name the image; ``(the digest they name, or None when they name none;
        whether anything was pushed)``. Raises PublishError."""
        return rep.platforms[0].digest, False

    def move_image(self, registry: Registry, rep: ImageReport, tags: list[str]) -> bool:
        """Once everything they will name is signed: make the image's moving ``tags``
        (:attr:`Moves.image`) name it (:meth:`publish_image`); True when anything was pushed. Raises
        PublishError unless they name ``rep.digest``, what was signed."""
        if not tags:
            return False
        digest, pushed = self.publish_image(registry, rep, tags)
        if digest != rep.digest:
            raise publish.PublishError(f"{rep.repository}: {', '.join(tags)} name {digest}, not {rep.digest}")
        return pushed


@dataclass(frozen=True)
class Index(Manifest):
    """Several platforms, one image index; each build under ``<immutable>-<arch>``."""

    name: PublishName = "index"
    makes_index: ClassVar[bool] = True

    def build_tags(self, image_ids, versions, existing):
        """The index's immutable tag is the tag policy filled with the linux/amd64 build's versions
        and, for the image id, the sha256 of every build's image id (:func:`builder.run.taggers.index_tag`),
        so it names exactly these builds; each build gets it plus ``-<arch>``."""
        own = taggers.index_tag(self.tags, *versions(DEFAULT), list(image_ids.values()))
        return [own], {p: self.build_tag(own, p) for p in image_ids}

    def build_tag(self, immutable, platform):
        return immutable + _suffix(platform)

    def immutable_of(self, own_tag, platform):
        return own_tag[:-len(_suffix(platform))] if own_tag.endswith(_suffix(platform)) else None

    def local_moving(self, platform):
        return list(self.tags.moving) if platform == DEFAULT else [m + _suffix(platform) for m in self.tags.moving]

    def pushed_tags(self, rep, platform):
        return [rep.build(platform).tag]

    def publish_image(self, registry, rep, tags):
        """``tags`` made one index of the pushed builds (:func:`builder.run.publish.push_index`)."""
        index = publish.push_index(registry, rep.repository, tags, {b.platform.name: b.digest for b in rep.platforms})
        return index.digest, index.pushed


@dataclass(frozen=True)
class PerPlatform(Manifest):
    """One job of a run split by platform: each build named and pushed on its own."""

    name: PublishName = "per-platform"
    per_platform: ClassVar[bool] = True

    def merged(self):
        """An image index of every job's build (:class:`Index`)."""
        return Index(self.tags)

    def build_tags(self, image_ids, versions, existing):
        """Each build: the tag policy filled with its own versions and image id, plus ``-<arch>``
        (``1.9.1-py3.11.2-<id>-arm64``), so a job needs no other platform's build to name its own."""
        own = {p: taggers.immutable_tag(self.tags, *versions(p), i) + _suffix(p) for p, i in image_ids.items()}
        return list(own.values()), own

    def build_tag(self, immutable, platform):
        """A build's own tag is its own immutable tag plus ``-<arch>``."""
        return immutable + _suffix(platform)

    def local_moving(self, platform):
        return [m + _suffix(platform) for m in self.tags.moving]

    def image_tags(self, rep):
        return [b.tag for b in rep.platforms] + [t for b in rep.platforms for t in self.local_moving(b.platform)]

    def pushed_tags(self, rep, platform):
        return [rep.build(platform).tag, *self.local_moving(platform)]

    def publish_image(self, registry, rep, tags):
        """Nothing: each build has its own tags; ``builder merge`` makes the index."""
        return None, False


POLICIES = {p.name: p for p in (Manifest, Index, PerPlatform)}


def choose(platforms: tuple[Platform, ...], matrix_platforms: tuple[Platform, ...], by_platform: bool) -> PublishName:
    """The policy of an image built for ``platforms`` (the run's, maybe narrowed) of the matrix's
    ``matrix_platforms``: per-platform in a run split by platform for an image the matrix builds for
    several; an index for several platforms; else one manifest."""
    if by_platform and len(matrix_platforms) > 1:
        return "per-platform"
    return "index" if len(platforms) > 1 else "manifest"


def table(tags: TagPolicy) -> dict[PublishName, Manifest]:
    """``{name: policy}``: one object of each policy with the matrix's tag policy, made once per run
    (or merge); an image's is the one its report's ``publish`` names."""
    return {name: cls(tags) for name, cls in POLICIES.items()}


@dataclass(frozen=True)
class Moves:
    """Where an image's moving tags move in the registry: ``builds`` {platform: the moving tags
    pushed as that build's manifest (``latest`` of an image of one manifest, ``latest-<arch>`` of a
    job of a split run)}, ``image`` the moving tags :meth:`Manifest.publish_image` makes name the
    image (an image index's ``latest``), each in push order."""

    builds: dict[Platform, list[str]]
    image: list[str]


def latest_moves(publish_as: Manifest, rep: ImageReport, platforms: Sequence[Platform]) -> Moves | None:
    """When and where the moving tags of ``rep``, published under ``publish_as``, move, for a run's
    push (:func:`builder.run.steps.push.push`) and ``builder merge`` alike: None while they may not
    (the image did not pass its smoke tests on every platform, status tested, or one of
    ``platforms``, every platform it is published for, has no pushed build: no digest); else
    :class:`Moves`. The caller moves them only once everything they will name is signed, and checks
    they name what was signed."""
    if rep.status != Status.TESTED or any(b is None or b.digest is None for b in map(rep.built, platforms)):
        return None
    moving = publish_as.moving_names(rep)
    return Moves({b.platform: [t for t in publish_as.pushed_tags(rep, b.platform) if t in moving] for b in rep.platforms},
                 [t for t in rep.tags if t in moving])
