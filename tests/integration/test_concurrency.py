"""Concurrent builds keep failures isolated: a sibling whose build fails does not cancel the other
siblings building at the same time, gets no tag, and its own children are skipped."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from repo import ROOT, seed_locks

pytestmark = pytest.mark.engine

GOOD = "sklearn-1.9-debian12-py311-cpu-inference"
BAD = "sklearn-1.8-debian12-py311-cpu-inference"


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
    run = lambda *a: subprocess.run([sys.executable, "-m", "builder.cli", *a], cwd=ROOT, capture_output=True,
                                    text=True, timeout=1800, env=dict(os.environ))
    r = run("render", *opts)
    assert r.returncode == 0, r.stdout + r.stderr
    build_dir = tmp_path / "build"
    r = run("build", *opts, "--platform", "linux/amd64", "--select", GOOD, "--select", BAD, "--jobs", "4", "--build-dir", str(build_dir))
    assert r.returncode == 1, r.stdout + r.stderr
    report = json.loads((build_dir / "report.json").read_text())
    images = {i["name"]: i for i in report["images"]}
    assert images[BAD]["status"] == "build-failed" and images[BAD]["tags"] == []
    assert "joblib" in images[BAD]["error"] or "999" in images[BAD]["error"], images[BAD]["error"]
    assert images[GOOD]["status"] == "built" and images[GOOD]["image_id"], images[GOOD]
    assert report["peak_parallel_builds"] == 2  # the two siblings built at the same time
    assert f"{BAD} build-failed" in r.stdout and "CANCELED" not in Path(images[GOOD]["build_log"]).read_text()
