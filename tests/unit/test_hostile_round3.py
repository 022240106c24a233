"""Hostile input, round 3 (issue 32): signing keys, references, the BuildKit cache ledger, catalog rows
read back, numbers in reports, and links the tool did not make at the build folder, its marker and
the ledger. Every refusal exits with the documented code (2: bad input, 1: an Engine failure) and
one line, with no traceback, nothing written and no file of the user's changed. No case reaches a
Docker Engine, a registry or a tool: the autouse fixture makes each such call fail the test."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import docker
import pytest
import typer
import typer.testing
from repo import ROOT
from typer.testing import CliRunner

from builder.matrix.platform import PLATFORMS
from builder import catalog, engine, files
from builder.cli import app
from builder.cli import common as cli_common
from builder.matrix import load
from builder.engine import plugins, registry
from builder.sign import cosign

AMD64, ARM64 = PLATFORMS["linux/amd64"], PLATFORMS["linux/arm64"]

MATRIX = str(ROOT / "matrix.yaml")
_COMMAND, _MATRIX = typer.main.get_command(app), load(MATRIX)
MINIMAL = "minimal-debian12-py311-cpu-inference"
REPO = f"{engine.LOCAL_REGISTRY}/{MINIMAL}"
BASE = "registry.example/team/sklearn:1"


def _snapshot(folder: Path) -> dict[str, str]:
    """``{relative path: sha256 or link target}`` of everything under ``folder`` (links not followed)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "folder"
    return out


