"""Build ids (issue 22): one per image's inputs, the same on any machine, different when any input
changes (:mod:`builder.run.build_id`, :func:`builder.run.steps.up_to_date.inputs_of`)."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
from repo import ROOT
from test_steps import ID1, ID2, MINIMAL, FakeEngine, FakeRegistry, _context, _sha

import builder
from builder.matrix.platform import PLATFORMS, Platform
from builder.run import build_id
from builder.run.report import ImageReport
from builder.run.steps import up_to_date

AMD64, ARM64 = PLATFORMS["linux/amd64"], PLATFORMS["linux/arm64"]

SKLEARN = "sklearn-1.9-debian12-py311-cpu-inference"


def _inputs(**changed) -> build_id.Inputs:
    base = dict(platform="linux/amd64", build_platform="linux/amd64", context={"Dockerfile": "aa"},
                bake_target={"args": {}}, bases={"linux/amd64": "sha256:1"}, parent={}, args={"SOURCE_DATE_EPOCH": "1"},
                builder_version="0.1.0", builder={"run/smoke.py": "bb"}, runtime={"port": 5001},
                tests={"minimal/test_x.py": "cc"})
    return build_id.Inputs(**{**base, **changed})


def test_the_same_inputs_give_the_same_id_and_any_change_another():
    assert build_id.compute(_inputs()) == build_id.compute(_inputs())
    assert build_id.compute(_inputs()).startswith("sha256:") and len(build_id.compute(_inputs())) == 71
    changes = [{"context": {"Dockerfile": "ab"}}, {"bake_target": {"args": {"X": "1"}}},
               {"bases": {"linux/amd64": "sha256:2"}}, {"build_platform": "linux/arm64"}, {"platform": "linux/arm64"},
               {"parent": {"linux/amd64": ID1}}, {"runtime": {"port": 5002}},
               {"args": {"SOURCE_DATE_EPOCH": "2"}}, {"builder_version": "0.2.0"}, {"builder": {"run/smoke.py": "bc"}},
               {"tests": {"minimal/test_x.py": "cd"}}, {"tests": {"minimal/test_x.py": "cc", "minimal/new.py": "dd"}}]
    ids = {build_id.compute(_inputs(**c)) for c in changes}
    assert len(ids) == len(changes) and build_id.compute(_inputs()) not in ids


def test_a_folder_s_digests_leave_caches_out(tmp_path):
    (tmp_path / "a" / "__pycache__").mkdir(parents=True)
    (tmp_path / "a" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (tmp_path / "a" / "test_x.py").write_text("def test(): pass\n")
    (tmp_path / "a" / "link").symlink_to("test_x.py")
    found = build_id.folder_digests(tmp_path, "t/")
    assert set(found) == {"t/a/test_x.py", "t/a/link"} and found["t/a/link"] == "link:test_x.py"
    assert build_id.folder_digests(tmp_path / "missing") == {}


@pytest.fixture
def fakes():
    """A fake Engine and registry (tests/unit/test_steps.py)."""
    registry = FakeRegistry()
    return FakeEngine(registry), registry


@pytest.fixture
def tree(tmp_path):
    """A copy of the test folders, so a test file can be changed."""
    shutil.copytree(ROOT / "tests" / "by_image", tmp_path / "by_image", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "by_image"


def _child_id(fakes, tmp_path, tests, parent_id: str = ID1, platform: Platform = ARM64) -> str:
    ctx, reports = _context(*fakes, tmp_path / "b", images_dir=ROOT / "images", tests_root=tests)
    reports[MINIMAL] = ImageReport(name=MINIMAL)
    for p in (AMD64, ARM64):
        reports[MINIMAL].build(p).build_id = _sha(parent_id + p.name)
    return build_id.compute(up_to_date.inputs_of(ctx, ctx.specs[SKLEARN])[platform])


def test_a_child_s_id_follows_its_tests_its_ancestors_tests_its_parent_and_the_builder(fakes, tmp_path, tree,
                                                                                     monkeypatch):
    first = _child_id(fakes, tmp_path, tree)
    assert _child_id(fakes, tmp_path, tree) == first
    ids = {first}
    (tree / "sklearn" / "test_more.py").write_text("def test_more(): pass\n")
    ids.add(_child_id(fakes, tmp_path, tree))
    next(p for p in sorted((tree / "minimal").rglob("*.py"))).write_text("# changed\n")
    ids.add(_child_id(fakes, tmp_path, tree))
    ids.add(_child_id(fakes, tmp_path, tree, parent_id=ID2))
    monkeypatch.setattr(builder, "__version__", "99.0")
    ids.add(_child_id(fakes, tmp_path, tree))
    assert len(ids) == 5
    (tree / "xgboost").rename(tree / "gone")  # another framework's tests: not an input
    assert _child_id(fakes, tmp_path, tree) in ids


def test_a_root_image_s_id_follows_its_base_images(fakes, tmp_path):
    engine, _ = fakes
    ctx, reports = _context(engine, fakes[1], tmp_path, images_dir=ROOT / "images", tests_root=ROOT / "tests/by_image")
    refs = {(MINIMAL, p): f"base:{p.arch}" for p in (AMD64, ARM64)}
    ctx = dataclasses.replace(ctx, base_refs=refs)
    engine.add(ID1, "base:amd64")
    engine.add(ID2, "base:arm64")
    amd64, arm64 = (up_to_date.inputs_of(ctx, ctx.specs[MINIMAL])[p] for p in (AMD64, ARM64))
    assert amd64.bases == {"linux/amd64": ID1} and arm64.bases == {"linux/arm64": ID2, "linux/amd64": ID1}
    assert amd64.parent == {} and build_id.compute(amd64) != build_id.compute(arm64)
    engine.add(_sha("another arm64 base"), "base:arm64")
    assert build_id.compute(up_to_date.inputs_of(ctx, ctx.specs[MINIMAL])[ARM64]) != build_id.compute(arm64)
    # the linux/amd64 build depends on its own platform's base only: a narrowed run builds the same
    assert build_id.compute(up_to_date.inputs_of(ctx, ctx.specs[MINIMAL])[AMD64]) == build_id.compute(amd64)
