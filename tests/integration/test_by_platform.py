"""A run split by platform, on real components: one `builder all --by-platform` job per platform
pushes per-platform tags only, and `builder merge` makes `latest` a two-platform index only once
every platform's job has passed (docker-stacks' merge-tags). Run again with nothing changed, signed,
on a fresh runner (the local images removed), each job is up to date and the merge unchanged: the
registry receives no upload (its log has no PUT, POST or PATCH), and `builder verify` passes on the
merged index. With one platform's input changed (its local base image), only that platform's job
builds, tests and pushes, and the merge makes a new index of its new manifest and the other
platform's unchanged one."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import uuid
from pathlib import Path

import docker
import pytest
from repo import ROOT
from run_builder import MINIMAL, builder, builds, names_image, raw_digest, registry_log, report

from builder import engine, matrix
from builder.matrix.platform import Platform
from builder.run import taggers

pytestmark = pytest.mark.engine


def _raw(ref: str) -> dict:
    r = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"], capture_output=True, check=True)
    return json.loads(r.stdout)


@pytest.fixture
def namespace(registry):
    """A registry namespace of this test's own (its local tags go at the end of the session)."""
    return f"{registry}/split-{uuid.uuid4().hex[:8]}"


#: A child built for linux/amd64 only: in its tree's amd64 job it is published whole, with its latest.
AMD64_ONLY = "sklearn-1.8-debian12-py311-cpu-inference"


def _images(path) -> dict[str, dict]:
    return {e["name"]: e for e in json.loads(path.read_text())["images"]}


def _uploads(log: Path, offset: int, namespace: str) -> list[str]:
    """The registry log's requests after byte ``offset`` that write (PUT, POST, PATCH, DELETE) into
    ``namespace`` (docker-registry logs ``http.request.method=… http.request.uri=…`` per request)."""
    with log.open("rb") as f:
        f.seek(offset)
        lines = f.read().decode(errors="replace").splitlines()
    path = "/v2/" + namespace.split("/", 1)[1] + "/"
    return [line for line in lines if path in line and
            any(f"http.request.method={m}" in line for m in ("PUT", "POST", "PATCH", "DELETE"))]


