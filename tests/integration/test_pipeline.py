"""The main job on real components: a Docker Engine and an OCI distribution registry.

These tests start both when they are missing (see builder.engine) and never skip. They run the
`builder` CLI itself on a representative subset — the minimal image and one scikit-learn image —
plus the fault case: an entry script that raises in init() gets no `latest` and is not pushed.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from repo import ROOT
from run_builder import MINIMAL, SUBSET, builder, builds, raw_digest, report

from builder import matrix
from builder.generate import lock
from builder.matrix.platform import Platform

pytestmark = pytest.mark.engine



def skopeo_digest(ref: str) -> str | None:
    """The manifest digest skopeo reads from the registry, or None when the reference is absent."""
    r = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return None
    r = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{ref}"],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout)["Digest"]


@pytest.mark.both_engines
def test_main_job_builds_tests_tags_and_publishes_the_subset(main_job, registry, docker_client):
    result, build_dir = main_job
    assert result.returncode == 0, result.stdout + result.stderr
    images = report(build_dir)
    assert list(images) == [MINIMAL, SUBSET]
    for name, r in images.items():
        assert r["status"] in ("published", "unchanged"), r
        assert "latest" in r["tags"] and len(r["tags"]) == 2 and r["publish"] == "index"
        for b in r["platforms"]:
            assert b["build_seconds"] is not None
            # both sizes, the same on either image store: the layers uncompressed, and as pushed
            assert 50_000_000 < b["compressed_bytes"] < b["uncompressed_bytes"], b
            assert re.search(r" passed in \d+(\.\d+)?s\b", b["test"]["outcome"]), b["test"]
            assert b["test"]["seconds_to_healthy"] > 0
        for t in r["tags"]:
            assert raw_digest(f"{registry}/{name}:{t}") == r["digest"]


@pytest.mark.both_engines
def test_both_platforms_passed_and_each_tag_is_a_two_platform_index(main_job, registry, docker_client):
    _, build_dir = main_job
    for name, r in report(build_dir).items():
        assert set(builds(r)) == {"linux/amd64", "linux/arm64"}, r
        for platform, facts in builds(r).items():
            assert "passed" in facts["test"]["outcome"] and facts["digest"] and facts["sbom"]["digest"], (platform, facts)
        for t in r["tags"]:
            index = json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw",
                                               f"docker://{registry}/{name}:{t}"], capture_output=True, check=True).stdout)
            listed = {f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"] for m in index["manifests"]}
            assert listed == {p: f["digest"] for p, f in builds(r).items()}
    machine = docker_client.containers.run(f"{registry}/{MINIMAL}:{builds(report(build_dir)[MINIMAL])['linux/arm64']['tag']}",
                                           entrypoint=["python3", "-c", "import platform; print(platform.machine())"],
                                           remove=True, network_disabled=True).decode().strip()
    assert machine == "aarch64"


@pytest.mark.both_engines
def test_published_image_carries_the_oci_and_project_labels(main_job, registry, docker_client):
    _, build_dir = main_job
    r = report(build_dir)[SUBSET]
    labels = docker_client.images.get(builds(r)["linux/amd64"]["image_id"]).labels
    spec = matrix.load(ROOT / "matrix.yaml").image(SUBSET)
    for key in ("title", "version", "created", "revision", "source"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    assert labels["org.opencontainers.image.title"] == SUBSET
    assert labels["io.github.inference-images.framework"] == "sklearn"
    assert labels["io.github.inference-images.framework-version"] == "1.9.1"
    assert labels["io.github.inference-images.python"] == "3.11"
    assert labels["io.github.inference-images.device"] == "cpu"
    assert labels["io.github.inference-images.cell-digest"] == f"sha256:{spec.cell_digest}"
    # the immutable tag carries the version really installed, read by the tagger
    assert r["tags"][0].startswith("1.9.1-py3.11.")


@pytest.mark.both_engines
def test_each_published_image_has_its_sbom_beside_it_in_the_registry(main_job, registry, tmp_path):
    import oras.provider

    _, build_dir = main_job
    published = [(name, platform, r) for name, image in report(build_dir).items()
                 for platform, r in builds(image).items()]  # one SBOM per manifest
    assert len(published) == 4
    for name, platform, r in published:
        hex_ = r["digest"].split(":", 1)[1]
        ref = f"{registry}/{name}:sha256-{hex_}.sbom"
        raw = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"],
                             capture_output=True, check=True).stdout
        manifest = json.loads(raw)
        assert manifest["subject"]["digest"] == r["digest"]
        assert manifest["layers"][0]["mediaType"] == "application/vnd.cyclonedx+json"
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == r["sbom"]["digest"]
        # read back with oras (a real OCI client), then look for the framework at its locked version
        pulled = oras.provider.Registry(hostname=registry, insecure=True).pull(target=ref,
                                                                              outdir=str(tmp_path / name / platform))
        bom = json.loads(Path(pulled[0]).read_text())
        assert bom["bomFormat"] == "CycloneDX" and len(bom["components"]) == r["sbom"]["components"]
        pypi = {lock.canonicalize_name(c["name"]): c["version"] for c in bom["components"]
                if c.get("purl", "").startswith("pkg:pypi/")}
        debs = [c for c in bom["components"] if c.get("purl", "").startswith("pkg:deb/debian/")]
        locked = lock.read(ROOT / "images", name, Platform.parse(platform)).versions()
        package = "scikit-learn" if name == SUBSET else "azureml-inference-server-http"
        assert pypi[package] == locked[package]
        assert pypi == locked  # the venv's packages are exactly the lock's
        assert {"python3", "tini", "ca-certificates"} <= {c["name"] for c in debs}
        arch = Platform.parse(platform).arch
        assert all(f"arch={arch}" in c["purl"] or "arch=all" in c["purl"] for c in debs)


@pytest.mark.both_engines
def test_catalog_lists_what_the_images_really_hold(main_job, registry, tmp_path):
    _, build_dir = main_job
    result = builder("catalog", "--report", str(build_dir / "report.json"), "--out", str(tmp_path / "images.md"),
                     "--json", str(tmp_path / "images.json"))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {(r["name"], r["platform"]): r for r in json.loads((tmp_path / "images.json").read_text())["images"]}
    assert set(rows) == {(n, p) for n in (MINIMAL, SUBSET) for p in ("linux/amd64", "linux/arm64")}
    r = report(build_dir)[SUBSET]
    for platform in ("linux/amd64", "linux/arm64"):
        row = rows[SUBSET, platform]
        assert row["framework_version"] == "1.9.1" and row["python"].startswith("3.11.") and "bookworm" in row["os"]
        assert row["packages"]["scikit-learn"] == lock.read(ROOT / "images", SUBSET, Platform.parse(platform)).versions()["scikit-learn"]
        assert row["digest"] == builds(r)[platform]["digest"] and row["immutable_tag"] == r["tags"][0]
    assert f"`{SUBSET}`" in (tmp_path / "images.md").read_text()


@pytest.mark.both_engines
def test_rerun_with_nothing_changed_is_up_to_date_and_force_publishes_the_same_digests(main_job, registry, tmp_path):
    # The minimal image's tree only (both platforms): the scikit-learn image's arm64 smoke test under
    # QEMU would add minutes and nothing the root image does not show.
    _, first = main_job
    before = report(first)
    result = builder("all", "--select", MINIMAL, "--build-dir", str(tmp_path / "again"), env={"REGISTRY": registry})
    assert result.returncode == 0, result.stdout + result.stderr
    again = report(tmp_path / "again")
    assert list(again) == [MINIMAL]
    r = again[MINIMAL]
    assert r["status"] == "up-to-date", r
    ids = [b["build_id"] for b in r["platforms"]]
    assert ids == [b["build_id"] for b in before[MINIMAL]["platforms"]] and None not in ids and len(set(ids)) == 2
    assert r["digest"] == before[MINIMAL]["digest"] and r["tags"] == before[MINIMAL]["tags"]
    assert [(b["digest"], b["tag"]) for b in r["platforms"]] == [(b["digest"], b["tag"]) for b in before[MINIMAL]["platforms"]]
    assert all(b["build_seconds"] is None and b["test"] is None for b in r["platforms"])  # nothing built or tested
    assert not list((tmp_path / "again" / "logs").glob("*.build.log")), "an up-to-date image was built"
    config = json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--config",
                                        f"docker://{registry}/{MINIMAL}:latest"], capture_output=True, text=True,
                                       check=True).stdout)
    assert config["config"]["Labels"]["io.github.inference-images.build-id"] == builds(r)["linux/amd64"]["build_id"]

    result = builder("all", "--force", "--select", MINIMAL, "--build-dir", str(tmp_path / "forced"),
                     env={"REGISTRY": registry})
    assert result.returncode == 0, result.stdout + result.stderr
    forced = report(tmp_path / "forced")[MINIMAL]
    assert [b["image_id"] for b in forced["platforms"]] == [b["image_id"] for b in before[MINIMAL]["platforms"]]
    assert all(b["test"]["outcome"] for b in forced["platforms"])  # built and tested again
    assert forced["status"] == "unchanged" and forced["digest"] == before[MINIMAL]["digest"]


def test_failed_smoke_test_gets_no_latest_and_is_not_pushed(registry, docker_client, tmp_path):
    # A test tree whose minimal entry script raises in init(): the server exits, the test fails.
    tests = tmp_path / "by_image"
    shutil.copytree(ROOT / "tests" / "by_image", tests)
    (tests / "minimal" / "score.py").write_text(
        "def init():\n    raise RuntimeError('model file is corrupt')\n\n\ndef run(raw_data):\n    return raw_data\n")
    namespace = f"{registry}/faultcase"
    build_dir = tmp_path / "build"
    result = builder("all", "--select", SUBSET, "--tests", str(tests), "--build-dir", str(build_dir),
                     env={"REGISTRY": namespace})
    assert result.returncode == 1, result.stdout + result.stderr
    images = report(build_dir)
    assert images[MINIMAL]["status"] == "test-failed"
    assert images[MINIMAL]["tags"] == [images[MINIMAL]["tags"][0]] and "latest" not in images[MINIMAL]["tags"]
    assert images[SUBSET]["status"] == "skipped" and MINIMAL in images[SUBSET]["error"]
    tested = [b["test"] for b in images[MINIMAL]["platforms"] if b["test"]]
    logs = "".join(Path(p).read_text() for t in tested for p in t["container_logs"])
    assert "model file is corrupt" in logs
    assert "model file is corrupt" in images[MINIMAL]["container_log_tail"]
    assert "model file is corrupt" in Path(tested[0]["log"]).read_text()
    local_tags = [t for i in docker_client.images.list() for t in i.tags if t.startswith(namespace)]
    assert local_tags and not any(":latest" in t for t in local_tags), local_tags
    for name in (MINIMAL, SUBSET):
        for t in ("latest", images[MINIMAL]["tags"][0]):
            assert skopeo_digest(f"{namespace}/{name}:{t}") is None
    catalog = requests.get(f"http://{registry}/v2/_catalog", timeout=10).json()["repositories"]
    assert not any(r.startswith("faultcase/") for r in catalog), catalog


def test_bad_selection_is_refused_before_anything_runs(tmp_path):
    result = builder("all", "--select", "nothing-like-this*", "--build-dir", str(tmp_path))
    assert result.returncode == 2
    assert "matches no image" in result.stderr
    assert not (tmp_path / "report.json").exists()


GPU_IMAGE = "xgboost-3.2-debian12-py311-cuda12-gpu-inference"


def test_gpu_image_passes_the_cpu_fallback_and_linked_version_checks(docker_client, tmp_path):
    """The smallest GPU image (XGBoost with NCCL) on this GPU-less machine: the XGBoost smoke test
    with real predictions on the CPU, the compat.yaml checks and the linked-version checks pass; the
    tests that need a GPU are skipped with their reason."""
    import xml.etree.ElementTree as ET

    result = builder("test", "--select", GPU_IMAGE, "--build-dir", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    r = report(tmp_path)[GPU_IMAGE]
    assert r["status"] == "tested"
    cases = {(c.get("classname"), c.get("name")): c for c in ET.parse(tmp_path / "logs" / f"{GPU_IMAGE}.junit.xml").iter("testcase")}
    names = {name for _, name in cases}
    for must_pass in ("test_installed_nvidia_wheels_are_the_tables",
                      "test_spec_name_and_labels_carry_the_installed_cuda_and_cudnn",
                      "test_xgboost_is_a_cuda_build_of_the_tables_cuda_major",
                      "test_score_returns_the_in_process_probabilities"):
        assert must_pass in names
        case = next(c for (_, n), c in cases.items() if n == must_pass)
        assert case.find("skipped") is None and case.find("failure") is None and case.find("error") is None
    on_gpu = next(c for (_, n), c in cases.items() if n == "test_framework_computes_on_the_gpu")
    assert "nvidia-smi" in on_gpu.find("skipped").get("message")
