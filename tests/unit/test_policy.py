"""The publish policy as an object (:mod:`builder.run.policy`): one per policy a run, what each says
of an image's tags, and when the moving tags move (:func:`builder.run.policy.latest_moves`)."""

import dataclasses

import pytest
from repo import ROOT

from builder.matrix.platform import PLATFORMS
from builder.matrix import load
from builder.run import policy
from builder.run.report import ImageReport, Status

AMD64, ARM64 = PLATFORMS["linux/amd64"], PLATFORMS["linux/arm64"]


@pytest.fixture(scope="module")
def table():
    return policy.table(load(ROOT / "matrix.yaml").data.tags)


def _rep(publish: str, tags: list[str], builds: dict[str, str], status: Status = Status.TESTED,
         pushed: bool = True) -> ImageReport:
    # An image published under ``publish`` with ``tags`` and {platform: own tag} builds, each pushed.
    rep = ImageReport(name="minimal-debian12-py311-cpu-inference", publish=publish, status=status, tags=tags,
                      repository="127.0.0.1:5000/minimal-debian12-py311-cpu-inference")
    for i, (platform, own) in enumerate(builds.items()):
        b = rep.build(platform)
        b.tag, b.digest = own, f"sha256:{str(i + 1) * 64}" if pushed else None
    return rep


def test_a_run_has_one_object_of_each_policy_named_as_the_report_names_it(table):
    assert {name: type(p) for name, p in table.items()} == {
        "manifest": policy.Manifest, "index": policy.Index, "per-platform": policy.PerPlatform}
    assert all(p.name == name for name, p in table.items())
    assert [p.makes_index for p in table.values()] == [False, True, False]
    assert [p.per_platform for p in table.values()] == [False, False, True]


def test_only_a_job_of_a_split_run_is_merged_into_an_index(table):
    assert table["manifest"].merged() is None and table["index"].merged() is None
    assert table["per-platform"].merged() == table["index"]


def test_one_manifest_moves_latest_with_its_build(table):
    rep = _rep("manifest", ["1.5.1-x", "latest"], {AMD64: "1.5.1-x"})
    assert table["manifest"].fixed_tags(rep, AMD64) == ["1.5.1-x"] and table["manifest"].fixed_tags(rep) == ["1.5.1-x"]
    assert policy.latest_moves(table["manifest"], rep, [AMD64]) == policy.Moves({AMD64: ["latest"]}, ["latest"])


def test_an_index_moves_latest_as_the_index_only(table):
    rep = _rep("index", ["1.5.1-x", "latest"], {AMD64: "1.5.1-x-amd64", ARM64: "1.5.1-x-arm64"})
    index = table["index"]
    assert index.moving_names(rep) == {"latest", "latest-arm64"}
    assert index.fixed_tags(rep, ARM64) == ["1.5.1-x-arm64"] and index.fixed_tags(rep) == ["1.5.1-x"]
    assert policy.latest_moves(index, rep, [AMD64, ARM64]) == policy.Moves({AMD64: [], ARM64: []}, ["latest"])


def test_a_job_of_a_split_run_moves_latest_arch_with_its_build(table):
    rep = _rep("per-platform", ["1.5.1-x-arm64", "latest-arm64"], {ARM64: "1.5.1-x-arm64"})
    per = table["per-platform"]
    assert per.fixed_tags(rep, ARM64) == ["1.5.1-x-arm64"]
    assert policy.latest_moves(per, rep, [ARM64]) == policy.Moves({ARM64: ["latest-arm64"]}, ["latest-arm64"])


@pytest.mark.parametrize("status, pushed, platforms", [
    (Status.BUILT, True, [AMD64, ARM64]),  # not every platform passed its smoke test
    (Status.PUBLISHED, True, [AMD64, ARM64]),  # already published: nothing moves again
    (Status.TESTED, False, [AMD64, ARM64]),  # a build is not pushed
    (Status.TESTED, True, [AMD64, ARM64, dataclasses.replace(ARM64, name="linux/s390x", arch="s390x")]),  # a platform has no build
])
def test_latest_does_not_move_before_every_platform_passed_and_was_pushed(table, status, pushed, platforms):
    rep = _rep("index", ["1.5.1-x", "latest"], {AMD64: "1.5.1-x-amd64", ARM64: "1.5.1-x-arm64"}, status, pushed)
    assert policy.latest_moves(table["index"], rep, platforms) is None


def test_the_image_s_moving_tags_must_name_what_was_signed(table):
    from builder.run.publish import PublishError

    rep = _rep("manifest", ["1.5.1-x", "latest"], {AMD64: "1.5.1-x"})
    rep.digest = rep.platforms[0].digest
    assert table["manifest"].move_image(None, rep, []) is False  # nothing to move: nothing pushed
    assert table["manifest"].move_image(None, rep, ["latest"]) is False  # one manifest: moved with the build
    rep.digest = "sha256:" + "f" * 64
    with pytest.raises(PublishError, match="not sha256:f"):
        table["manifest"].move_image(None, rep, ["latest"])
