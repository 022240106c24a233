"""Hostile input the tool reads back or writes beside: run reports (merge, catalog), conda files,
locks, deep or binary configs, and the files it writes where a user could plant a symlink. Every
refusal exits 2 with exactly one line on stderr, no traceback, nothing written, no user file
changed, and nothing pushed (merge's push and catalog's Engine fail the test when called)."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
from pathlib import Path

import pytest
from repo import ROOT, seed_locks
from typer.testing import CliRunner
from yaml_dump import dump

from builder import engine, files
from builder.cli import app
from builder.engine import plugins as plugin_module
from builder.engine import registry
from builder.run import publish, report, report_file

MATRIX = str(ROOT / "matrix.yaml")
MINIMAL = "minimal-debian12-py311-cpu-inference"
REPO = f"{engine.LOCAL_REGISTRY}/{MINIMAL}"
PUSH_INDEX = publish.push_index  # the real ones; the autouse fixture below makes any call fail
MAKE_INDEX = registry.make_index


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def _refused(result, words: str) -> str:
    """The one stderr line of a refusal (exit 2, no traceback), which must hold ``words``."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert words in lines[0] and len(lines[0]) <= 400, lines[0]
    return lines[0]


@pytest.fixture(autouse=True)
def nothing_pushed(monkeypatch):
    """merge must refuse before its first registry call; catalog before it asks the Engine."""
    def called(*args, **kwargs):
        raise AssertionError("reached the registry or the Engine")
    for module, name in ((publish, "push_index"), (registry, "make_index"), (registry.Registry, "_client"),
                         (plugin_module, "ensure_buildx"), (engine, "client")):
        monkeypatch.setattr(module, name, called)
    monkeypatch.delenv("REGISTRY", raising=False)  # merge's default registry, as the cases expect


# --- run reports -----------------------------------------------------------------------------------

def _entry(**changes) -> dict:
    build = {"platform": "linux/amd64", "image_id": "sha256:" + "1" * 64, "tag": "1.5.1-py3.11.2-x-amd64",
             "digest": "sha256:" + "d" * 64, "framework_version": "1.5.1", "python_version": "3.11.2"}
    entry = {"name": MINIMAL, "parent": None, "status": "published", "publish": "per-platform", "repository": REPO,
             "tags": [build["tag"], "latest-amd64"], "digest": None, "error": None, "platforms": [build]}
    for key, value in changes.items():
        target = entry["platforms"][0] if key.startswith("p_") else entry
        target[key.removeprefix("p_")] = value
    return entry


def _report(*entries: dict, **top) -> str:
    return json.dumps({"generated": "2025-01-01T00:00:00Z", "stage": "all", **top, "images": list(entries)})


# name: (report file content, or a path to read; words the one line must hold)
REPORTS = {
    "images is not a list": ('{"images": "all of them"}', "images: Input should be a valid array"),
    "report is a list": ("[1, 2]", "not a report written by `builder`"),
    "not JSON": ("{images: [", "malformed JSON"),
    "not UTF-8": (b'{"images": [{"name": "caf\xe9"}]}', "not UTF-8"),
    "larger than 16 MiB": (b" " * (report_file.MAX_BYTES + 1), "larger than 16777216 bytes"),
    "endless (/dev/zero)": (Path("/dev/zero"), "larger than 16777216 bytes"),
    "nested 10,000 levels": ('{"images": [' + "[" * 10_000 + "]" * 10_000 + "]}", "nested deeper than 64"),
    "size is a string": (_report(_entry(p_uncompressed_bytes="big")), "images[0].platforms[0].uncompressed_bytes"),
    "platform build seconds negative": (_report(_entry(p_build_seconds=-1)), "images[0].platforms[0].build_seconds"),
    "unknown publish policy": (_report(_entry(publish="yes")), "images[0].publish"),
    "platforms as the old mapping": (_report(_entry(platforms={"linux/amd64": {}})), "images[0].platforms"),
    "unknown status": (_report(_entry(status="pwned")), "images[0].status"),
    "unknown key": (_report(_entry(command="rm -rf /")), "unknown key 'command'"),
    "repository reads as an option": (_report(_entry(repository="--builder=x")), "'--builder=x' is not a repository"),
    "tag reads as an option": (_report(_entry(tags=["--push"])), "'--push' is not a tag"),
    "platform tag reads as an option": (_report(_entry(p_tag="-x")), "'-x' is not a tag"),
    "digest is not sha256 hex": (_report(_entry(p_digest="sha256:--x")), "is not a digest"),
    "image id reads as an option": (_report(_entry(p_image_id="--rm")), "is not a digest"),
    "unknown platform": (_report(_entry(p_platform="linux/s390x")), "is not a platform"),
    "image name reads as an option": (_report(_entry(name="-rf")), "is not an image name"),
    "image not in the matrix": (_report(_entry(name="evil-inference")), "evil-inference is not in the matrix"),
    "version with a newline": (_report(_entry(p_framework_version="1.5.1\n")), "is not a valid version"),
    "newline in a key": (_report({**_entry(), "na\nme": 1}), "unknown key 'na\\nme'"),
    "very long repository": (_report(_entry(repository="a" * 50_000)), "longer than 255 characters"),
}