def _refused(result, words: str, code: int = 2) -> str:
    """The one stderr line of a refusal (``code``, no traceback), which must hold ``words``."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output and result.stdout == "", result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert words in lines[0] and len(lines[0]) <= 400, lines[0]
    return lines[0]


@pytest.fixture(autouse=True)
def nothing_reached(monkeypatch, tmp_path):
    """No Engine, registry, cosign or buildx: each fails the test when called. The ledger lives in
    the test's own state folder; no user is root here (nothing is installed)."""
    def reached(*args, **kwargs):
        raise AssertionError("reached the Engine, the registry or a tool")
    for module, name in ((engine, "client"), (registry.Registry, "_client"), (cosign, "ensure"),
                         (plugins, "ensure_buildx"), (plugins, "ensure_compose")):
        monkeypatch.setattr(module, name, reached)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    for var in ("REGISTRY", "BUILDER_SIGNING_KEY", "BUILDER_CACHE_REGISTRY", "COSIGN_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    # speed only: the app's command and the repository's matrix, each built once for the module
    monkeypatch.setattr(typer.testing, "_get_command", lambda typer_app: _COMMAND)
    monkeypatch.setattr(cli_common, "load_matrix", lambda path: _MATRIX if str(path) == MATRIX else load(path))


def _config(ws: Path, **changes) -> Path:
    """An extend config in ws/app (entry script ws/app/score.py) with ``changes``; returns its path."""
    (ws / "app").mkdir(parents=True, exist_ok=True)
    (ws / "app" / "score.py").write_text("def init():\n    pass\n\n\ndef run(raw):\n    return raw\n")
    (ws / "app" / "extend.json").write_text(json.dumps({"entryScript": "score.py", "baseImage": BASE, **changes}))
    return ws / "app" / "extend.json"


def _key(folder: Path, name: str = "cosign.pub") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("-----BEGIN PUBLIC KEY-----\n")
    return folder / name


# --- signing and verification keys: too long, a folder, a link to nothing ------------------------

LONG_NAME = "k" * 300  # a name past NAME_MAX (255 bytes)
LONG_PATH = "k/" * 2100 + "cosign.pub"  # short names, a path past PATH_MAX (4096 bytes)

# name: (value (``{ws}`` replaced), prepare the workspace, words the line must hold)
KEYS = {
    "name longer than the file system allows": (LONG_NAME, None, "is too long for a path"),
    "name of 5,000 characters": ("k" * 5000, None, "is too long for a path"),
    "path longer than the file system allows": (LONG_PATH, None, "is too long for a path"),
    "long name deep in a path": ("{ws}/keys/" + LONG_NAME + "/cosign.pub", None, "is too long for a path"),
    "a folder": ("{ws}/keys", lambda ws: (ws / "keys").mkdir(), "is a folder, not a key file"),
    "a link to nothing": ("{ws}/dangling.pub", lambda ws: (ws / "dangling.pub").symlink_to(ws / "gone.pub"),
                          "is a symbolic link to"),
    "a link to a link to nothing": ("{ws}/twice.pub", lambda ws: ((ws / "once.pub").symlink_to(ws / "gone.pub"),
                                                                    (ws / "twice.pub").symlink_to(ws / "once.pub")),
                                    "is a symbolic link to"),
    "a file below a file": ("{ws}/file.pub/cosign.pub", lambda ws: (ws / "file.pub").write_text("x"),
                            "cannot use it as a key file: Not a directory"),
    "a FIFO": ("{ws}/fifo.pub", lambda ws: os.mkfifo(ws / "fifo.pub"), "is not a regular file"),
}


def _key_value(ws: Path, case: str) -> str:
    value, prepare, _ = KEYS[case]
    if prepare:
        prepare(ws)
    return value.replace("{ws}", str(ws))


@pytest.mark.parametrize("case", list(KEYS))
@pytest.mark.parametrize("command", ["all", "publish", "merge"])
def test_a_signing_key_that_cannot_be_one_is_one_line(case, command, tmp_path):
    value = _key_value(tmp_path, case)
    before = _snapshot(tmp_path)
    extra = ["--report", str(tmp_path / "job.json")] if command == "merge" else []
    result = CliRunner().invoke(app, [command, *extra, "--signing-key", value, "--matrix", MATRIX,
                                      "--build-dir", str(tmp_path / "b")])
    line = _refused(result, KEYS[case][2])
    assert line.startswith("--signing-key: ")
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("case", list(KEYS))
def test_a_verification_key_that_cannot_be_one_is_one_line(case, tmp_path):
    value = _key_value(tmp_path, case)
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(app, ["verify", f"{REPO}:latest", "--key", value, "--matrix", MATRIX,
                                      "--build-dir", str(tmp_path / "b")])
    assert _refused(result, KEYS[case][2]).startswith("verify: ")
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("case", list(KEYS))
def test_extend_verify_key_that_cannot_be_one_is_one_line(case, tmp_path):
    value = _key_value(tmp_path, case)
    cfg = _config(tmp_path)
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(app, ["extend", str(cfg), "--verify-key", value, "--out", str(tmp_path / "out"),
                                      "--matrix", MATRIX])
    assert _refused(result, KEYS[case][2]).startswith("--verify-key: ")
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("spelling", [["--verify-key="], ["--verify-key", ""]])
@pytest.mark.parametrize("configured", [False, True])
def test_an_empty_verify_key_is_refused_not_taken_for_none(spelling, configured, tmp_path):
    # an empty --verify-key used to mean "no key": the base went unverified, or the config's key was used
    cfg = _config(tmp_path, **({"verify": {"key": "cosign.pub"}} if configured else {}))
    _key(tmp_path / "app")
    result = CliRunner().invoke(app, ["extend", str(cfg), *spelling, "--out", str(tmp_path / "out"),
                                      "--matrix", MATRIX, "--build-dir", str(tmp_path / "b")])
    assert _refused(result, "'' is not a key file").startswith("--verify-key: ")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stage", ["build", "test"])
@pytest.mark.parametrize("how", ["option", "environment"])
@pytest.mark.parametrize("case", ["/nonexistent/cosign.key", "a folder", LONG_NAME])
def test_build_and_test_refuse_a_signing_key_they_would_have_ignored(stage, how, case, tmp_path, monkeypatch):
    value = str(tmp_path) if case == "a folder" else case
    words = "is a folder" if case == "a folder" else "no such key file" if case.startswith("/") else "too long"
    args = [stage, "--matrix", MATRIX, "--build-dir", str(tmp_path / "b")]
    if how == "option":
        args += ["--signing-key", value]
    else:
        monkeypatch.setenv("BUILDER_SIGNING_KEY", value)
    assert _refused(CliRunner().invoke(app, args), words).startswith("--signing-key: ")
    assert not (tmp_path / "b").exists()


# --- verify.key outside the config's folder ---------------------------------------------------------

def _outside_key(ws: Path) -> str:
    _key(ws, "outside.pub")
    return "../outside.pub"


def _absolute_key(ws: Path) -> str:
    return str(_key(ws, "outside.pub"))


def _link_out(ws: Path) -> str:
    _key(ws, "outside.pub")
    (ws / "app").mkdir(parents=True, exist_ok=True)
    (ws / "app" / "cosign.pub").symlink_to(ws / "outside.pub")
    return "cosign.pub"


def _folder_link_out(ws: Path) -> str:
    _key(ws / "keys")
    (ws / "app").mkdir(parents=True, exist_ok=True)
    (ws / "app" / "keys").symlink_to(ws / "keys")
    return "keys/cosign.pub"


@pytest.mark.parametrize("make", [_outside_key, _absolute_key, _link_out, _folder_link_out])
def test_verify_key_outside_the_config_s_folder_needs_allow_outside(make, tmp_path):
    key = make(tmp_path)
    cfg = _config(tmp_path, verify={"key": key})
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(app, ["extend", str(cfg), "--out", str(tmp_path / "out"), "--matrix", MATRIX])
    line = _refused(result, "outside the config's folder")
    assert line.startswith("extend.json: verify.key: ") and "--allow-outside" in line
    assert _snapshot(tmp_path) == before
    # with the folder named, the key is taken: the next check is the base reference's
    allowed = CliRunner().invoke(app, ["extend", str(cfg), "--out", str(tmp_path / "out"), "--allow-outside",
                                       str(tmp_path), "--matrix", MATRIX, "--build-dir", str(tmp_path / "b")])
    assert "outside the config's folder" not in allowed.output


# --- references without a registry host -----------------------------------------------------------

HOSTLESS = ["minimal:1", "team/minimal:1", "minimal@sha256:" + "a" * 64, "team/minimal@sha256:" + "a" * 64,
            "x" * 200 + ":1"]


@pytest.mark.parametrize("ref", HOSTLESS)
def test_verify_of_a_reference_without_a_registry_host_is_one_line(ref, tmp_path):
    key = _key(tmp_path)
    result = CliRunner().invoke(app, ["verify", ref, "--key", str(key), "--matrix", MATRIX,
                                      "--build-dir", str(tmp_path / "b")])
    _refused(result, "names no registry host")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("ref", HOSTLESS)
def test_extend_of_a_base_without_a_registry_host_and_a_key_is_one_line(ref, tmp_path):
    key = _key(tmp_path / "app")
    cfg = _config(tmp_path, baseImage=ref)
    result = CliRunner().invoke(app, ["extend", str(cfg), "--verify-key", str(key), "--out", str(tmp_path / "out"),
                                      "--matrix", MATRIX, "--build-dir", str(tmp_path / "b")])
    assert _refused(result, "names no registry host").startswith("baseImage: ")
    assert not (tmp_path / "out").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("repository", ["minimal", "other.example/minimal", f"{engine.LOCAL_REGISTRY}/"])
def test_the_registry_client_refuses_a_repository_it_has_no_path_for(repository, monkeypatch):
    r = registry.Registry(engine.LOCAL_REGISTRY)
    with pytest.raises(registry.RegistryError, match="is not a repository of the registry"):
        r.digest(repository, "1")


# --- the BuildKit cache ledger ----------------------------------------------------------------------

def _ledger(tmp_path: Path) -> Path:
    return tmp_path / "state" / "inference-builder" / "buildkit-cache.ids"


# name: (ledger bytes, words the line must hold)
LEDGERS = {
    "not UTF-8": (b"abc\n\xff\xfe\n", "line 2: not UTF-8 text"),
    "Latin-1 id": ("r\xe9cord\n".encode("latin-1"), "line 1: not UTF-8 text"),
    "an option": (b"abc\n--all\n", "line 2: '--all' is not a BuildKit cache record id"),
    "a filter": (b"id=x\n", "line 1: 'id=x' is not a BuildKit cache record id"),
    "an id of 5,000 characters": (b"a" * 5000 + b"\n", "line 1: 'aaaa"),
    "upper case": (b"ABC\n", "'ABC' is not a BuildKit cache record id"),
    "a NUL byte": (b"abc\x00def\n", "is not a BuildKit cache record id"),
    "a CR LF line": (b"abc\r\n", "'abc\\r' is not a BuildKit cache record id"),
}


@pytest.mark.parametrize("case", list(LEDGERS))
def test_a_ledger_builder_did_not_write_stops_prune_before_anything_is_removed(case, tmp_path):
    content, words = LEDGERS[case]
    ledger = _ledger(tmp_path)
    ledger.parent.mkdir(parents=True)
    ledger.write_bytes(content)
    result = CliRunner().invoke(app, ["prune", "--build-dir", str(tmp_path / "b"), "--matrix", MATRIX])
    line = _refused(result, words)
    assert line.startswith(f"{ledger}: ") and "not a ledger written by `builder`" in line
    assert ledger.read_bytes() == content


def test_a_ledger_of_more_records_than_the_bound_is_refused(tmp_path):
    ledger = _ledger(tmp_path)
    ledger.parent.mkdir(parents=True)
    ledger.write_bytes(b"a\n" * (10**6 + 1))
    result = CliRunner().invoke(app, ["prune", "--build-dir", str(tmp_path / "b"), "--matrix", MATRIX])
    _refused(result, "more than 1000000 records")


# --- links the tool did not make: the build folder, its marker, the ledger -------------------------

def _elsewhere(ws: Path, marked: bool = False) -> Path:
    """A folder of the user's that a link will name (with the builder's marker when ``marked``)."""
    folder = ws / "elsewhere"
    folder.mkdir()
    (folder / "notes.txt").write_text("the user's notes\n")
    if marked:
        (folder / files.MARKER).write_text("made by `builder`\n")
    return folder


# name: (make the link ``build`` in the workspace; returns what it names)
LINKS = {
    "to a folder": lambda ws: _elsewhere(ws),
    "to a folder holding the marker": lambda ws: _elsewhere(ws, marked=True),
    "to nothing": lambda ws: ws / "gone",
    "to a link to a folder": lambda ws: (ws / "hop").symlink_to(_elsewhere(ws)) or ws / "hop",
    "relative, to a folder": lambda ws: _elsewhere(ws) and Path("elsewhere"),
}


def _build_link(ws: Path, case: str) -> Path:
    (ws / "build").symlink_to(LINKS[case](ws))
    return ws / "build"


def _report_file(ws: Path) -> Path:
    build = {"platform": "linux/amd64", "image_id": "sha256:" + "1" * 64, "tag": "1.5.1-py3.11.2-x-amd64",
             "digest": "sha256:" + "d" * 64, "framework_version": "1.5.1", "python_version": "3.11.2"}
    entry = {"name": MINIMAL, "status": "published", "publish": "per-platform", "repository": REPO,
             "tags": [build["tag"], "latest-amd64"], "platforms": [build]}
    (ws / "job.json").write_text(json.dumps({"images": [entry]}))
    return ws / "job.json"


# name: (the workspace -> the command's arguments, the default build folder used)
COMMANDS = {
    "extend (default --out)": lambda ws: ["extend", str(_config(ws))],
    "merge (default --out)": lambda ws: ["merge", "--report", str(_report_file(ws))],
    "catalog (default --report)": lambda ws: ["catalog", "--out", str(ws / "images.md"), "--json",
                                              str(ws / "images.json")],
    "prune": lambda ws: ["prune"],
    "build": lambda ws: ["build"],
    "test": lambda ws: ["test"],
    "publish": lambda ws: ["publish"],
    "all": lambda ws: ["all"],
    "verify": lambda ws: ["verify", f"{REPO}:latest", "--key", str(_key(ws / "keys"))],
    "serve": lambda ws: ["serve", MINIMAL, "--entry-script", str(_config(ws).parent / "score.py")],
    "lock": lambda ws: ["lock", "--no-apt", "--select", "no-such-image*"],
}


@pytest.mark.parametrize("link", list(LINKS))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_build_folder_that_is_a_link_is_refused_by_every_command(command, link, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = COMMANDS[command](tmp_path)
    build = _build_link(tmp_path, link)
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(app, [*args, "--matrix", MATRIX])
    line = _refused(result, f"{build}: is a symbolic link")
    assert "Invalid value for '--build-dir'" in line and "the build folder must be a real folder" in line
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("link", list(LINKS))
def test_an_explicit_build_dir_that_is_a_link_is_refused_too(link, tmp_path):
    build = _build_link(tmp_path, link)
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(app, ["extend", str(_config(tmp_path)), "--build-dir", str(build), "--matrix", MATRIX])
    _refused(result, "is a symbolic link")
    assert {k: v for k, v in _snapshot(tmp_path).items() if not k.startswith("app")} == before


# name: (make the marker in a real build folder)
MARKERS = {
    "a link to a file elsewhere": lambda b: ((b.parent / "elsewhere.txt").write_text("x"),
                                             (b / files.MARKER).symlink_to(b.parent / "elsewhere.txt")),
    "a link to a file beside it": lambda b: (b / files.MARKER).symlink_to("notes.txt"),
    "a link to another folder's marker": lambda b: (files.claim_folder(b.parent / "other"),
                                                    (b / files.MARKER).symlink_to(b.parent / "other" / files.MARKER)),
    "a link to a link to a file": lambda b: ((b.parent / "hop").symlink_to(b / "notes.txt"),
                                             (b / files.MARKER).symlink_to(b.parent / "hop")),
}


@pytest.mark.parametrize("case", list(MARKERS))
def test_prune_keeps_a_build_folder_whose_marker_it_did_not_make(case, tmp_path):
    build = tmp_path / "b"
    build.mkdir()
    (build / "notes.txt").write_text("the user's notes\n")
    MARKERS[case](build)
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(app, ["prune", "--build-dir", str(build), "--matrix", MATRIX])
    _refused(result, "was not made by `builder`")
    assert _snapshot(tmp_path) == before


def _ledger_link(tmp_path: Path) -> tuple[Path, Path]:
    victim = tmp_path / "victim.ids"
    victim.write_text("abc\n")
    ledger = _ledger(tmp_path)
    ledger.parent.mkdir(parents=True)
    ledger.symlink_to(victim)
    return ledger, victim


def _ledger_folder_link(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "victim"
    folder.mkdir()
    (folder / "buildkit-cache.ids").write_text("abc\n")
    ledger = _ledger(tmp_path)
    ledger.parent.parent.mkdir(parents=True)
    ledger.parent.symlink_to(folder)
    return ledger.parent, folder / "buildkit-cache.ids"


@pytest.mark.parametrize("make", [_ledger_link, _ledger_folder_link])
def test_prune_does_not_read_the_ledger_through_a_link(make, tmp_path):
    link, victim = make(tmp_path)
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(app, ["prune", "--build-dir", str(tmp_path / "b"), "--matrix", MATRIX])
    line = _refused(result, f"{link}: is a symbolic link")
    assert "the builder reads its own state only from files it made" in line
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("make", [_ledger_link, _ledger_folder_link])
def test_a_run_does_not_record_its_cache_through_a_link(make, tmp_path, capsys):
    from builder.engine import prune

    _, victim = make(tmp_path)
    before = victim.read_text()
    assert prune.record_cache({"a"}, {"a", "b"}) == 0
    assert victim.read_text() == before and "is a symbolic link" in capsys.readouterr().err


def test_a_run_records_only_ids_of_the_ledger_grammar(tmp_path):
    from builder.engine import prune

    assert prune.record_cache(set(), {"abc", "--all", "a" * 65, "ID", "x\ny"}) == 1
    assert _ledger(tmp_path).read_text() == "abc\n"


def _owned(tmp_path: Path) -> Path:
    return files.claim_folder(tmp_path / "b")


# name: (the write, given the build folder and the user's folder a link inside it names)
WRITES = {
    "write_atomic": lambda b, user: files.write_atomic(b / "logs" / "report.json", "x"),
    "write_atomic, deeper": lambda b, user: files.write_atomic(b / "logs" / "sub" / "x.json", "x"),
    "copy_atomic": lambda b, user: files.copy_atomic(b / files.MARKER, b / "logs" / "copy"),
    "open_log": lambda b, user: files.open_log(b / "logs" / "x.build.log").close(),
    "replace_folder": lambda b, user: files.replace_folder(b / "logs" / "ctx", {"Dockerfile": "FROM x\n"}),
    "claim_folder": lambda b, user: files.claim_folder(b / "logs" / "state"),
}


@pytest.mark.parametrize("write", list(WRITES))
def test_no_write_goes_through_a_link_inside_a_folder_the_tool_made(write, tmp_path):
    build = _owned(tmp_path)
    user = _elsewhere(tmp_path)
    (build / "logs").symlink_to(user)
    before = _snapshot(user)
    with pytest.raises(OSError, match="is a symbolic link"):
        WRITES[write](build, user)
    assert _snapshot(user) == before


def test_removing_the_build_folder_refuses_a_link(tmp_path):
    user = _elsewhere(tmp_path, marked=True)
    (tmp_path / "b").symlink_to(user)
    before = _snapshot(user)
    with pytest.raises(OSError, match="is a symbolic link"):
        files.remove_owned(tmp_path / "b")
    assert _snapshot(user) == before


# --- links inside a build folder the tool made: every folder it writes into or deletes ----------

def _planted(tmp_path: Path, name: str, monkeypatch) -> tuple[Path, Path]:
    """A build folder the tool made whose ``name`` is a link to the user's folder (holding
    ``rootfs/keep.txt`` too); nothing may start a process."""
    build = files.claim_folder(tmp_path / "build")
    user = _elsewhere(tmp_path)
    (user / "rootfs").mkdir()
    (user / "rootfs" / "keep.txt").write_text("the user's\n")
    (build / name).symlink_to(user)

    def started(*args, **kwargs):
        raise AssertionError("a process was started")
    monkeypatch.setattr(subprocess, "Popen", started)
    return build, user


def _build_log(build: Path) -> None:
    from builder.run import buildx as run_build

    run_build._run("x", None, ["docker", "buildx", "build"], build, {}, build / "logs" / "x.build.log", print)


def _smoke_logs(build: Path) -> None:
    from builder.run import smoke

    smoke.run(SimpleNamespace(name="x"), None, None, "x:1", build, build / "logs")


def _apt_download(build: Path) -> None:
    from builder.engine import debian_suite

    debian_suite.download(["docker-buildx"], build / "plugins", "http://deb.example/debian")


def _debootstrap(build: Path) -> None:
    from builder.engine import bases

    bases._debootstrap("debian12", None, "amd64", "http://deb.example/debian", build / "bases", print, 0)


def _registry_storage(build: Path) -> None:
    engine.ensure_registry(build)


# name: (the link's name inside the build folder, what writes into it)
INSIDE = {
    "a build's log folder": ("logs", _build_log),
    "the smoke tests' log folder": ("logs", _smoke_logs),
    "the plugins' apt state": ("plugins", _apt_download),
    "a bootstrapped base's folder (rootfs removed first)": ("bases", _debootstrap),
    "the local registry's storage": ("registry", _registry_storage),
}


@pytest.mark.parametrize("case", list(INSIDE))
def test_no_folder_inside_the_build_folder_is_written_or_emptied_through_a_link(case, tmp_path, monkeypatch):
    name, write = INSIDE[case]
    build, user = _planted(tmp_path, name, monkeypatch)
    monkeypatch.setattr(engine, "registry_answers", lambda registry, timeout=3.0: False)
    monkeypatch.setattr(engine.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    before = _snapshot(user)
    with pytest.raises(OSError, match="is a symbolic link") as refused:
        write(build)
    assert refused.value.filename == str(build / name) and _snapshot(user) == before


@pytest.mark.parametrize("layout", ["the folder", "a folder above it"])
def test_make_folder_and_remove_tree_refuse_a_link_below_a_folder_the_tool_made(layout, tmp_path):
    build = files.claim_folder(tmp_path / "build")
    user = _elsewhere(tmp_path)
    (user / "x").mkdir()
    link = build / ("x" if layout == "the folder" else "up")
    link.symlink_to(user / "x" if layout == "the folder" else user)
    target = build / "x" if layout == "the folder" else build / "up" / "x"
    before = _snapshot(user)
    for call in (files.make_folder, files.remove_tree):
        with pytest.raises(OSError, match="is a symbolic link"):
            call(target)
    assert _snapshot(user) == before


# --- catalog rows read back: the grammar they were made by ------------------------------------------

def _row(**changes) -> dict:
    row = dict(name=MINIMAL, framework="Minimal (inference server only)", framework_version="1.5.1",
               device="cpu", python="3.11.2", os="Debian GNU/Linux 12 (bookworm)", cuda=None, cudnn=None,
               packages={"azureml-inference-server-http": "1.5.1"}, uncompressed_bytes=422_000_000,
               compressed_bytes=150_000_000, immutable_tag="1.5.1-py3.11.2-0123456789ab",
               reference=f"{REPO}:1.5.1-py3.11.2-0123456789ab", digest="sha256:" + "c" * 64, sbom_digest=None,
               platform="linux/amd64", signed=False)
    return {**row, **changes}


def _up_to_date_report(ws: Path) -> Path:
    row = _row()
    build = {"platform": "linux/amd64", "tag": row["immutable_tag"], "digest": row["digest"]}
    entry = {"name": MINIMAL, "status": "up-to-date", "publish": "manifest", "repository": REPO,
             "tags": [row["immutable_tag"], "latest"], "digest": row["digest"], "platforms": [build]}
    (ws / "report.json").write_text(json.dumps({"images": [entry]}))
    return ws / "report.json"


# name: (row changes, words the line must hold after "images[0].")
ROWS = {
    "framework with a newline and a heading": ({"framework": "Minimal\n# pwned"}, "framework: 'Minimal\\n# pwned'"),
    "framework with a script line": ({"framework": "x\n<script>alert(1)</script>"}, "framework: 'x\\n<script>"),
    "framework of 5,000 characters": ({"framework": "x" * 5000}, "framework: 'xxxx"),
    "empty framework": ({"framework": ""}, "framework: '' is not one line"),
    "os with a terminal escape": ({"os": "Debian\x1b[2J"}, "os: 'Debian\\x1b[2J'"),
    "name reads as an option": ({"name": "-rf"}, "name: '-rf' is not an image name"),
    "reference reads as an option": ({"reference": "--push"}, "reference: '--push' is not an image reference"),
    "tag with a space": ({"immutable_tag": "1.0 latest"}, "immutable_tag: '1.0 latest' is not a tag"),
    "package name with a command": ({"packages": {"x; rm -rf /": "1"}},
                                    "packages.x; rm -rf /: 'x; rm -rf /' is not a Python distribution name"),
    "package version with a newline": ({"packages": {"numpy": "1\n"}}, "packages.numpy: '1\\n' is not a valid version"),
    "framework version with a pipe": ({"framework_version": "1|2"}, "framework_version: '1|2' is not a valid version"),
    "cuda with markup": ({"cuda": "<b>12</b>"}, "cuda: '<b>12</b>' is not a valid version"),
    "unknown device": ({"device": "tpu"}, "device: 'tpu' is not allowed"),
    "unknown platform": ({"platform": "linux/s390x"}, "platform: 'linux/s390x' is not a platform"),
    "size of 2**80 bytes": ({"uncompressed_bytes": 2**80}, "uncompressed_bytes: Input should be less than or equal to"),
    "pulled size past 1 PB": ({"compressed_bytes": 10**15 + 1}, "compressed_bytes: Input should be less than or equal"),
    "negative size": ({"uncompressed_bytes": -1}, "uncompressed_bytes: Input should be greater than or equal to 0"),
}


@pytest.mark.parametrize("case", list(ROWS))
def test_a_tampered_catalog_row_never_reaches_the_markdown(case, tmp_path):
    changes, words = ROWS[case]
    report = _up_to_date_report(tmp_path)
    (tmp_path / "images.json").write_text(json.dumps({"images": [_row(**changes)]}, indent=2) + "\n")
    (tmp_path / "images.md").write_text(f"<!-- {catalog.GENERATED} -->\n")
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(app, ["catalog", "--report", str(report), "--out", str(tmp_path / "images.md"),
                                      "--json", str(tmp_path / "images.json"), "--matrix", MATRIX])
    line = _refused(result, f"images[0].{words}")
    assert line.startswith(f"{tmp_path / 'images.json'}: ") and "not a catalog written by `builder catalog`" in line
    assert _snapshot(tmp_path) == before


def test_a_kept_row_must_carry_the_matrix_s_title_and_device(tmp_path, monkeypatch):
    from builder.run.report_file import read

    report = read(_up_to_date_report(tmp_path))[0]
    read_again = []
    monkeypatch.setattr(catalog, "_row", lambda *args: read_again.append(args[3].platform) or "read from the image")
    m = load(MATRIX)
    for changes in ({"framework": "<script>alert(1)</script>"}, {"device": "gpu"}):
        previous = {(MINIMAL, AMD64): catalog.Row(**_row(**changes))}
        assert catalog.rows(m, {MINIMAL: report}, ROOT / "images", None, previous) == ["read from the image"]
    assert catalog.rows(m, {MINIMAL: report}, ROOT / "images", None,
                        {(MINIMAL, AMD64): catalog.Row(**_row())}) == [catalog.Row(**_row())]
    assert read_again == [AMD64, AMD64]


@pytest.mark.parametrize("text", ["<script>alert(1)</script>", "a | b", "[x](javascript:alert(1))", "*x* _y_ `z`",
                                  "&lt;b&gt;", "# heading"])
def test_free_text_in_a_markdown_cell_stays_text(text):
    row = catalog.Row(**_row(framework=text, os=text))
    line = next(line for line in catalog.markdown([row]).splitlines() if line.startswith("| `"))
    assert line.count(" | ") == 15 and "<script>" not in line and not re.search(r"(?<!\\)\]\(", line)
    assert all(f"\\{c}" in line for c in set(text) & set("<>|[*_`&#"))


# --- numbers read back: sizes, seconds, counts ------------------------------------------------------

def _entry(build: dict | None = None, **top) -> dict:
    b = {"platform": "linux/amd64", "image_id": "sha256:" + "1" * 64, "tag": "1.5.1-py3.11.2-x-amd64",
         "digest": "sha256:" + "d" * 64, "framework_version": "1.5.1", "python_version": "3.11.2", **(build or {})}
    return {"name": MINIMAL, "status": "published", "publish": "per-platform", "repository": REPO,
            "tags": [b["tag"], "latest-amd64"], "platforms": [b], **top}


# name: (report text, words the line must hold)
NUMBERS = {
    "size of 2**80 bytes": ({"images": [_entry({"uncompressed_bytes": 2**80})]}, "platforms[0].uncompressed_bytes"),
    "pulled size past 1 PB": ({"images": [_entry({"compressed_bytes": 10**15 + 1})]}, "platforms[0].compressed_bytes"),
    "build of 1e308 s": ({"images": [_entry({"build_seconds": 1e308})]}, "platforms[0].build_seconds"),
    "build of a week and a second": ({"images": [_entry({"build_seconds": 604_801})]}, "platforms[0].build_seconds"),
    "smoke test of 1e308 s": ({"images": [_entry({"test": {"outcome": "1 passed", "seconds": 1e308, "log": "x"}})]},
                              "platforms[0].test.seconds"),
    "healthy after 1e300 s": ({"images": [_entry({"test": {"outcome": "1 passed", "seconds": 1, "log": "x",
                                                           "seconds_to_healthy": 1e300}})]},
                              "platforms[0].test.seconds_to_healthy"),
    "signing of 1e308 s": ({"images": [_entry(sign_seconds=1e308)]}, "images[0].sign_seconds"),
    "a million and one steps": ({"images": [_entry({"steps": 10**6 + 1})]}, "platforms[0].steps"),
    "cached steps of 2**64": ({"images": [_entry({"cached_steps": 2**64})]}, "platforms[0].cached_steps"),
    "SBOM of 2**63 components": ({"images": [_entry({"sbom": {"path": "x", "components": 2**63}})]},
                                 "platforms[0].sbom.components"),
    "jobs of 10**9": ({"jobs": 10**9, "images": [_entry()]}, "jobs"),
    "peak builds of 10**9": ({"peak_parallel_builds": 10**9, "images": [_entry()]}, "peak_parallel_builds"),
}


@pytest.mark.parametrize("command", ["merge", "catalog"])
@pytest.mark.parametrize("case", list(NUMBERS))
def test_numbers_read_back_from_a_report_have_bounds(case, command, tmp_path):
    doc, words = NUMBERS[case]
    (tmp_path / "job.json").write_text(json.dumps(doc))
    out = ["--out", str(tmp_path / "out.json")] if command == "merge" else \
        ["--out", str(tmp_path / "images.md"), "--json", str(tmp_path / "images.json")]
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(app, [command, "--report", str(tmp_path / "job.json"), *out, "--matrix", MATRIX])
    line = _refused(result, words)
    assert line.startswith(f"--report: {tmp_path / 'job.json'}: ") and "less than or equal to" in line
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("row, words", [({"name": "-rf"}, "images.0.name"),
                                        ({"name": "x\n# y"}, "images.0.name"),
                                        ({"name": "a" * 150}, "images.0.name"),
                                        ({"platform": "--x"}, "images.0.platform"),
                                        ({"platform": "linux/s390x"}, "images.0.platform")])
def test_the_size_gate_reads_the_catalog_through_the_same_grammar(row, words, tmp_path):
    from builder.engine import disk
    from builder.matrix.inputs import ConfigError

    (tmp_path / "images.json").write_text(json.dumps({"images": [{"name": MINIMAL, **row}]}))
    with pytest.raises(ConfigError) as found:
        disk.catalog_rows(tmp_path / "images.json")
    assert len(found.value.lines) == 1 and words.replace(".0.", "[0].") in found.value.lines[0]


@pytest.mark.parametrize("option, value", [("--jobs", str(10**6 + 1)), ("--test-jobs", str(10**9)),
                                           ("--keep-last", str(2**63)), ("--jobs", "1e3")])
def test_numeric_options_have_bounds(option, value, tmp_path):
    result = CliRunner().invoke(app, ["build", option, value, "--matrix", MATRIX, "--build-dir", str(tmp_path / "b")])
    line = _refused(result, option)
    assert line.startswith("builder build: Invalid value for")
    assert not (tmp_path / "b").exists()


# --- a pull the Engine refuses ----------------------------------------------------------------------

class _NoSuchImage:
    """An Engine that has no image and cannot pull: docker-py's errors as a real Engine raises them."""

    def __init__(self, explanation: str | None, status: int = 404):
        self.explanation, self.status = explanation, status
        self.images = self

    def get(self, ref):
        raise docker.errors.ImageNotFound(f"No such image: {ref}")

    def pull(self, ref, **kwargs):
        response = type("Response", (), {"status_code": self.status, "reason": "Not Found",
                                         "url": f"http+docker://localhost/v1.45/images/create?fromImage={ref}"})()
        raise docker.errors.NotFound(f"{self.status} Client Error for {response.url}: Not Found", response=response,
                                     explanation=self.explanation)


@pytest.mark.parametrize("explanation, words", [
    ("pull access denied for registry.example/team/sklearn, repository does not exist or may require 'docker login'",
     "pull access denied for registry.example/team/sklearn"),
    ("manifest unknown:\nmanifest unknown", "manifest unknown: manifest unknown"),
    (None, "HTTP 404"),
])
def test_an_image_the_engine_cannot_pull_is_an_engine_failure_in_one_line(explanation, words, tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "client", lambda build_dir: _NoSuchImage(explanation))
    cfg = _config(tmp_path)
    result = CliRunner().invoke(app, ["extend", str(cfg), "--build", "--out", str(tmp_path / "out"), "--matrix", MATRIX,
                                      "--build-dir", str(tmp_path / "b")])
    line = _refused(result, f"the Engine cannot pull {BASE}: {words}", code=1)
    assert line.startswith("EngineError: ") and "http+docker" not in line and "Client Error" not in line
    assert not (tmp_path / "out").exists()


def test_the_catalog_pulls_through_the_same_refusal():
    from builder.engine.host import EngineError

    with pytest.raises(EngineError, match=f"^the Engine cannot pull {REPO}:1: HTTP 404$"):
        with catalog._local_image(_NoSuchImage(None), f"{REPO}:1"):
            pass


# --- a lock that is a link is said to be one, not missing ------------------------------------------

@pytest.mark.parametrize("target", ["a lock elsewhere", "nothing"])
def test_a_lock_that_is_a_link_is_named_a_link(target, tmp_path):
    from builder.generate import lock
    from builder.matrix.inputs import ConfigError

    folder = tmp_path / MINIMAL
    folder.mkdir()
    source = ROOT / "images" / MINIMAL / lock.file_name()
    if target == "nothing":
        (folder / lock.file_name()).symlink_to(tmp_path / "gone")
    else:
        (tmp_path / "elsewhere.lock").write_text(source.read_text())
        (folder / lock.file_name()).symlink_to(tmp_path / "elsewhere.lock")
    with pytest.raises(ConfigError, match="is a symbolic link, not a lock `builder lock` wrote"):
        lock.read(tmp_path, MINIMAL)


@pytest.mark.parametrize("key, value, words", [("python", "3.11;id", "'3.11;id' is not a valid version"),
                                               ("image", "-rf", "'-rf' is not an image name"),
                                               ("platform", "linux/s390x", "'linux/s390x' is not a platform")])
def test_a_lock_header_goes_through_the_grammar_it_was_written_with(key, value, words):
    from builder.generate import lock
    from builder.matrix.inputs import ConfigError

    text = (ROOT / "images" / MINIMAL / lock.file_name()).read_text()
    lines = [f"# {key}: {value}" if line.startswith(f"# {key}: ") else line for line in text.splitlines()]
    with pytest.raises(ConfigError, match=f"the header's '# {key}:' line: {words}".replace("(", r"\(").replace(")", r"\)")):
        lock.parse("\n".join(lines) + "\n", "requirements.lock")
