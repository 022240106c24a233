"""Matrix loading, expansion, naming and build order (no engine)."""

import re
from pathlib import Path

import pytest

from builder import matrix
from builder.matrix.naming import image_name

# The image names the project's matrix.yaml must expand to, in build order (golden list).
EXPECTED_NAMES = [
    "minimal-debian12-py311-cpu-inference",
    "minimal-debian13-py313-cpu-inference",
    "sklearn-1.9-debian12-py311-cpu-inference",
    "sklearn-1.9-debian13-py313-cpu-inference",
    "sklearn-1.8-debian12-py311-cpu-inference",
    "xgboost-3.2-debian12-py311-cpu-inference",
    "xgboost-3.2-debian12-py311-cuda12-gpu-inference",
    "xgboost-3.3-debian13-py313-cpu-inference",
    "onnxruntime-1.31-debian12-py311-cpu-inference",
    "onnxruntime-1.31-debian12-py311-cuda13.5-gpu-inference",
    "onnxruntime-1.31-debian13-py313-cpu-inference",
    "pytorch-2.13-debian12-py311-cpu-inference",
    "pytorch-2.13-debian12-py311-cuda13.0-gpu-inference",
    "tensorflow-2.21-debian12-py311-cpu-inference",
    "tensorflow-2.21-debian12-py311-cuda12.9-gpu-inference",
    "tensorflow-2.21-debian13-py313-cpu-inference",
]


def test_project_matrix_expands_to_the_golden_image_list(root):
    m = matrix.load(root / "matrix.yaml")
    assert [s.name for s in m.images()] == EXPECTED_NAMES


def test_project_matrix_covers_every_framework_of_the_compatibility_table(root):
    m = matrix.load(root / "matrix.yaml")
    assert {s.framework for s in m.images()} == set(m.compat.packages)
    assert len(m.compat.packages) == 6


def test_every_known_framework_has_a_smoke_test_folder(root):
    for fw in matrix.load(root / "matrix.yaml").compat.packages:
        folder = root / "tests" / "by_image" / fw
        assert (folder / "score.py").is_file(), fw
        assert list(folder.glob("test_*.py")), fw


def test_every_gpu_image_has_its_linked_version_tests(root):
    from builder.run import smoke
    for s in matrix.load(root / "matrix.yaml").images():
        if s.device == "gpu":
            assert [f.name for f in smoke.folders(s, root / "tests" / "by_image")][-2:] == ["gpu", f"{s.framework}-gpu"]


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
            assert m.image(s.parent).base == s.base and m.image(s.parent).device == "cpu"


def test_gpu_cells_take_cuda_cudnn_and_nvidia_pins_from_the_table(root):
    m = matrix.load(root / "matrix.yaml")
    for s in m.images():
        if s.device != "gpu":
            continue
        entry = m.compat.entry(s.framework, s.version)
        assert s.cuda == entry.gpu.cuda and s.cudnn == entry.gpu.cudnn
        assert f"cuda{s.cuda}-gpu-inference" in s.name
        for wheel, version in entry.gpu.wheels.items():
            assert f"{wheel}=={version}" in map(str, s.requirements)
        from builder.generate import lock
        from builder.run import smoke
        got = smoke.expectations(s, m.data.runtime, lock.read(root / "images", s.name))
        assert got["wheels"] == entry.gpu.wheels
        # the driver floor of the CUDA major, from compat.yaml's hand-kept drivers
        assert s.driver_min == got["driver_min"] == m.compat.drivers[s.cuda.split(".")[0]]
        nccl = [v for n, v in entry.gpu.wheels.items() if n.startswith("nvidia-nccl")]
        assert got["nccl"] == s.nccl == (nccl[0] if nccl else None)
        assert all(got["lock"][n] == v for n, v in entry.gpu.wheels.items())
    torch = m.image("pytorch-2.13-debian12-py311-cuda13.0-gpu-inference")
    # === (PEP 440 arbitrary equality): ==2.13.0 would also take the wheelhouse's 2.13.0+cpu
    assert str(torch.requirements[0]) == "torch===2.13.0" and torch.package == "torch"
    tf = m.image("tensorflow-2.21-debian12-py311-cuda12.9-gpu-inference")
    assert str(tf.requirements[0]) == "tensorflow[and-cuda]==2.21.0" and tf.package == "tensorflow"
    assert (torch.nccl, torch.driver_min, tf.driver_min) == ("2.29.7", "580.65.06", "525.60.13")
    assert all(s.driver_min is None and s.nccl is None for s in m.images() if s.device == "cpu")


