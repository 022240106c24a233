"""The bake file: generated from the matrix, golden for the small matrix, checked like images/."""

import json

import golden_files
import pytest
from repo import seed_locks
from typer.testing import CliRunner

from builder import matrix
from builder.cli import app
from builder.generate import bake, render


def test_bake_file_equals_the_golden_file():
    assert golden_files.bake_small() == golden_files.SMALL_BAKE.read_text(), golden_files.UPDATE


def test_one_target_per_image_with_its_context_and_groups(root):
    m = matrix.load(root / "matrix.yaml")
    data = bake.bake_file(m)
    names = [s.name for s in m.images()]
    assert sorted(data["target"]) == sorted(bake.target_name(n) for n in names)
    assert data["group"]["default"]["targets"] == [bake.target_name(n) for n in names]
    for s in m.images():
        t = data["target"][bake.target_name(s.name)]
        assert t["context"] == f"images/{s.name}" and (root / t["context"] / t["dockerfile"]).is_file()
        assert bake.target_name(s.name) in data["group"][s.framework]["targets"]
        assert bake.target_name(s.name) in data["group"][s.device]["targets"]
        if s.parent:
            # a child is built FROM its parent's target, a named context its Dockerfile starts FROM
            assert t["contexts"] == {"parent": f"target:{bake.target_name(s.parent)}"} and "PARENT_IMAGE" not in t["args"]
            dockerfile = (root / t["context"] / t["dockerfile"]).read_text()
            assert "ARG PARENT_IMAGE=parent\n" in dockerfile and "FROM ${PARENT_IMAGE}\n" in dockerfile
        else:
            assert t["args"]["BASE_IMAGE"] == s.base_image and "contexts" not in t
    assert not any(g.startswith("level") for g in data["group"])


def test_target_names_follow_bakes_grammar():
    assert bake.target_name("sklearn-1.9-debian12-py311-cpu-inference") == "sklearn-1_9-debian12-py311-cpu-inference"
    with pytest.raises(ValueError):
        bake.target_name("bad name")


def test_registry_prefix_is_left_out_when_empty():
    assert bake.image_ref("x") == '${REGISTRY == "" ? "" : "${REGISTRY}/"}x:${TAG}'


def test_render_writes_the_bake_file_and_check_finds_it_stale(tmp_path, root, monkeypatch):
    (tmp_path / "compat.yaml").write_text((root / "tests" / "fixtures" / "compat.yaml").read_text())
    (tmp_path / "m.yaml").write_text((root / "tests" / "fixtures" / "matrix-small.yaml").read_text())
    args = ["--matrix", str(tmp_path / "m.yaml"), "--templates", str(root / "templates"), "--images", str(tmp_path / "images")]
    seed_locks(tmp_path / "images")
    r = CliRunner().invoke(app, ["render", *args])
    assert r.exit_code == 0, r.output
    written = tmp_path / "docker-bake.json"
    assert json.loads(written.read_text())["target"]
    assert CliRunner().invoke(app, ["render", "--check", *args]).exit_code == 0
    written.write_text(written.read_text().replace("latest", "edited"))
    r = CliRunner().invoke(app, ["render", "--check", *args])
    assert r.exit_code == 1 and "stale: docker-bake.json" in r.output
    written.unlink()
    r = CliRunner().invoke(app, ["render", "--check", *args])
    assert r.exit_code == 1 and "missing: docker-bake.json" in r.output


def test_committed_bake_file_is_fresh(root):
    m = matrix.load(root / "matrix.yaml")
    assert render.check_bake(bake.render(m), root / "images") == []
