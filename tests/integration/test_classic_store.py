"""The main job once more on the classic image store (``features.containerd-snapshotter: false``),
which many users still run: the minimal image on linux/amd64 (one job of a run split by platform),
built, smoke-tested, tagged and published, with the digests and sizes meaning what they mean on the
containerd store. What differs between the stores is how a build is stored, named and pushed, which
one root build exercises. The classic store keeps its own images and build cache, so everything
more is cold there: minimal + sklearn on both platforms took 16 min (measured), the minimal image on
both 9 min, against the CI budget of ~30 min. The image index is made in the registry from pushed
digests, the same way on either store; the containerd-store tests publish indexes.

The module stops the project's Engine, starts the same ``dockerd`` with a configuration file that
turns the containerd store off, and at the end stops that one and starts the project's again (never
two at once). Both stores live side by side in the one data root.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from repo import ROOT
from run_builder import MINIMAL, builder, builds, names_image, raw_digest, report

from builder import engine
from builder.engine import daemon

pytestmark = pytest.mark.engine

PID_FILE = Path("/var/run/docker.pid")
ROOT_NAMESPACE = "127.0.0.1:5000/"


def _gone(pid: int) -> bool:
    # The process has exited (a zombie waiting for its parent counts as exited).
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"


def _stop_engine(deadline_s: float = 300) -> None:
    """Stop the dockerd that answers (SIGTERM, as ``systemctl stop docker`` does) and wait for it to exit."""
    pid = int(PID_FILE.read_text().strip())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + deadline_s
    while not _gone(pid):
        assert time.monotonic() < deadline, f"dockerd {pid} did not exit within {deadline_s:.0f} s"
        time.sleep(0.5)
    while engine.daemon._ping() is not None:  # its socket is gone too
        assert time.monotonic() < deadline, "the Engine still answers after dockerd exited"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def classic_engine(docker_client, tmp_path_factory):
    """The Engine restarted on the classic store for this module, then restarted as it was."""
    folder = tmp_path_factory.mktemp("classic-engine")
    config = folder / "daemon.json"
    config.write_text(json.dumps({"features": {"containerd-snapshotter": False}}) + "\n")
    _stop_engine()
    try:
        client = daemon.start(ROOT / "build", timeout=300, config=config)
        assert not engine.containerd_store(client)
        yield client
        for image in client.images.list():  # this module's tags; its layers and build cache stay for the next run
            for t in image.tags:
                if t.startswith(f"{ROOT_NAMESPACE}classic-"):
                    client.api.remove_image(t)
    finally:
        if daemon._ping() is not None:
            _stop_engine()
        assert engine.containerd_store(engine.client(ROOT / "build", timeout=300))


def test_the_main_job_publishes_on_the_classic_store(classic_engine, registry, tmp_path):
    assert registry + "/" == ROOT_NAMESPACE
    namespace = f"{registry}/classic-{uuid.uuid4().hex[:8]}"
    result = builder("all", "--by-platform", "--platform", "linux/amd64", "--select", MINIMAL, "--build-dir", str(tmp_path),
                     env={"REGISTRY": namespace})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    images = report(tmp_path)
    assert list(images) == [MINIMAL]
    for name, r in images.items():
        assert r["status"] == "published" and r["publish"] == "per-platform" and "latest-amd64" in r["tags"], r
        assert set(builds(r)) == {"linux/amd64"}, r
        for platform, b in builds(r).items():
            for t in r["tags"]:
                assert raw_digest(f"{namespace}/{name}:{t}") == b["digest"]
            assert "passed" in b["test"]["outcome"], (platform, b)
            # the registry's manifest is the local image: its config is the classic store's image id
            manifest = json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw",
                                                  f"docker://{namespace}/{name}@{b['digest']}"],
                                                 capture_output=True, check=True).stdout)
            assert names_image(b["digest"], manifest, b["image_id"], containerd_store=False)
            assert 50_000_000 < b["compressed_bytes"] < b["uncompressed_bytes"], b
