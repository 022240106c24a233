"""Locks are verified where they are used: `builder render`, `build`, `test` and `all` run the offline
lock check on the images they work on before anything is rendered or built (exit 2, one line naming
the image and its first mismatch)."""

from __future__ import annotations

import hashlib
import shutil

import pytest
from repo import GOLDEN_SMALL, ROOT
from typer.testing import CliRunner

from builder.cli import app
from builder.run import pipeline

MINIMAL = "minimal-debian12-py311-cpu-inference"
SKLEARN = "sklearn-1.9-debian12-py311-cpu-inference"


@pytest.fixture
def small(tmp_path, monkeypatch):
    """The small matrix beside a copy of its committed images/ (locks, layers, Dockerfiles). A run
    that got past the checks would call the pipeline's run: that fails the test."""
    for f in ("compat.yaml", "matrix-small.yaml"):
        shutil.copy(ROOT / "tests" / "fixtures" / f, tmp_path / f)
    shutil.copytree(GOLDEN_SMALL, tmp_path / "images")
    shutil.copy(ROOT / "tests" / "golden" / "small-docker-bake.json", tmp_path / "docker-bake.json")

    def no_run(*a, **k):
        raise AssertionError("the run started although a lock is bad")
    monkeypatch.setattr(pipeline, "run", no_run)
    return tmp_path


def _entry_version(text: str, name: str, old: str, new: str) -> str:
    assert f"\n{name}=={old} \\\n" in text
    return text.replace(f"\n{name}=={old} \\\n", f"\n{name}=={new} \\\n", 1)


def _tamper_pin(folder):
    path = folder / "images" / SKLEARN / "requirements.lock"
    text = path.read_text()
    version = next(l.split("==")[1].split()[0] for l in text.splitlines() if l.startswith("scikit-learn=="))
    path.write_text(_entry_version(text, "scikit-learn", version, "0.1.0"))
    return "scikit-learn is locked at 0.1.0"


def _copy_other(folder):
    shutil.copy(folder / "images" / MINIMAL / "requirements.lock", folder / "images" / SKLEARN / "requirements.lock")
    return f"made for image {MINIMAL}"


def _tamper_parent_entry(folder):
    path = folder / "images" / SKLEARN / "requirements.lock"
    path.write_text(_entry_version(path.read_text(), "flask", "3.1.3", "3.1.2"))
    return "flask differs from the parent's lock"


def _edit_layer(folder):
    path = folder / "images" / SKLEARN / "layer.amd64.lock"
    path.write_text(path.read_text() + "evil==1.0 --hash=sha256:" + "a" * 64 + "\n")
    return "layer.amd64.lock: not derived from requirements.lock"


def _not_utf8(folder):
    path = folder / "images" / SKLEARN / "requirements.lock"
    path.write_bytes(path.read_bytes() + b"\xff\xfe\n")
    return SKLEARN


def _bad_parent(folder):
    path = folder / "images" / MINIMAL / "requirements.lock"
    path.write_bytes(path.read_bytes() + b"\xff\n")
    return MINIMAL


def _apt_list_changed(folder):
    # matrix.yaml's runtime.apt gains a package the Debian package lock was not made for
    path = folder / "matrix-small.yaml"
    text = path.read_text()
    assert "  apt: [python3, python3-venv]\n" in text
    path.write_text(text.replace("  apt: [python3, python3-venv]\n", "  apt: [python3, python3-venv, tini]\n"))
    return "tini"


def _apt_lock_option(folder):
    path = folder / "images" / MINIMAL / "apt.amd64.lock"
    path.write_text(path.read_text() + "-o=APT::Get::AllowUnauthenticated=1\n")
    return "apt.amd64.lock:"


TAMPER = {"the parent's lock is not UTF-8": _bad_parent, "a pinned version changed": _tamper_pin, "another image's lock copied over": _copy_other,
          "a parent's entry changed in the child": _tamper_parent_entry, "the layer lock edited": _edit_layer,
          "a byte that is not UTF-8": _not_utf8, "runtime.apt changed since the Debian lock": _apt_list_changed,
          "an option in the Debian lock": _apt_lock_option}


def _snapshot(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("stage", ["build", "test", "all"])
@pytest.mark.parametrize("case", sorted(TAMPER))
def test_a_bad_lock_stops_the_run_before_anything_is_built(small, case, stage):
    words = TAMPER[case](small)
    before = _snapshot(small)
    r = CliRunner().invoke(app, [stage, "--matrix", str(small / "matrix-small.yaml"), "--select", SKLEARN,
                                 "--build-dir", str(small / "build")])
    lines = r.stderr.splitlines()
    assert r.exit_code == 2 and len(lines) == 1, r.output
    assert lines[0].startswith("lock check: ") and words in lines[0] and "nothing was built" in lines[0], lines
    assert _snapshot(small) == before and not (small / "build").exists()


@pytest.mark.parametrize("case", [c for c in sorted(TAMPER) if c != "the layer lock edited"])
def test_render_refuses_a_bad_lock_and_writes_nothing(small, case):
    words = TAMPER[case](small)
    before = _snapshot(small)
    r = CliRunner().invoke(app, ["render", "--matrix", str(small / "matrix-small.yaml")])
    lines = r.stderr.splitlines()
    assert r.exit_code == 2 and len(lines) == 1, r.output
    assert words in lines[0] and "nothing was rendered" in lines[0], lines
    assert _snapshot(small) == before


def test_good_locks_pass_and_the_run_would_start(small):
    r = CliRunner().invoke(app, ["build", "--matrix", str(small / "matrix-small.yaml"), "--select", SKLEARN,
                                 "--build-dir", str(small / "build")])
    assert isinstance(r.exception, AssertionError) and "the run started" in str(r.exception), r.output
