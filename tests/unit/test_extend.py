"""`builder extend` without an engine: config parsing, base resolution, rendering, bad input."""

import json

import golden_files
import pytest
from golden_files import EXAMPLES
from repo import ROOT
from typer.testing import CliRunner

from builder import extend, matrix
from builder.cli import app


@pytest.fixture(scope="module")
def m():
    return matrix.load(ROOT / "matrix.yaml")


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_example_dockerfiles_equal_the_golden_files(example, m):
    golden = golden_files.extend_golden(example)
    assert golden.is_file(), f"{golden} is missing; {golden_files.UPDATE}"
    assert golden_files.extend_dockerfile(example, m) == golden.read_text(), golden_files.UPDATE


def test_json_config_takes_the_conda_pip_section_and_marks_the_extra_steps(m):
    ext = extend.prepare(ROOT / "examples/minimal-json/inference-config.json", m, "127.0.0.1:5000")
    assert ext.files["requirements.txt"] == "tabulate==0.9.0\n"
    assert "# ---- begin extraDockerfileSteps (steps.dockerfile) ----" in ext.dockerfile
    assert ext.dockerfile.index("extraDockerfileSteps") < ext.dockerfile.index("USER 1000")
    assert "FROM 127.0.0.1:5000/minimal-debian12-py311-cpu-inference:latest" in ext.dockerfile
    assert set(ext.files) == {"Dockerfile", "requirements.txt", "app/score.py"}


def test_yaml_config_copies_code_and_model_where_the_server_looks(m):
    ext = extend.prepare(ROOT / "examples/sklearn-iris/extend.yml", m, "registry.invalid:5000/team")
    assert "COPY app/ /var/azureml-app/" in ext.dockerfile
    assert "COPY model/ /var/azureml-app/azureml-models/" in ext.dockerfile
    assert 'ENV AZUREML_ENTRY_SCRIPT="score.py"' in ext.dockerfile
    assert ext.base.ref == "registry.invalid:5000/team/sklearn-1.9-debian12-py311-cpu-inference:latest"
    assert "model/model.joblib" in ext.files and isinstance(ext.files["model/model.joblib"], bytes)
    # root only while installing packages, then back to the non-root user
    lines = ext.dockerfile.splitlines()
    assert [line for line in lines if line.startswith("USER")] == ["USER 0", "USER 1000"]


def test_pinned_digest_and_plain_references_resolve(m):
    digest = "sha256:" + "a" * 64
    base = extend.resolve_base(f"sklearn-1.9-debian12-py311-cpu-inference@{digest}", m, "127.0.0.1:5000")
    assert base.ref == f"127.0.0.1:5000/sklearn-1.9-debian12-py311-cpu-inference@{digest}"
    assert extend.resolve_base("python:3.12-slim", m, "127.0.0.1:5000").ref == "python:3.12-slim"


def test_a_users_template_overrides_a_named_block(tmp_path, m):
    template = tmp_path / "mine.j2"
    template.write_text('{% extends "extend/Dockerfile.j2" %}\n{% block env %}{{ super() }}\n'
                        'HEALTHCHECK CMD curl -fsS http://127.0.0.1:5001/ || exit 1{% endblock %}\n')
    ext = extend.prepare(ROOT / "examples/sklearn-iris/extend.yml", m, "127.0.0.1:5000", template=template)
    assert ext.dockerfile.rstrip().endswith("HEALTHCHECK CMD curl -fsS http://127.0.0.1:5001/ || exit 1")
    assert 'ENV AZUREML_ENTRY_SCRIPT="score.py"' in ext.dockerfile


def test_registry_host_string_and_env_password(monkeypatch):
    cfg = extend.InferenceConfig.model_validate({"entryScript": "s.py", "baseImage": "x", "baseImageRegistry": "reg:5000"})
    assert cfg.base_image_registry.address == "reg:5000" and cfg.base_image_registry.credentials() is None
    auth = extend.RegistryAuth(address="reg", username="u", password="${BUILDER_TEST_PW}")
    monkeypatch.setenv("BUILDER_TEST_PW", "pw")
    assert auth.credentials() == {"username": "u", "password": "pw"}
    monkeypatch.delenv("BUILDER_TEST_PW")
    with pytest.raises(extend.ExtendError, match="BUILDER_TEST_PW is not set"):
        auth.credentials()