def _report_args(tmp_path: Path, case: str) -> Path:
    content, _ = REPORTS[case]
    if isinstance(content, Path):
        return content
    path = tmp_path / "job.json"
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return path


@pytest.mark.parametrize("command", ["merge", "catalog"])
@pytest.mark.parametrize("case", list(REPORTS))
def test_hostile_report(case, command, tmp_path):
    path = _report_args(tmp_path, case)
    out = ["--out", str(tmp_path / "out.json")] if command == "merge" else \
        ["--out", str(tmp_path / "images.md"), "--json", str(tmp_path / "images.json")]
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(app, [command, "--report", str(path), *out, "--matrix", MATRIX])
    line = _refused(result, REPORTS[case][1])
    assert line.startswith(f"--report: {path}")
    assert _snapshot(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == sorted(before)


@pytest.mark.parametrize("registry", ["", "registry.example.com/team"])
def test_merge_pushes_only_where_registry_says(tmp_path, registry):
    elsewhere = _entry(repository="evil.example:5000/" + MINIMAL) if registry == "" else _entry()
    (tmp_path / "job.json").write_text(_report(elsewhere))
    args = ["merge", "--report", str(tmp_path / "job.json"), "--out", str(tmp_path / "out.json"), "--matrix", MATRIX]
    result = CliRunner().invoke(app, args + (["--registry", registry] if registry else []))
    _refused(result, "refusing to push anywhere else")
    assert not (tmp_path / "out.json").exists()


class _NoIndexes:
    """A registry client whose tags name no index yet."""

    def index(self, repository, tag):
        return None


def test_an_option_looking_repository_never_reaches_imagetools(monkeypatch):
    made = []
    monkeypatch.setattr(publish, "make_index", lambda *args: made.append(args))
    with pytest.raises(publish.PublishError, match="is not a repository"):
        PUSH_INDEX(_NoIndexes(), "--builder=x", ["1.0", "latest"], {"linux/amd64": "sha256:" + "d" * 64})
    assert made == []


def test_imagetools_ends_options_before_references(monkeypatch):
    calls = []

    class Failed:
        returncode, stdout, stderr = 1, "", "no such manifest"
    monkeypatch.setattr(registry.subprocess, "run", lambda argv, **kw: calls.append(argv) or Failed())
    monkeypatch.setattr(publish, "make_index", MAKE_INDEX)
    with pytest.raises(publish.PublishError, match="imagetools create"):
        PUSH_INDEX(_NoIndexes(), REPO, ["1.0"], {"linux/amd64": "sha256:" + "d" * 64})
    assert calls == [["docker", "buildx", "imagetools", "create", f"--tag={REPO}:1.0", "--", f"{REPO}@sha256:{'d' * 64}"]]


# --- extend: conda files, extra steps, entry script, deep configs ----------------------------------

def _app(ws: Path, **changes) -> Path:
    """An extend config (JSON) in ws/app with src/score.py, changed by ``changes``; returns its path."""
    (ws / "app" / "src").mkdir(parents=True, exist_ok=True)
    (ws / "app" / "src" / "score.py").write_text("def init():\n    pass\n\n\ndef run(raw):\n    return raw\n")
    (ws / "app" / "score.py").write_text("def init():\n    pass\n")
    cfg = {"entryScript": "score.py", "sourceDirectory": "src", "baseImage": "sklearn-1.9-debian12-py311-cpu-inference",
           **changes}
    (ws / "app" / "extend.json").write_text(json.dumps(cfg))
    return ws / "app" / "extend.json"


def _conda(pip) -> callable:
    def make(ws: Path) -> Path:
        (ws / "app").mkdir(parents=True, exist_ok=True)
        (ws / "app" / "env.yml").write_text(dump({"dependencies": ["python=3.11", {"pip": pip}]}))
        return _app(ws, condaFile="env.yml")
    return make


def _binary_steps(ws: Path) -> Path:
    (ws / "app").mkdir(parents=True, exist_ok=True)
    (ws / "app" / "steps.dockerfile").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)))
    return _app(ws, extraDockerfileSteps="steps.dockerfile")


def _deep_json(ws: Path) -> Path:
    cfg = _app(ws)
    cfg.write_text('{"entryScript": "score.py", "env": ' + "[" * 20_000 + "]" * 20_000 + "}")
    return cfg


