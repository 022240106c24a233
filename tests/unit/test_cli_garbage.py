"""Every command of the ``builder`` CLI, found by walking the typer app (a new command is covered
without a change here), run with garbage in each of its arguments and options that take a value, one
at a time, the others valid: empty, 5,000 characters, binary bytes decoded as text (NUL-free) and
option-looking values. Each run ends without a traceback, with the documented exit code (2: bad
input) and one line of output, and writes nothing.

No run can reach a Docker Engine, a registry, a package index or another program: ``DOCKER_HOST``
names a socket that does not exist, the user is not root (so nothing is installed), and the entry
points that would start a tool or reach the network fail the test when called. The few values that
are valid (an empty ``--registry`` means the default one) must end at the Engine that does not
answer: exit 1, one line."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import typer
import typer.testing
from repo import ROOT
from typer.testing import CliRunner

from builder.cli import app
from builder.cli import common as cli_common
from builder.engine import plugins, registry
from builder.generate import python_resolver
from builder.matrix import compat, load
from builder.sign import cosign

MATRIX = str(ROOT / "matrix.yaml")
MINIMAL = "minimal-debian12-py311-cpu-inference"

#: The garbage every argument and option gets, one at a time.
GARBAGE = {
    "empty": "",
    "5,000 characters": "a" * 5000,
    "binary": bytes(range(1, 256)).decode("latin-1"),
    "undecodable bytes": os.fsdecode(bytes(range(128, 256))),
    "long option": "--x",
    "short options": "-rf",
}

#: ``(option, value)`` pairs that are not garbage: the value is valid (an empty registry, cache
#: registry or signing key means the default: none), and the exit code the command then ends with
#: when no Engine answers (1), or 0 when it needs none.
VALID = {("--registry", ""): {"extend": 0, "serve": 0, "merge": 2}, ("--cache-registry", ""): {},
         ("--signing-key", ""): {"merge": 2}}
#: The exit code of a valid value when VALID does not name the command: the Engine does not answer.
NO_ENGINE = 1


def _commands() -> dict[tuple[str, ...], object]:
    """``{command path: click command}`` of every command the app registers, groups walked."""
    found: dict[tuple[str, ...], object] = {}

    def walk(group, path: tuple[str, ...]) -> None:
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                walk(command, (*path, name))
            else:
                found[(*path, name)] = command
    walk(typer.main.get_command(app), ())
    return found


COMMANDS = _commands()


def _workspace(ws: Path) -> dict[str, list[str]]:
    """Valid values for every required argument and option, by command name (files in ``ws``)."""
    (ws / "app").mkdir()
    (ws / "app" / "score.py").write_text("def init():\n    pass\n\n\ndef run(raw):\n    return raw\n")
    (ws / "app" / "extend.json").write_text(json.dumps({"entryScript": "score.py",
                                                         "baseImage": "registry.example/x:1"}))
    (ws / "cosign.pub").write_text("-----BEGIN PUBLIC KEY-----\n")
    return {"dockerfile": [MINIMAL], "extend": [str(ws / "app" / "extend.json"), "--out", str(ws / "out")],
            "serve": [MINIMAL, "--entry-script", str(ws / "app" / "score.py"), "--compose-file", str(ws / "c.yml")],
            "verify": ["127.0.0.1:5000/minimal:1", "--key", str(ws / "cosign.pub")],
            "merge": ["--report", str(ws / "no-report.json")]}


def _replace(args: list[str], option: str, value: str) -> list[str]:
    # ``args`` with ``option``'s value (or the positional argument at index ``option``) set to ``value``.
    if isinstance(option, int):
        return [*args[:option], value, *args[option + 1:]]
    if option in args:
        i = args.index(option)
        return [*args[:i + 1], value, *args[i + 2:]]
    return [*args, option, value]


def _cases(path: tuple[str, ...], command, ws: Path, valid: dict[str, list[str]]) -> list[tuple[str, list[str], int]]:
    """``(what, argv, expected exit code)`` of every garbage run of one command; ``valid`` gives the
    required arguments and options by command name (:func:`_workspace`)."""
    name = path[-1]
    base = list(valid.get(name, []))
    if any("--matrix" in p.opts for p in command.params):
        base += ["--matrix", MATRIX]
    if any("--build-dir" in p.opts for p in command.params):
        base += ["--build-dir", str(ws / "build")]
    out = []
    positional = [p for p in command.params if p.param_type_name == "argument"]
    options = [p.opts[0] for p in command.params if p.param_type_name == "option" and not p.is_flag]
    for label, value in GARBAGE.items():
        if positional:
            out += [(f"{name} argument {i}: {label}", [*path, *_replace(base, i, value)], 2)
                    for i in range(len(positional))]
        else:
            out.append((f"{name} extra argument: {label}", [*path, value, *base], 2))
        for option in options:
            expected = VALID.get((option, value), {}).get(name, NO_ENGINE) if (option, value) in VALID else 2
            out.append((f"{name} {option}: {label}", [*path, *_replace(base, option, value)], expected))
    return out


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A workspace, an Engine that does not answer, no root, and every tool or network entry point
    failing the test when reached."""
    ws = tmp_path / "ws"
    ws.mkdir()
    valid = _workspace(ws)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    for var in ("REGISTRY", "BUILDER_JOBS", "BUILDER_TEST_JOBS", "BUILDER_SIGNING_KEY", "BUILDER_CACHE_REGISTRY",
                "BUILDER_PRUNE_CACHE", "COSIGN_PASSWORD", "REGISTRY_USERNAME", "REGISTRY_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 65534)  # not root: builder.engine.host.can_provision is False

    def reached(*args, **kwargs):
        raise AssertionError("garbage reached a tool, the network or the Engine")
    for module, attr in ((subprocess, "Popen"), (python_resolver, "lock_all"), (compat, "refresh"), (cosign, "ensure"),
                         (plugins, "ensure_buildx"), (plugins, "ensure_compose"), (registry.Registry, "_client"),
                         (registry, "answers")):
        monkeypatch.setattr(module, attr, reached)
    matrix = load(MATRIX)  # loaded once: every command reads the same file
    command = typer.main.get_command(app)  # built once (typer builds it again on each invoke)
    monkeypatch.setattr(typer.testing, "_get_command", lambda typer_app: command)
    monkeypatch.setattr(cli_common, "load_matrix", lambda path: matrix if str(path) == MATRIX else load(path))
    return ws, cwd, valid


def test_every_command_is_found():
    assert {" ".join(p) for p in COMMANDS} >= {"render", "lock", "list", "dockerfile", "ci-matrix", "build", "test",
                                               "publish", "all", "catalog", "merge", "prune", "extend", "serve",
                                               "verify", "compat refresh"}


@pytest.mark.parametrize("group", [(), ("compat",)], ids=["builder", "compat"])
def test_garbage_for_a_command_name_is_one_line(group, sandbox):
    for value in GARBAGE.values():
        result = CliRunner().invoke(app, [*group, value])
        assert result.exit_code == 2 and isinstance(result.exception, SystemExit), (value[:20], result.output)
        assert result.stdout == "" and len(result.stderr.splitlines()) == 1, result.output


@pytest.mark.parametrize("option", ["--select", "--upgrade-package"])
def test_lock_check_refuses_garbage_it_would_have_ignored(option, sandbox):
    for value in ("-rf", "a" * 5000, ""):
        result = CliRunner().invoke(app, ["lock", "--check", option, value, "--matrix", MATRIX])
        assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, result.output


@pytest.mark.parametrize("option", ["--build-dir", "--matrix", "--images"])
def test_garbage_in_a_path_option_is_refused_while_parsing(option, sandbox):
    command = ["render"] if option == "--images" else ["list"]
    for value in GARBAGE.values():
        extra = [] if option == "--matrix" else ["--matrix", MATRIX]
        result = CliRunner().invoke(app, [*command, *extra, option, value])
        assert result.exit_code == 2 and isinstance(result.exception, SystemExit), (value[:20], result.output)
        assert result.stdout == "" and len(result.stderr.splitlines()) == 1, result.output
        assert f"Invalid value for '{option}'" in result.stderr, result.stderr


@pytest.mark.parametrize("path", list(COMMANDS), ids=" ".join)
def test_garbage_in_every_argument_is_one_line_and_the_documented_exit_code(path, sandbox):
    ws, cwd, valid = sandbox
    failures = []
    for what, argv, expected in _cases(path, COMMANDS[path], ws, valid):
        result = CliRunner().invoke(app, argv)
        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        traceback = result.exception is not None and not isinstance(result.exception, SystemExit)
        if traceback or result.exit_code != expected or len(lines) != 1:
            failures.append(f"{what}: exit {result.exit_code} (expected {expected}), {len(lines)} lines, "
                            f"{type(result.exception).__name__}: {(result.stdout + result.stderr)[:300]!r}")
    assert not failures, "\n".join(failures)
    assert list(cwd.iterdir()) == [] and not (ws / "build").exists()
