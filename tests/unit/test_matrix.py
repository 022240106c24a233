"""Matrix loading, expansion, naming and build order (no engine)."""

from pathlib import Path

import pytest
import yaml

from builder import matrix
from builder.matrix import image_name

# The image names the project's matrix.yaml must expand to, in build order (golden list).
EXPECTED_NAMES = [
    "minimal-debian12-py311-cpu-inference",
    "sklearn-1.9-debian12-py311-cpu-inference",
    "sklearn-1.8-debian12-py311-cpu-inference",
    "xgboost-3.2-debian12-py311-cpu-inference",
    "onnxruntime-1.31-debian12-py311-cpu-inference",
    "pytorch-2.13-debian12-py311-cpu-inference",
    "tensorflow-2.21-debian12-py311-cpu-inference",
]


def test_project_matrix_expands_to_the_golden_image_list(root):
    m = matrix.load(root / "matrix.yaml")
    assert [s.name for s in m.images()] == EXPECTED_NAMES


def test_project_matrix_covers_all_six_families(root):
    m = matrix.load(root / "matrix.yaml")
    assert {s.framework for s in m.images()} == set(matrix.KNOWN_FRAMEWORKS)


def test_every_known_framework_has_a_smoke_test_folder(root):
    for fw in matrix.KNOWN_FRAMEWORKS:
        folder = root / "tests" / "by_image" / fw
        assert (folder / "score.py").is_file(), fw
        assert list(folder.glob("test_*.py")), fw


@pytest.mark.parametrize("args,expected", [
    (("sklearn", "1.9.1", "debian12", "3.11", "cpu"), "sklearn-1.9-debian12-py311-cpu-inference"),
    (("tensorflow", "2.21.0", "debian13", "3.13", "cpu"), "tensorflow-2.21-debian13-py313-cpu-inference"),
    (("pytorch", "2.13.0", "debian12", "3.11", "gpu", "12.8"), "pytorch-2.13-debian12-py311-cuda12.8-gpu-inference"),
    (("xgboost", "3", "debian12", "3.11", "cpu"), "xgboost-3.0-debian12-py311-cpu-inference"),
    (("minimal", "1.5.1", "debian12", "3.11", "cpu", None, False), "minimal-debian12-py311-cpu-inference"),
])
def test_image_name_follows_the_seed_pattern(args, expected):
    assert image_name(*args) == expected


def test_children_come_after_their_parent_and_inherit_its_tests(root):
    m = matrix.load(root / "matrix.yaml")
    names = [s.name for s in m.images()]
    for s in m.images():
        if s.parent:
            assert names.index(s.parent) < names.index(s.name)
            assert s.ancestors == ("minimal", s.framework)


def test_pins_are_exact_and_the_cpu_package_is_used(root):
    m = matrix.load(root / "matrix.yaml")
    assert m.image("xgboost-3.2-debian12-py311-cpu-inference").requirements[0] == "xgboost-cpu==3.2.0"
    assert m.image("pytorch-2.13-debian12-py311-cpu-inference").requirements[0] == "torch==2.13.0+cpu"
    assert m.image("tensorflow-2.21-debian12-py311-cpu-inference").requirements[0] == "tensorflow-cpu==2.21.0"
    for s in m.images():
        assert all("==" in r for r in s.requirements), s.name


def test_cell_digest_changes_when_a_parent_changes(tmp_path, small_matrix_data):
    def digests(data):
        p = tmp_path / "m.yaml"
        p.write_text(yaml.safe_dump(data))
        return {s.name: s.cell_digest for s in matrix.load(p).images()}

    before = digests(small_matrix_data)
    small_matrix_data["runtime"]["apt"].append("tini")
    after = digests(small_matrix_data)
    assert all(before[n] != after[n] for n in before)


def test_children_of_an_image_are_its_descendants(root):
    m = matrix.load(root / "matrix.yaml")
    kids = [s.name for s in m.children("minimal-debian12-py311-cpu-inference")]
    assert kids == EXPECTED_NAMES[1:]
    assert m.children("sklearn-1.9-debian12-py311-cpu-inference") == []


def test_unknown_image_name_lists_where_to_look(root):
    with pytest.raises(KeyError, match="builder list"):
        matrix.load(root / "matrix.yaml").image("nope")


def test_missing_matrix_file_is_a_matrix_error(tmp_path):
    with pytest.raises(matrix.MatrixError, match="cannot read"):
        matrix.load(Path(tmp_path / "absent.yaml"))
