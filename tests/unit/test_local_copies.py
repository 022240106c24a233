"""The local copies a run removes when a build needs their space: which images qualify (the registry
holds them, no pending child needs them) and what their removal untags, on a fake Engine (offline;
the wiring into the run's disk schedule is in test_schedule.py)."""

from __future__ import annotations

from types import SimpleNamespace

import docker
import pytest

from builder.matrix.platform import PLATFORMS
from builder.run import space
from builder.run.report import ImageReport, PlatformBuild, Status
from builder.run.task_graph import graph

AMD, ARM = PLATFORMS["linux/amd64"], PLATFORMS["linux/arm64"]
REGISTRY = "127.0.0.1:5000"


def _id(c: str) -> str:
    return "sha256:" + c * 64


#: A root, its child, the child's child, and a leaf root: the run's lineage.
SPECS = [SimpleNamespace(name="root", parent=None, platforms=(AMD, ARM)),
         SimpleNamespace(name="child", parent="root", platforms=(AMD,)),
         SimpleNamespace(name="grandchild", parent="child", platforms=(AMD,)),
         SimpleNamespace(name="leaf", parent=None, platforms=(AMD,))]
GRAPH = graph(SPECS, AMD)
EVERYONE = {s.name for s in SPECS}


def _reports(status: Status = Status.PUBLISHED) -> dict[str, ImageReport]:
    return {s.name: ImageReport(name=s.name, status=status, repository=f"{REGISTRY}/{s.name}",
                                platforms=[PlatformBuild(platform=p, image_id=_id(str(i + j)))
                                           for j, p in enumerate(s.platforms)])
            for i, s in enumerate(SPECS)}


def _removable(name: str, closed=EVERYONE, reports=None, pushing: bool = True) -> space.LocalCopy | None:
    return space.removable(name, GRAPH, closed, reports or _reports(), pushing)


@pytest.mark.parametrize("status", [Status.PUBLISHED, Status.UNCHANGED, Status.UP_TO_DATE])
def test_an_image_the_registry_holds_is_removable(status):
    assert _removable("root", reports=_reports(status)) == space.LocalCopy("root", f"{REGISTRY}/root",
                                                                           (_id("0"), _id("1")))


@pytest.mark.parametrize("status", sorted(set(Status) - {Status.PUBLISHED, Status.UNCHANGED, Status.UP_TO_DATE}))
def test_an_image_the_registry_may_not_hold_is_kept(status):
    assert _removable("leaf", reports=_reports(status)) is None  # failed, skipped, interrupted, or not pushed yet


def test_nothing_is_removable_when_the_run_does_not_push():
    assert all(_removable(name, pushing=False) is None for name in EVERYONE)


def test_a_parent_is_removable_once_each_child_closed_and_a_leaf_once_it_closed():
    assert _removable("root", closed={"root"}) is None  # its child is pending: it builds FROM it
    assert _removable("root", closed={"root", "child"}) is not None  # its grandchild builds FROM the child
    assert _removable("child", closed={"root", "child"}) is None
    assert _removable("child", closed={"child", "grandchild"}) is not None
    assert _removable("leaf", closed=EVERYONE - {"leaf"}) is None
    assert _removable("leaf", closed={"leaf"}) is not None


def test_an_image_without_a_recorded_build_is_not_removable():
    reports = _reports()
    reports["leaf"].platforms = []
    assert _removable("leaf", reports=reports) is None


class FakeEngine:
    """Images by id: their ``RepoTags`` and ``Size``; an image goes with its last tag (docker-py's
    ``remove_image(tag, noprune=False)``). ``used``: image ids containers use; ``refused``: tags the
    Engine will not remove."""

    def __init__(self, images: dict[str, tuple[list[str], int]], used=(), refused=()):
        self.images = {i: (list(tags), size) for i, (tags, size) in images.items()}
        self.used, self.refused, self.removed = set(used), set(refused), []
        self.api = self

    def containers(self, all: bool):
        assert all
        return [{"ImageID": i} for i in self.used]

    def inspect_image(self, image_id: str):
        if image_id not in self.images:
            raise docker.errors.NotFound(f"No such image: {image_id}")
        tags, size = self.images[image_id]
        return {"Id": image_id, "RepoTags": list(tags), "Size": size}

    def remove_image(self, tag: str, noprune: bool):
        assert noprune is False  # the Engine drops the content and snapshots with the last tag
        if tag in self.refused:
            raise docker.errors.APIError("conflict", explanation="image is being used by a running container")
        image_id = next(i for i, (tags, _) in self.images.items() if tag in tags)
        self.images[image_id][0].remove(tag)
        self.removed.append(tag)
        if not self.images[image_id][0]:
            del self.images[image_id]


ROOT_REPO = f"{REGISTRY}/root"


def test_the_removal_untags_the_builder_repository_only_and_says_what_went():
    engine = FakeEngine({_id("0"): ([f"{ROOT_REPO}:1.0", f"{ROOT_REPO}:latest", f"{ROOT_REPO}:build-r"], 2 * 10**9),
                         _id("1"): ([f"{ROOT_REPO}:1.0-arm64", "someone/else:kept"], 10**9),
                         _id("9"): ([f"{ROOT_REPO}:0.9"], 10**9)})  # an older build: not this run's
    lines: list[str] = []
    removed = space.LocalCopyRemover(engine, lines.append).remove(_removable("root"))
    assert removed == engine.removed == [f"{ROOT_REPO}:1.0", f"{ROOT_REPO}:latest", f"{ROOT_REPO}:build-r",
                                         f"{ROOT_REPO}:1.0-arm64"]
    assert set(engine.images) == {_id("1"), _id("9")} and engine.images[_id("1")][0] == ["someone/else:kept"]
    assert lines == ["local copies of root removed: up to 2.00 GB (the registry holds them)"]  # the arm64 one stays


def test_an_image_a_container_uses_or_the_engine_lacks_is_kept():
    engine = FakeEngine({_id("0"): ([f"{ROOT_REPO}:1.0"], 10**9)}, used={_id("0")})  # the arm64 build was never local
    lines: list[str] = []
    assert space.LocalCopyRemover(engine, lines.append).remove(_removable("root")) == []
    assert engine.removed == [] and lines == []


def test_a_tag_the_engine_refuses_is_one_line_and_keeps_the_image():
    engine = FakeEngine({_id("0"): ([f"{ROOT_REPO}:1.0", f"{ROOT_REPO}:latest"], 10**9)}, refused={f"{ROOT_REPO}:1.0"})
    lines: list[str] = []
    assert space.LocalCopyRemover(engine, lines.append).remove(_removable("root")) == []
    assert _id("0") in engine.images
    assert lines == [f"kept {ROOT_REPO}:1.0: image is being used by a running container"]


def test_tags_removed_before_one_the_engine_refuses_are_reported_and_nothing_counts_as_freed():
    engine = FakeEngine({_id("0"): ([f"{ROOT_REPO}:1.0", f"{ROOT_REPO}:latest", f"{ROOT_REPO}:build-r"], 10**9)},
                        refused={f"{ROOT_REPO}:latest"})
    lines: list[str] = []
    assert space.LocalCopyRemover(engine, lines.append).remove(_removable("root")) == [f"{ROOT_REPO}:1.0"]
    assert engine.images[_id("0")][0] == [f"{ROOT_REPO}:latest", f"{ROOT_REPO}:build-r"]  # the tags after it stay
    assert lines == [f"kept {ROOT_REPO}:latest: image is being used by a running container",
                     "local copies of root removed: up to 0.00 GB (the registry holds them)"]
