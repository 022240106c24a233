"""The per-image smoke tests do not depend on how busy the machine is: the minimal image's suites
(the serving contract and the worker counts every image inherits) pass for both of its platforms,
run at the same time (the arm64 one under QEMU), while twice as many busy processes as CPUs spin
beside them. Every wait in the suites is a bounded wait on an event (a release run once failed on a
worker count read at one instant on a saturated machine)."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from repo import ROOT
from run_builder import MINIMAL, builder, builds, report

from builder import matrix
from builder.engine import plugins
from builder.generate import lock
from builder.matrix.platform import Platform
from builder.run import smoke

pytestmark = pytest.mark.engine


@pytest.fixture
def saturated():
    """``2 x CPUs`` processes spinning on the CPU for the test's duration; killed afterwards."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2 * (os.cpu_count() or 1))]
    try:
        yield len(hogs)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def test_two_smoke_suites_pass_at_once_on_a_saturated_machine(docker_client, tmp_path, request):
    build_dir = tmp_path / "build"
    r = builder("build", "--select", MINIMAL, "--build-dir", str(build_dir))
    assert r.returncode == 0, r.stdout + r.stderr
    built = report(build_dir)[MINIMAL]
    m = matrix.load(ROOT / "matrix.yaml")
    spec = m.image(MINIMAL)
    assert {p.name for p in spec.platforms} == {"linux/amd64", "linux/arm64"}

    def suite(platform: Platform) -> smoke.TestResult:
        return smoke.run(spec, m.data.runtime, lock.read(ROOT / "images", MINIMAL, platform),
                         f"{built['repository']}:{builds(built)[platform.name]['tag']}", ROOT / "tests" / "by_image",
                         tmp_path / "logs", label=f"{MINIMAL}{platform.suffix}", emulated=not platform.is_default)

    plugins.ensure_compose(build_dir)  # the suites' scoring containers (a `builder test` run does this)
    request.getfixturevalue("saturated")  # the load starts once the images are built
    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(spec.platforms, pool.map(suite, spec.platforms)))
    for platform, result in results.items():
        assert result.ok, f"{platform}: {result.summary}\n{result.log_path.read_text()[-6000:]}"
        assert "passed" in result.summary and "failed" not in result.summary, result.summary