def _deep_yaml(ws: Path) -> Path:
    _app(ws)
    (ws / "app" / "extend.yml").write_text("entryScript: score.py\nenv: " + "[" * 20_000 + "]" * 20_000 + "\n")
    return ws / "app" / "extend.yml"


# name: (workspace -> config path; words the one line must hold)
EXTEND = {
    "conda pip editable VCS install": (_conda(["-e git+https://evil.example/x.git#egg=x"]),
                                       "'-e git+https://evil.example/x.git#egg=x' is not a PEP 508 requirement"),
    "conda pip VCS URL": (_conda(["git+https://evil.example/x.git"]), "'git+https://evil.example/x.git' is not a PEP 508"),
    "conda pip plain URL": (_conda(["https://evil.example/x-1.0-py3-none-any.whl"]), "is not a PEP 508 requirement"),
    "conda pip direct URL": (_conda(["x @ https://evil.example/x.whl"]), "direct URL requirements are not allowed"),
    "conda pip file path": (_conda(["./vendor/x-1.0.tar.gz"]), "'./vendor/x-1.0.tar.gz' is not a PEP 508"),
    "conda pip option": (_conda(["--index-url http://evil.example/simple"]), "'--index-url http://evil.example/simple'"),
    "conda pip requirements file": (_conda(["-r ../../secrets.txt"]), "'-r ../../secrets.txt' is not a PEP 508"),
    "conda pip section not a list": (_conda("tabulate"), "pip: expected a list of requirements"),
    "binary extraDockerfileSteps": (_binary_steps, "extraDockerfileSteps: steps.dockerfile: line 2: not UTF-8"),
    "entryScript beside sourceDirectory": (lambda ws: _app(ws, entryScript="../score.py"),
                                           "'../score.py' is outside sourceDirectory src"),
    "config JSON nested 20,000 levels": (_deep_json, "nested deeper than 64 levels"),
    "config YAML nested 20,000 levels": (_deep_yaml, "nested deeper than 64 levels"),
}


@pytest.mark.parametrize("case", list(EXTEND))
def test_hostile_extend_input(case, tmp_path):
    make, words = EXTEND[case]
    cfg = make(tmp_path)
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(app, ["extend", str(cfg), "--out", str(tmp_path / "out"), "--matrix", MATRIX])
    _refused(result, words)
    assert not (tmp_path / "out").exists() and _snapshot(tmp_path) == before


# --- matrix and locks ------------------------------------------------------------------------------

def _matrix(change) -> callable:
    def make(ws: Path, data: dict) -> None:
        data = copy.deepcopy(data)
        change(data)
        (ws / "m.yaml").write_text(dump(data))
    return make


def _rename_base(new: str):
    def change(data):
        data["bases"][new] = data["bases"].pop("debian12")
    return change


def _lock(edit) -> callable:
    def make(ws: Path, data: dict) -> None:
        (ws / "m.yaml").write_text(dump(data))
        lock = ws / "images" / "sklearn-1.9-debian12-py311-cpu-inference" / "requirements.lock"
        lock.write_bytes(edit(lock.read_bytes()))
    return make


def _deep_matrix(ws: Path, data: dict) -> None:
    (ws / "m.yaml").write_text(dump(data) + "extra: " + "[" * 20_000 + "]" * 20_000 + "\n")


# name: (writes ws/m.yaml (and may change the seeded locks); words the one line must hold)
RENDER = {
    "matrix YAML nested 20,000 levels": (_deep_matrix, "nested deeper than 64 levels"),
    "framework version with a newline": (_matrix(lambda d: d["frameworks"]["sklearn"]["versions"][0].update(
        version="1.9.1\n")), "'1.9.1\\n' is not a valid version"),
    "newline in a key": (_matrix(_rename_base("deb\nian12")), "bases.deb\\nian12"),
    "very long key": (_matrix(lambda d: d.update({"k" * 40_000: 1})), "unknown key 'kkkkkkkk"),
    "lock not UTF-8": (_lock(lambda b: b.replace(b"numpy==", b"n\xfcmpy==", 1)), "not UTF-8"),
    "lock line of 40,000 characters": (_lock(lambda b: b.replace(b"\nnumpy==", b"\nnumpy=" + b"x" * 40_000 + b"==", 1)),
                                       "expected name==version"),
}


@pytest.mark.parametrize("case", list(RENDER))
def test_hostile_matrix_and_locks(case, tmp_path, small_matrix_data):
    make, words = RENDER[case]
    (tmp_path / "compat.yaml").write_text((ROOT / "tests" / "fixtures" / "compat.yaml").read_text())
    seed_locks(tmp_path / "images")
    make(tmp_path, small_matrix_data)
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(app, ["render", "--matrix", str(tmp_path / "m.yaml"), "--templates",
                                      str(ROOT / "templates"), "--images", str(tmp_path / "images")])
    _refused(result, words)
    assert _snapshot(tmp_path) == before and not (tmp_path / "docker-bake.json").exists()


