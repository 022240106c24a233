"""Every ``builder`` command takes ``--build-dir``, from one definition (one default, one help text)."""

import typer

from builder.matrix.platform import PLATFORMS
from builder import files
from builder.cli import app
from builder.extend import default_out

AMD64, ARM64 = PLATFORMS["linux/amd64"], PLATFORMS["linux/arm64"]


def _commands(group, prefix: str = "") -> dict:
    # Every leaf command of the app (typer's click commands) by its full name ("compat refresh").
    out = {}
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a group (typer vendors its own click)
            out.update(_commands(command, f"{prefix}{name} "))
        else:
            out[prefix + name] = command
    return out


def test_every_command_takes_the_one_build_dir_option():
    commands = _commands(typer.main.get_command(app))
    options = {name: [p for p in c.params if "--build-dir" in p.opts] for name, c in commands.items()}
    assert {name for name, found in options.items() if not found} == set()
    assert {(str(p[0].default), p[0].help) for p in options.values()} == {
        (str(files.BUILD_DIR), options["build"][0].help)}


def test_extend_writes_its_context_under_the_build_dir(tmp_path):
    config = tmp_path / "sklearn-iris" / "extend.yml"
    assert default_out(config, tmp_path / "b") == tmp_path / "b" / "extend" / "sklearn-iris"


def test_a_cache_registry_outside_the_reference_grammar_is_refused_in_one_line():
    from typer.testing import CliRunner

    r = CliRunner().invoke(app, ["build", "--cache-registry", "-bad ref", "--dry-run"])
    assert r.exit_code == 2 and r.output.strip().count("\n") == 0 and "--cache-registry" in r.output, r.output


def test_the_cache_ref_is_per_image_and_platform():
    from builder.run.steps.build import cache_tag

    assert [cache_tag(p) for p in (AMD64, ARM64)] == ["cache-amd64", "cache-arm64"]
