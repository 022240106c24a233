"""A wrong matrix gets one clear line per problem naming the file and key path, exit code 2, and
nothing is written: images/ stays byte-for-byte as it was."""

import copy
import hashlib

import pytest
from typer.testing import CliRunner
from yaml_dump import dump as _dump_yaml

from builder.cli import app


def _set(data, path, value):
    *keys, last = path
    for k in keys:
        data = data[k]
    if value is DELETE:
        del data[last]
    else:
        data[last] = value


DELETE = object()



def mutate(*changes):
    def apply(data):
        data = copy.deepcopy(data)
        for path, value in changes:
            _set(data, path, value)
        return _dump_yaml(data)
    return apply


SK = ("frameworks", "sklearn")
SKV = SK + ("versions", 0)
MV = ("frameworks", "minimal", "versions", 0)
CASES = {
    "platform without wheels": (
        mutate((MV + ("platforms",), ["linux/amd64", "linux/arm64"])),
        "m.yaml: frameworks.minimal.versions[0]: platforms: minimal 1.5.1 has no linux/arm64 wheels for Python 3.11 "
        "(base debian12) in compat.yaml; drop the platform or run `builder compat refresh`"),
    "child on a platform its parent lacks": (
        mutate((SKV + ("platforms",), ["linux/amd64", "linux/arm64"])),
        "m.yaml: frameworks.sklearn.versions[0].platforms: linux/arm64: the parent image "
        "minimal-debian12-py311-cpu-inference is not built for it (give the parent's version the platform too)"),
    "platforms without linux/amd64": (
        mutate((SKV + ("platforms",), ["linux/arm64"])),
        "m.yaml: frameworks.sklearn.versions[0].platforms: ['linux/arm64'] must include linux/amd64 (the build platform)"),
    "unknown platform": (
        mutate((SKV + ("platforms",), ["linux/amd64", "linux/s390x"])),
        "m.yaml: frameworks.sklearn.versions[0].platforms[1]: 'linux/s390x' is not a platform (expected one of: "
        "linux/amd64, linux/arm64)"),
    "unknown framework": (
        lambda d: mutate((("frameworks", "caffe"), copy.deepcopy(d["frameworks"]["sklearn"])))(d),
        "m.yaml: frameworks.caffe: unknown framework 'caffe' (expected one of: minimal, sklearn, xgboost)"),
    "invalid version": (
        mutate((SKV + ("version",), "1.x")),
        "m.yaml: frameworks.sklearn.versions[0].version: '1.x' is not a valid version (PEP 440)"),
    "invalid companion version": (
        mutate((SKV + ("companions", "numpy"), "two")),
        "m.yaml: frameworks.sklearn.versions[0].companions.numpy: 'two' is not a valid version (PEP 440)"),
    "prune path reaching out of its package": (
        mutate((("runtime", "prune"), ["*/tests"])),
        "m.yaml: runtime.prune[0]: '*/tests' is not a package's folder then a path inside it, of letters, digits, . _ - "
        "and * globs"),
    "missing required field": (
        mutate((SK + ("title",), DELETE)),
        "m.yaml: frameworks.sklearn.title: required field is missing"),
    "unknown key (typo)": (
        mutate((SK + ("versoins",), [])),
        "m.yaml: frameworks.sklearn: unknown key 'versoins' (expected one of: parent, title, versions)"),
    "unknown compression": (
        mutate((("compression",), "xz")),
        "m.yaml: compression: 'xz' is not allowed (expected 'gzip' or 'zstd')"),
    "unknown top-level key": (
        mutate((("framework",), {})),
        "m.yaml: (top level): unknown key 'framework' (expected one of: bases, build_tools, compression, frameworks, project, runtime, "
        "schema, tags)"),
    "duplicate image name": (
        lambda d: mutate((SK + ("versions",), d["frameworks"]["sklearn"]["versions"]
                          + [{**d["frameworks"]["sklearn"]["versions"][0]}]))(d),
        "m.yaml: frameworks.sklearn.versions[1]: duplicate image name 'sklearn-1.9-debian12-py311-cpu-inference' "
        "(also from frameworks.sklearn.versions[0])"),
    "unknown parent": (
        mutate((SK + ("parent",), "base-image")),
        "m.yaml: frameworks.sklearn.parent: unknown parent 'base-image' (expected one of: minimal, sklearn)"),
    "parent cycle": (
        mutate((("frameworks", "minimal", "parent"), "sklearn")),
        "m.yaml: frameworks: parent cycle: minimal -> sklearn -> minimal"),
    "parent without a cell on the same base": (
        lambda d: mutate((("bases", "debian13"), {**d["bases"]["debian12"], "python": "3.13"}),
                         (SKV + ("bases",), ["debian13"]))(d),
        "m.yaml: frameworks.sklearn.versions[0]: unknown parent: framework 'minimal' has no cpu image on base "
        "'debian13'"),
    "gpu cell whose CUDA major has no driver floor in compat.yaml": (
        mutate((("frameworks", "xgboost"), {"title": "XGBoost", "parent": "minimal", "versions": [
            {"version": "3.2.0", "bases": ["debian12"], "devices": ["gpu"]}]})),
        "m.yaml: frameworks.xgboost.versions[0]: device 'gpu': compat.yaml's drivers has no minimum NVIDIA "
        "driver for CUDA 12 (add it from NVIDIA's release notes: "
        "https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/index.html#cuda-driver)"),
    "gpu device without a CUDA source": (
        mutate((SKV + ("devices",), ["cpu", "gpu"])),
        "m.yaml: frameworks.sklearn.versions[0]: device 'gpu': compat.yaml has no gpu package for sklearn"),
    "framework version the table does not know": (
        mutate((SKV + ("version",), "1.7.2")),
        "m.yaml: frameworks.sklearn.versions[0].version: sklearn 1.7.2 is not in compat.yaml "
        "(supported: 1.9.1; add it and run `builder compat refresh`)"),
    "Python the table has no wheels for": (
        mutate((("bases", "debian12", "python"), "3.9")),
        "m.yaml: frameworks.sklearn.versions[0].bases: sklearn 1.9.1 has no wheels for Python 3.9 (base debian12); "
        "supported: 3.11, 3.12, 3.13"),
    "CUDA the table does not support": (
        mutate((("frameworks", "xgboost"), {"title": "XGBoost", "parent": "minimal", "versions": [
            {"version": "3.2.0", "bases": ["debian12"], "devices": ["gpu"], "cuda": {"version": "11.8"}}]})),
        "m.yaml: frameworks.xgboost.versions[0]: cuda.version: '11.8' is not what xgboost 3.2.0's GPU wheels need "
        "(supported: 12)"),
    "CUDA image without a version": (
        mutate((("frameworks", "xgboost"), {"title": "XGBoost", "parent": "minimal", "versions": [
            {"version": "3.2.0", "bases": ["debian12"], "devices": ["gpu"],
             "cuda": {"source": "image", "image": "nvidia/cuda:12.8.0-cudnn-runtime-ubuntu24.04"}}]})),
        "m.yaml: frameworks.xgboost.versions[0]: cuda: source 'image' needs both image and version"),
    "unknown device": (
        mutate((SKV + ("devices",), ["tpu"])),
        "m.yaml: frameworks.sklearn.versions[0].devices[0]: 'tpu' is not allowed (expected 'cpu' or 'gpu')"),
    "unknown base": (
        mutate((SKV + ("bases",), ["alpine"])),
        "m.yaml: frameworks.sklearn.versions[0].bases: unknown base 'alpine' (expected one of: debian12)"),
    "bases neither a list nor all": (
        mutate((SKV + ("bases",), "every")),
        "m.yaml: frameworks.sklearn.versions[0].bases: 'every' is not 'all' or a non-empty list of base keys"),
    "invalid base python": (
        mutate((("bases", "debian12", "python"), "three")),
        "m.yaml: bases.debian12.python: 'three' is not a valid version (PEP 440)"),
    "wrong type": (
        mutate((("runtime", "uid"), "thousand")),
        "m.yaml: runtime.uid: Input should be a valid integer (got 'thousand')"),
    "tag template with an unknown field": (
        mutate((("tags", "immutable"), "{version}-{image_id}")),
        "m.yaml: tags.immutable: '{version}-{image_id}': {version} is not a plain field (fields: framework_version, "
        "python_version, image_id; no format spec, index or conversion)"),
    "tag template without the image id": (
        mutate((("tags", "immutable"), "{framework_version}")),
        "m.yaml: tags.immutable: '{framework_version}' must contain {image_id} so one tag never names two images"),
    "invalid moving tag": (
        mutate((("tags", "moving"), ["la test"])),
        "m.yaml: tags.moving[0]: 'la test' is not a tag ([A-Za-z0-9_][A-Za-z0-9_.-], at most 128)"),
    "no frameworks": (
        mutate((("frameworks",), {})),
        "m.yaml: frameworks: must not be empty"),
    "no versions": (
        mutate((SK + ("versions",), [])),
        "m.yaml: frameworks.sklearn.versions: must not be empty"),
    "empty matrix": (
        lambda d: "",
        "m.yaml: the matrix is empty (expected bases, runtime and frameworks)"),
    "not a mapping": (
        lambda d: "- just\n- a list\n",
        "m.yaml: expected a mapping at the top level, got list"),
    "malformed YAML": (
        lambda d: "schema: 1\nproject:\n  source: x\n  vendor: y: z\n",
        "m.yaml: line 4, column 12: malformed YAML: mapping values are not allowed here"),
}


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def workspace(tmp_path, root):
    (tmp_path / "compat.yaml").write_text((root / "tests" / "fixtures" / "compat.yaml").read_text())
    images = tmp_path / "images"
    (images / "keep-me").mkdir(parents=True)
    (images / "keep-me" / "Dockerfile").write_text("FROM scratch\n")
    return tmp_path, images


def test_there_are_at_least_fifteen_cases():
    assert len(CASES) >= 15


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("command", [["render"], ["render", "--check"], ["list"]])
def test_bad_matrix_exits_2_with_one_clear_line_and_writes_nothing(case, command, workspace, small_matrix_data, root):
    tmp, images = workspace
    make, expected = CASES[case]
    path = tmp / "m.yaml"
    path.write_text(make(small_matrix_data))
    before = _snapshot(images)
    result = CliRunner().invoke(app, [*command, "--matrix", str(path),
                                      *(["--images", str(images), "--templates", str(root / "templates")]
                                        if command[0] == "render" else [])])
    assert result.exit_code == 2, result.output
    assert expected in result.output.splitlines(), result.output
    assert _snapshot(images) == before
    assert not list(tmp.glob(".images-*")), "a temporary render directory was left behind"