def test_bases_all_keeps_only_bases_whose_python_has_wheels(tmp_path, small_matrix_data, root, dump_yaml):
    (tmp_path / "compat.yaml").write_text((root / "tests/fixtures/compat.yaml").read_text())
    small_matrix_data["bases"]["old"] = {**small_matrix_data["bases"]["debian12"], "python": "3.9"}
    small_matrix_data["frameworks"]["minimal"]["versions"][0]["bases"] = "all"
    path = tmp_path / "m.yaml"
    path.write_text(dump_yaml(small_matrix_data))
    names = [s.name for s in matrix.load(path).images()]
    assert names == ["minimal-debian12-py311-cpu-inference", "sklearn-1.9-debian12-py311-cpu-inference"]


def test_a_cuda_image_cell_is_a_root_image_from_that_image(tmp_path, small_matrix_data, root, dump_yaml):
    (tmp_path / "compat.yaml").write_text((root / "tests/fixtures/compat.yaml").read_text())
    small_matrix_data["frameworks"]["xgboost"] = {"title": "XGBoost", "parent": "minimal", "versions": [
        {"version": "3.2.0", "bases": ["debian12"], "devices": ["gpu"],
         "cuda": {"source": "image", "version": "12.8", "image": "nvidia/cuda:12.8.0-cudnn-runtime-ubuntu24.04"}}]}
    path = tmp_path / "m.yaml"
    path.write_text(dump_yaml(small_matrix_data))
    spec = matrix.load(path).image("xgboost-3.2-debian12-py311-cuda12.8-gpu-inference")
    assert spec.parent is None and spec.base_image == "nvidia/cuda:12.8.0-cudnn-runtime-ubuntu24.04"
    assert spec.requirements[0].name == "azureml-inference-server-http" and spec.pins()["xgboost"] == "3.2.0"
    assert spec.from_cuda_image


def test_pins_are_exact_and_the_cpu_package_is_used(root):
    m = matrix.load(root / "matrix.yaml")
    assert str(m.image("xgboost-3.2-debian12-py311-cpu-inference").requirements[0]) == "xgboost-cpu==3.2.0"
    assert str(m.image("pytorch-2.13-debian12-py311-cpu-inference").requirements[0]) == "torch==2.13.0+cpu"
    assert str(m.image("tensorflow-2.21-debian12-py311-cpu-inference").requirements[0]) == "tensorflow-cpu==2.21.0"
    for s in m.images():
        assert all(re.search(r"={2,3}\d", str(r)) for r in s.requirements), s.name


def test_cell_digest_changes_when_a_parent_changes(tmp_path, small_matrix_data, dump_yaml):
    (tmp_path / "compat.yaml").write_text((Path(__file__).parents[1] / "fixtures" / "compat.yaml").read_text())

    def digests(data):
        p = tmp_path / "m.yaml"
        p.write_text(dump_yaml(data))
        return {s.name: s.cell_digest for s in matrix.load(p).images()}

    before = digests(small_matrix_data)
    small_matrix_data["runtime"]["apt"].append("tini")
    after = digests(small_matrix_data)
    assert all(before[n] != after[n] for n in before)


def test_children_of_an_image_are_its_descendants(root):
    m = matrix.load(root / "matrix.yaml")
    kids = [s.name for s in m.children("minimal-debian12-py311-cpu-inference")]
    assert kids == [n for n in EXPECTED_NAMES[1:] if "debian12" in n]
    assert m.children("sklearn-1.9-debian12-py311-cpu-inference") == []


def test_unknown_image_name_lists_where_to_look(root):
    with pytest.raises(KeyError, match="builder list"):
        matrix.load(root / "matrix.yaml").image("nope")


def test_missing_matrix_file_is_a_matrix_error(tmp_path):
    with pytest.raises(matrix.MatrixError, match="cannot read"):
        matrix.load(Path(tmp_path / "absent.yaml"))


@pytest.mark.parametrize("value", ["*/tests", "pandas", "../pandas/tests", "pandas/../..", "/opt/x/tests", "pandas/te sts",
                                   "pandas/tests;rm", "pandas/$(x)", "", "pandas//tests",
                                   "numpy/.*", "numpy/*", "numpy/*/.hidden", "numpy/**"])
def test_a_prune_path_stays_inside_one_package_and_is_shell_safe(value):
    from builder.matrix import grammar

    with pytest.raises(ValueError):
        grammar.prune_path(value)


def test_prune_paths_of_the_matrix_are_accepted():
    from builder.matrix import grammar

    assert [grammar.prune_path(p) for p in ("pandas/tests", "scipy/*/*/tests", "xgboost/testing")]