# --- paths the tool writes -------------------------------------------------------------------------

def _serve(ws: Path, compose: Path) -> list[str]:
    (ws / "app").mkdir(exist_ok=True)
    (ws / "app" / "score.py").write_text("def init():\n    pass\n")
    return ["serve", "example.invalid/x:1", "--entry-script", str(ws / "app" / "score.py"), "--compose-file",
            str(compose), "--matrix", MATRIX]


def test_compose_file_that_is_a_folder_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    before = _snapshot(tmp_path)
    _refused(CliRunner().invoke(app, _serve(tmp_path, tmp_path / "out")), "is a folder")
    assert _snapshot(tmp_path) == {**before, "app/score.py": _snapshot(tmp_path)["app/score.py"]}
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("json_name", ["images.md", "./images.md", "sub/../images.md"])
def test_catalog_out_and_json_the_same_file_is_refused(tmp_path, monkeypatch, json_name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "job.json").write_text(_report(_entry()))
    result = CliRunner().invoke(app, ["catalog", "--report", "job.json", "--out", "images.md", "--json", json_name,
                                      "--matrix", MATRIX])
    _refused(result, "--out and --json name the same file")
    assert not (tmp_path / "images.md").exists()


def _victim(ws: Path) -> Path:
    (ws / "victim.txt").write_text("the user's file\n")
    return ws / "victim.txt"


def _predictable_names(monkeypatch) -> None:
    # tempfile's random part made predictable: "planted" first, then "fresh". An attacker who
    # guessed the name gets a symlink there; O_EXCL must make the writer skip it, never follow it.
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: iter(["planted", "fresh"]))


def test_serve_compose_file_ignores_a_symlink_planted_at_its_temporary_name(tmp_path, monkeypatch):
    victim = _victim(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".c.yml.planted.tmp").symlink_to(victim)
    _predictable_names(monkeypatch)
    result = CliRunner().invoke(app, _serve(tmp_path, tmp_path / "out" / "c.yml"))
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "the user's file\n"
    assert (tmp_path / "out" / "c.yml").read_text().startswith("# Generated by `builder serve")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".c.yml.planted.tmp", "c.yml"]


def test_plugin_install_ignores_a_symlink_planted_at_its_temporary_name(tmp_path, monkeypatch):
    victim = _victim(tmp_path)
    plugins = tmp_path / "cli-plugins"
    plugins.mkdir()
    (plugins / ".docker-buildx.planted.tmp").symlink_to(victim)
    _predictable_names(monkeypatch)
    versions = iter([None, "github.com/docker/buildx v0.13"])
    monkeypatch.setattr(plugin_module, "PLUGIN_DIR", plugins)
    monkeypatch.setattr(plugin_module, "plugin_version", lambda name: next(versions))
    monkeypatch.setattr(plugin_module.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(plugin_module, "can_provision", lambda: True)
    monkeypatch.setattr(plugin_module, "installed_version", lambda package: None)
    monkeypatch.setattr(plugin_module.debian_suite, "download",
                        lambda packages, root, mirror, suite: [tmp_path / "plugins" / "buildx.deb"])

    def dpkg_deb(argv, check):  # unpack: the plugin binary where the package has it
        binary = Path(argv[3]) / "usr/libexec/docker/cli-plugins/docker-buildx"
        binary.parent.mkdir(parents=True)
        binary.write_bytes(b"\x7fELF plugin")
    monkeypatch.setattr(plugin_module.subprocess, "run", dpkg_deb)
    assert plugin_module.ensure_plugin("buildx", tmp_path) == "github.com/docker/buildx v0.13"
    assert victim.read_text() == "the user's file\n"
    assert (plugins / "docker-buildx").read_bytes() == b"\x7fELF plugin"
    assert os.stat(plugins / "docker-buildx").st_mode & 0o777 == 0o755


def test_the_run_report_replaces_a_symlink_at_its_path_never_its_target(tmp_path):
    victim = _victim(tmp_path)
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "report.json").symlink_to(victim)
    written = report.ImageReport.model_validate_json(json.dumps(_entry()))
    report.write(tmp_path / "build" / "report.json", "all", [written])
    assert victim.read_text() == "the user's file\n"
    assert not (tmp_path / "build" / "report.json").is_symlink()
    assert report_file.read(tmp_path / "build" / "report.json") == [written]
    assert [p.name for p in (tmp_path / "build").iterdir()] == ["report.json"]


def test_write_atomic_leaves_nothing_behind_when_the_target_is_a_folder(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(IsADirectoryError):
        files.write_atomic(tmp_path / "out", "x")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and list((tmp_path / "out").iterdir()) == []