def _split_release(namespace: str, build: Path, env: dict) -> dict[str, dict]:
    """One release: the amd64 and the arm64 job of MINIMAL, each in its own build folder under
    ``build``, then `builder merge`; returns ``{"linux/amd64": entry, "linux/arm64": entry,
    "merged": entry}``."""
    out = {}
    for platform in ("linux/amd64", "linux/arm64"):
        arch = Platform.parse(platform).arch
        r = builder("all", "--by-platform", "--platform", platform, "--select", MINIMAL, "--registry", namespace,
                    "--build-dir", str(build / arch), env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        out[platform] = report(build / arch)[MINIMAL]
    r = builder("merge", "--report", str(build / "amd64" / "report.json"), "--report", str(build / "arm64" / "report.json"),
                "--out", str(build / "merged.json"), "--registry", namespace, "--build-dir", str(build / "merge"), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    out["merged"] = _images(build / "merged.json")[MINIMAL]
    return out


def _signed_first_release(namespace: str, build: Path, signing_keys) -> tuple[dict, dict[str, dict]]:
    """``(the environment of a release signed with the session's key, its first release: what
    :func:`_split_release` returns)``, the merge published and signed."""
    env = {"BUILDER_SIGNING_KEY": str(signing_keys["key"]), "COSIGN_PASSWORD": signing_keys["password"]}
    first = _split_release(namespace, build, env)
    assert first["merged"]["status"] == "published" and first["merged"]["signature"] == "signed", first["merged"]
    return env, first


def _verified(ref: str, signing_keys, build: Path) -> None:
    """`builder verify` passes on ``ref`` (an index of both platforms): every check, for each build."""
    r = builder("verify", ref, "--key", str(signing_keys["pub"]), "--build-dir", str(build))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("linux/amd64") >= 4 and r.stdout.count("linux/arm64") >= 4, r.stdout  # every check, per build


def _listed(ref: str) -> dict[str, str]:
    """``{platform: manifest digest}`` of the image index the registry serves for ``ref``."""
    return {f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"] for m in _raw(ref)["manifests"]}


def test_a_split_release_with_nothing_changed_builds_tests_and_uploads_nothing(namespace, tmp_path, docker_client,
                                                                              signing_keys):
    env, first = _signed_first_release(namespace, tmp_path / "round1", signing_keys)
    for image in docker_client.images.list(name=f"{namespace}/{MINIMAL}"):  # a fresh runner: no local copy
        for ref in (t for t in image.tags if t.startswith(f"{namespace}/")):
            docker_client.images.remove(ref)  # the tag (the same image may have other tests' tags)
    log = registry_log()
    offset = log.stat().st_size
    again = _split_release(namespace, tmp_path / "round2", env)
    for platform in ("linux/amd64", "linux/arm64"):
        entry, was = again[platform], first[platform]
        b, b_was = builds(entry)[platform], builds(was)[platform]
        assert entry["status"] == "up-to-date", entry
        assert b["build_log"] is None  # not built
        assert "signed test-result attestation" in b["test"]["log"]  # no smoke test ran: its record is read
        assert b["test"]["outcome"] == b_was["test"]["outcome"]
        assert (b["digest"], b["tag"], b["framework_version"], b["python_version"]) == \
            (b_was["digest"], b_was["tag"], b_was["framework_version"], b_was["python_version"])
        assert b["sbom"]["digest"] == b_was["sbom"]["digest"] and b["sbom"]["components"] == b_was["sbom"]["components"]
    assert again["merged"]["status"] == "unchanged", again["merged"]
    assert (again["merged"]["digest"], again["merged"]["tags"]) == (first["merged"]["digest"], first["merged"]["tags"])
    assert _uploads(log, offset, namespace) == []
    assert not docker_client.images.list(name=f"{namespace}/{MINIMAL}")  # nothing was pulled either
    _verified(f"{namespace}/{MINIMAL}:latest", signing_keys, tmp_path / "verify")


@contextlib.contextmanager
def _base_changed(client, ref: str, platform: str, keep: str):
    """Inside the block the local base image ``ref`` (of ``platform``) is another image: the same
    layers and one label more (``split-test.changed``), so a new image id. The original is kept
    under the tag ``keep`` meanwhile (the store would let go of an image no tag names) and is
    ``ref`` again afterwards, whatever happened; yields the new image's id."""
    original = client.images.get(ref)
    original.tag(*keep.rsplit(":", 1))
    changed = None
    try:
        dockerfile = f"FROM {ref}\nLABEL split-test.changed={uuid.uuid4().hex}\n"
        changed, _ = client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=ref, platform=platform, pull=False, rm=True)
        assert changed.id != original.id and changed.attrs["RootFS"] == original.attrs["RootFS"]
        yield changed.id
    finally:
        client.images.get(keep).tag(*ref.rsplit(":", 1))
        client.images.remove(keep)
        if changed is not None:
            with contextlib.suppress(docker.errors.ImageNotFound):
                client.images.remove(changed.id)
    assert client.images.get(ref).id == original.id


def test_a_split_release_with_the_arm64_input_changed_rebuilds_arm64_only_and_merges_a_new_index(
        namespace, tmp_path, docker_client, signing_keys):
    """Round two changes what only the arm64 build id covers (builder.run.build_id): the local arm64
    base image of the minimal image, under the same reference and lock. Everything else of the
    build context is shared by the platforms (each platform's lock, the base locks included, is in
    both builds' context), so changing a lock changes both ids; the base image ids, though, are the
    build's platform's and the build platform's (linux/amd64), and the amd64 job's two bases are both
    the amd64 one. `builder all` takes a base of the right platform found locally under its
    reference as it is (builder.engine.bases.ensure: no bootstrap, no check against the lock), as it
    takes a re-pulled one: this is the arm64 base made again with another image id, e.g. upstream
    republishing only its arm64 image. The amd64 job is then up to date and uploads nothing; the
    arm64 job builds, tests, pushes and signs a new manifest; the merge makes, signs and tags
    `latest` a new index of both, and the old index keeps its own immutable tag."""
    env, first = _signed_first_release(namespace, tmp_path / "round1", signing_keys)
    arm64, amd64 = builds(first["linux/arm64"])["linux/arm64"], builds(first["linux/amd64"])["linux/amd64"]
    assert arm64["base"] != amd64["base"], (arm64["base"], amd64["base"])  # amd64's job never reads arm64's base
    log = registry_log()
    with _base_changed(docker_client, arm64["base"], "linux/arm64", f"{namespace}/kept-base:arm64") as changed:
        offset = log.stat().st_size
        again = _split_release(namespace, tmp_path / "round2", env)
    up, new = builds(again["linux/amd64"])["linux/amd64"], builds(again["linux/arm64"])["linux/arm64"]
    assert again["linux/amd64"]["status"] == "up-to-date", again["linux/amd64"]
    assert up["build_log"] is None and "signed test-result attestation" in up["test"]["log"]  # neither built nor tested
    assert (up["digest"], up["tag"], up["build_id"]) == (amd64["digest"], amd64["tag"], amd64["build_id"])
    assert again["linux/arm64"]["status"] == "published", again["linux/arm64"]
    assert new["build_log"] and new["base"] == arm64["base"] and new["base_digest"] == changed != arm64["base_digest"]
    assert "passed" in new["test"]["outcome"] and "attestation" not in new["test"]["log"]  # its smoke test ran
    assert new["build_id"] != arm64["build_id"] and new["digest"] != arm64["digest"] and new["tag"] != arm64["tag"]
    assert set(new["attestations"]) == set(arm64["attestations"]) and new["attestations"], new
    assert raw_digest(f"{namespace}/{MINIMAL}:latest-arm64") == new["digest"]
    assert raw_digest(f"{namespace}/{MINIMAL}:latest-amd64") == amd64["digest"]

    merged, was = again["merged"], first["merged"]
    assert merged["status"] == "published" and merged["signature"] == "signed" and merged["publish"] == "index", merged
    assert merged["digest"] != was["digest"] and merged["tags"][0] != was["tags"][0] and merged["tags"][1:] == ["latest"]
    for t in merged["tags"]:
        assert raw_digest(f"{namespace}/{MINIMAL}:{t}") == merged["digest"]
        assert _listed(f"{namespace}/{MINIMAL}:{t}") == {"linux/amd64": amd64["digest"], "linux/arm64": new["digest"]}
    assert raw_digest(f"{namespace}/{MINIMAL}:{was['tags'][0]}") == was["digest"]  # the old index stays, by its tag

    uploads = _uploads(log, offset, namespace)
    written = {m.group(1) for m in (re.search(r"/manifests/([^ \"?]+)", line) for line in uploads) if m}
    assert not written & {amd64["tag"], "latest-amd64", amd64["digest"]}, written  # the amd64 manifest is not rewritten
    assert not [line for line in uploads if amd64["digest"].split(":")[1] in line]  # nor signed or attested again
    assert {new["tag"], "latest-arm64", *merged["tags"]} <= written, written
    for signed in (new["digest"], merged["digest"]):  # cosign's tags (or referrers' fallback tag) sha256-<hex>…
        assert any(t.startswith("sha256-" + signed.split(":")[1]) for t in written), (signed, written)
    _verified(f"{namespace}/{MINIMAL}:latest", signing_keys, tmp_path / "verify")


def test_split_jobs_publish_per_platform_tags_and_merge_moves_latest_only_when_both_passed(namespace, tmp_path, docker_client):
    jobs = {}
    for platform, select in (("linux/amd64", [MINIMAL, AMD64_ONLY]), ("linux/arm64", [MINIMAL])):
        arch = Platform.parse(platform).arch
        r = builder("all", "--by-platform", "--platform", platform, *(a for n in select for a in ("--select", n)),
                    "--registry", namespace, "--build-dir", str(tmp_path / arch))
        assert r.returncode == 0, r.stdout + r.stderr
        entry = jobs[platform] = report(tmp_path / arch)[MINIMAL]
        facts = builds(entry)[platform]
        assert entry["publish"] == "per-platform" and set(builds(entry)) == {platform}, entry
        assert entry["tags"] == [facts["tag"], f"latest-{arch}"] and facts["tag"].endswith(f"-{arch}")
        assert "passed" in facts["test"]["outcome"] and facts["sbom"]["digest"] and entry["digest"] is None
        for t in entry["tags"]:  # the build itself under its own tags, no index
            assert raw_digest(f"{namespace}/{MINIMAL}:{t}") == facts["digest"]
        if platform == "linux/amd64":
            whole = report(tmp_path / arch)[AMD64_ONLY]
            assert whole["publish"] == "manifest" and whole["status"] == "published" and whole["tags"][1:] == ["latest"], whole
            assert raw_digest(f"{namespace}/{AMD64_ONLY}:latest") == whole["digest"] == whole["platforms"][0]["digest"]
            assert raw_digest(f"{namespace}/{MINIMAL}:latest") is None
            # one platform's report: nothing to merge, latest stays where it was (absent)
            half = builder("merge", "--report", str(tmp_path / "amd64" / "report.json"), "--out", str(tmp_path / "half.json"),
                           "--registry", namespace)
            assert half.returncode == 1, half.stdout + half.stderr
            half_entry = _images(tmp_path / "half.json")[MINIMAL]
            assert half_entry["status"] == "publish-failed" and "linux/arm64" in half_entry["error"], half_entry
            assert raw_digest(f"{namespace}/{MINIMAL}:latest") is None

    r = builder("merge", "--report", str(tmp_path / "amd64" / "report.json"), "--report", str(tmp_path / "arm64" / "report.json"),
                "--out", str(tmp_path / "merged.json"), "--registry", namespace)
    assert r.returncode == 0, r.stdout + r.stderr
    merged_images = _images(tmp_path / "merged.json")
    assert merged_images[AMD64_ONLY] == report(tmp_path / "amd64")[AMD64_ONLY]  # passed through as its job left it
    merged = merged_images[MINIMAL]
    assert merged["status"] == "published" and merged["tags"][1:] == ["latest"]
    first = builds(jobs["linux/amd64"])["linux/amd64"]
    policy = matrix.load(ROOT / "matrix.yaml").data.tags
    assert merged["tags"][0] == taggers.index_tag(policy, first["framework_version"], first["python_version"],
                                              [builds(jobs[p])[p]["image_id"] for p in ("linux/amd64", "linux/arm64")])
    for t in merged["tags"]:
        assert _listed(f"{namespace}/{MINIMAL}:{t}") == {p: builds(jobs[p])[p]["digest"] for p in jobs}
        assert raw_digest(f"{namespace}/{MINIMAL}:{t}") == merged["digest"] and merged["publish"] == "index"
    for p, entry in jobs.items():  # each manifest is the very build its job tested
        manifest = _raw(f"{namespace}/{MINIMAL}@{builds(entry)[p]['digest']}")
        assert names_image(builds(entry)[p]["digest"], manifest, builds(entry)[p]["image_id"],
                           engine.containerd_store(docker_client))