def test_python_read_from_the_base_image_is_checked(m):
    cfg = ROOT / "examples/sklearn-iris/extend.yml"
    with pytest.raises(extend.ExtendError, match="has Python 3.8.10; the inference server needs >= 3.9"):
        extend.prepare(cfg, m, "127.0.0.1:5000", image_python="3.8.10")
    with pytest.raises(extend.ExtendError, match="has no python3"):
        extend.prepare(cfg, m, "127.0.0.1:5000", image_python="")


def _bad(tmp_path, **changes):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "score.py").write_text("def init():\n    pass\n\n\ndef run(raw):\n    return raw\n")
    cfg = {"entryScript": "score.py", "sourceDirectory": "src", "runtime": "python",
           "baseImage": "sklearn-1.9-debian12-py311-cpu-inference", **changes}
    path = tmp_path / "inference-config.json"
    path.write_text(json.dumps(cfg))
    return path


BAD = {
    "missing entry script": ({"entryScript": "nope.py"}, "entryScript: {src}/nope.py does not exist"),
    "unknown base name": ({"baseImage": "sklearn-0.9-debian12-py311-cpu-inference"},
                          "baseImage: unknown base name 'sklearn-0.9-debian12-py311-cpu-inference'"),
    "GPU on a CPU base": ({"enableGpu": True}, "enableGpu: true, but base sklearn-1.9-debian12-py311-cpu-inference is a CPU image"),
    "runtime other than python": ({"runtime": "spark-py"}, "runtime: 'spark-py' is not supported (expected 'python')"),
    "unknown key": ({"entryScrip": "x.py"}, "unknown key 'entryScrip'"),
    "missing model": ({"model": ["model.pkl"]}, "model: {dir}/model.pkl does not exist"),
    "missing verification key": ({"verify": {"key": "nope.pub"}}, "verify.key: '{dir}/nope.pub': no such key file"),
    "verification key that reads as an option": ({"verify": {"key": "-x"}}, "verify.key: '{dir}/-x': no such key file"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_extension_input_exits_2_and_writes_nothing(case, tmp_path):
    changes, expected = BAD[case]
    cfg = _bad(tmp_path, **changes)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["extend", str(cfg), "--out", str(out), "--matrix", str(ROOT / "matrix.yaml")])
    assert result.exit_code == 2, result.output
    assert expected.format(src=tmp_path / "src", dir=tmp_path) in result.output
    assert not out.exists()


def test_conda_only_packages_are_named(tmp_path):
    (tmp_path / "env.yml").write_text("dependencies:\n  - python=3.11\n  - pip\n  - numpy=1.26\n  - cudatoolkit\n"
                                      "  - pip:\n      - tabulate==0.9.0\n")
    cfg = _bad(tmp_path, condaFile="env.yml")
    result = CliRunner().invoke(app, ["extend", str(cfg), "--out", str(tmp_path / "out"),
                                      "--matrix", str(ROOT / "matrix.yaml")])
    assert result.exit_code == 2
    assert ("condaFile env.yml: conda-only packages cannot be installed (conda channels are not reachable): "
            "numpy 1.26.*, cudatoolkit; list them under the pip: section instead") in result.output  # conda-lock's reading


def test_conda_file_is_read_by_conda_lock_with_selectors_and_markers(tmp_path):
    from builder.extend.inference_config import conda_pip_requirements

    (tmp_path / "env.yml").write_text(
        "channels: [conda-forge]\ndependencies:\n  - python=3.11\n  - pip\n  - pip:\n"
        "      - tabulate==0.9.0\n      - pydantic[email]>=2; python_version >= '3.9'\n"
        "      - pywin32==306  # [win]\n      - requests\n")
    assert conda_pip_requirements(tmp_path / "env.yml") == [
        "tabulate==0.9.0", "pydantic[email]>=2; python_version >= '3.9'", "requests"]
