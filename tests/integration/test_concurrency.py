"""Concurrent builds keep failures isolated: a sibling whose build fails does not cancel the other
siblings building at the same time, gets no tag, and its own children are skipped.

That the two siblings really were in flight together is made sure of, and recorded, by a `docker`
stand-in first on the run's PATH (:func:`gate`): each sibling's `docker buildx bake` says it
started, waits until the other one has started too, and then runs the real command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from repo import ROOT, seed_locks

from builder.generate.bake import target_name

pytestmark = pytest.mark.engine

GOOD = "sklearn-1.9-debian12-py311-cpu-inference"
BAD = "sklearn-1.8-debian12-py311-cpu-inference"
#: How long a gated build waits for its sibling's start before it runs alone (and the test fails).
GATE_SECONDS = 600

_STAND_IN = """\
#!{python}
# `docker` for one test: `buildx bake` of a gated target appends "start <target>" to the events
# file, waits (at most {seconds} s) until every gated target has started, runs the real docker,
# then appends "end <target> <exit code>". Anything else is the real docker.
import os, subprocess, sys, time
events, real, gated = {events!r}, {real!r}, set({gated!r})
args = sys.argv[1:]
target = args[-1] if args[:2] == ["buildx", "bake"] else None
if target not in gated:
    os.execv(real, [real, *args])


def record(line):
    with open(events, "a") as f:
        f.write(line + "\\n")


def started():
    with open(events) as f:
        return {{line.split()[1] for line in f if line.startswith("start ")}}


record("start " + target)
deadline = time.monotonic() + {seconds}
while not gated <= started() and time.monotonic() < deadline:
    time.sleep(0.1)
code = subprocess.call([real, *args])
record("end %s %d" % (target, code))
sys.exit(code)
"""


def gate(folder: Path, names: list[str]) -> tuple[Path, Path]:
    """A `docker` stand-in in ``folder`` that holds the bake of each of ``names`` until all of them
    have started. Returns (the folder to put first on PATH, the events file)."""
    real = shutil.which("docker")
    assert real, "no docker CLI on PATH"
    folder.mkdir(parents=True, exist_ok=True)
    events = folder / "events"
    events.write_text("")
    stand_in = folder / "docker"
    stand_in.write_text(_STAND_IN.format(python=sys.executable, events=str(events), real=real,
                                         gated=sorted(target_name(n) for n in names), seconds=GATE_SECONDS))
    stand_in.chmod(0o755)
    return folder, events


def test_a_failing_build_does_not_cancel_its_siblings(docker_client, tmp_path):
    # A copy of the matrix and its locks in which one sibling pins, and locks, a release that does not
    # exist: the offline lock check passes (lock and pin agree), the install in the build fails.
    for name in ("compat.yaml", "matrix.yaml"):
        shutil.copy2(ROOT / name, tmp_path / name)
    seed_locks(tmp_path / "images", ROOT / "images")
    matrix = tmp_path / "matrix.yaml"
    assert matrix.read_text().count("joblib: 1.5.3}") == 1
    matrix.write_text(matrix.read_text().replace("joblib: 1.5.3}", "joblib: 999.0.0}"))
    bad_lock = tmp_path / "images" / BAD / "requirements.lock"
    text = bad_lock.read_text()
    assert "\njoblib==1.5.3 \\\n" in text  # the entry, not the header's list of pins
    bad_lock.write_text(text.replace("\njoblib==1.5.3 \\\n", "\njoblib==999.0.0 \\\n", 1))
    opts = ["--matrix", str(tmp_path / "matrix.yaml"), "--templates", str(ROOT / "templates"),
            "--images", str(tmp_path / "images")]
    shim, events = gate(tmp_path / "gate", [GOOD, BAD])
    env = {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "builder.cli", *a], cwd=ROOT, capture_output=True,
                                    text=True, timeout=1800 + GATE_SECONDS, env=env)
    r = run("render", *opts)
    assert r.returncode == 0, r.stdout + r.stderr
    build_dir = tmp_path / "build"
    r = run("build", *opts, "--platform", "linux/amd64", "--select", GOOD, "--select", BAD, "--jobs", "4", "--build-dir", str(build_dir))
    assert r.returncode == 1, r.stdout + r.stderr
    # The two siblings' builds were in flight together: both started before either ended.
    lines = events.read_text().splitlines()
    good, bad = target_name(GOOD), target_name(BAD)
    assert sorted(line.split()[1] for line in lines if line.startswith("start ")) == sorted([good, bad]), lines
    first_end = next((i for i, line in enumerate(lines) if line.startswith("end ")), len(lines))
    assert {line.split()[1] for line in lines[:first_end] if line.startswith("start ")} == {good, bad}, (
        f"the builds ran one after the other (the run did not start both within {GATE_SECONDS} s): {lines}")
    ends = {line.split()[1]: int(line.split()[2]) for line in lines if line.startswith("end ")}
    assert ends[good] == 0 and ends[bad] != 0, lines
    report = json.loads((build_dir / "report.json").read_text())
    images = {i["name"]: i for i in report["images"]}
    assert images[BAD]["status"] == "build-failed" and images[BAD]["tags"] == []
    assert "joblib" in images[BAD]["error"] or "999" in images[BAD]["error"], images[BAD]["error"]
    assert images[GOOD]["status"] == "built" and images[GOOD]["platforms"][0]["image_id"], images[GOOD]
    assert f"{BAD} build-failed" in r.stdout and "CANCELED" not in Path(images[GOOD]["platforms"][0]["build_log"]).read_text()
