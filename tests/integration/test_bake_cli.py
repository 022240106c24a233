"""The committed docker-bake.json is read by buildx itself, as a user with only Docker runs it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import docker
import pytest
from repo import ROOT
from run_builder import MINIMAL

from builder import engine, matrix
from builder.engine import bases, plugins
from builder.engine.registry import Registry, make_index
from builder.engine.sources import Sources, wheelhouse_image
from builder.generate import bake, base_resolver
from builder.matrix.platform import Platform

pytestmark = pytest.mark.engine

SUBSET = "sklearn-1.9-debian12-py311-cpu-inference"
PLATFORMS = ("linux/amd64", "linux/arm64")



def test_buildx_reads_the_committed_bake_file_and_its_variables(docker_client):
    plugins.ensure_buildx(ROOT / "build")
    env = {**os.environ, "REGISTRY": "registry.invalid:5000/team", "TAG": "2026-11"}
    r = subprocess.run(["docker", "buildx", "bake", "-f", "docker-bake.json", "--print", "sklearn"], cwd=ROOT,
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    printed = json.loads(r.stdout)["target"]
    sklearn = [s for s in matrix.load(ROOT / "matrix.yaml").images() if s.framework == "sklearn"]
    assert {bake.target_name(s.name) for s in sklearn} <= set(printed)
    for s in sklearn:
        t = printed[bake.target_name(s.name)]
        assert t["tags"] == [f"registry.invalid:5000/team/{s.name}:2026-11"]
        assert t["contexts"] == {"parent": f"target:{bake.target_name(s.parent)}"}
        assert (ROOT / t["context"] / "Dockerfile").is_file()


def _multi_platform_base(client, namespace: str, tmp_path: Path) -> str:
    # The debian12 base of both platforms as one image index in the local registry, made of the
    # very manifests the builder's own builds start FROM (so BuildKit's cache applies): bake
    # resolves a root target's BASE_IMAGE for each platform it builds.
    m = matrix.load(ROOT / "matrix.yaml")
    digests = []
    for platform in PLATFORMS:
        ref = bases.ensure(client, "debian12", m.data.bases["debian12"], "auto", tmp_path / "bases",
                           platform=Platform.parse(platform), pins=base_resolver.pins_of(ROOT, "auto")("debian12", Platform.parse(platform))).ref
        arch = Platform.parse(platform).arch
        client.images.get(ref).tag(f"{namespace}/base", arch)
        for chunk in client.api.push(f"{namespace}/base", tag=arch, stream=True, decode=True):
            assert "error" not in chunk, chunk
        digests.append(Registry(namespace.split("/", 1)[0]).digest(f"{namespace}/base", arch))
    make_index(f"{namespace}/base", "both", digests)
    return f"{namespace}/base:both"


def test_one_bake_call_builds_the_minimal_and_sklearn_images_parent_first(docker_client, registry, tmp_path):
    plugins.ensure_buildx(ROOT / "build")
    engine.ensure_emulation(Platform.parse("linux/arm64"))
    namespace = f"{registry}/bake-test"
    parent, child = (bake.target_name(n) for n in (MINIMAL, SUBSET))
    sources = Sources.from_env()
    with sources.secrets() as secrets:
        override = tmp_path / "override.json"
        override.write_text(json.dumps({"target": {
            parent: {"args": {"BASE_IMAGE": _multi_platform_base(docker_client, namespace, tmp_path),
                              "WHEELHOUSE_IMAGE": wheelhouse_image(docker_client, sources.wheelhouse)},
                     "secret": secrets},
            child: {"args": {"WHEELHOUSE_IMAGE": wheelhouse_image(docker_client, sources.wheelhouse)},
                    "secret": secrets}}}))
        # buildx >= 0.29 reads a secret's file outside the working folder only when granted (0.13 has no --allow)
        grants = [f"--allow=fs.read={s.partition(',src=')[2]}" for s in secrets] if plugins.bake_takes_allow() else []
        r = subprocess.run(["docker", "buildx", "bake", "-f", "docker-bake.json", "-f", str(override), "--progress=plain",
                            *grants, "--metadata-file", str(tmp_path / "metadata.json"), child], cwd=ROOT, capture_output=True,
                           text=True, env={**os.environ, **plugins.BUILDX_ENV, "REGISTRY": namespace, "TAG": "one-call"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    built = json.loads((tmp_path / "metadata.json").read_text())
    assert {parent, child} <= set(built), built  # asked for the child, bake built its parent first
    for platform in PLATFORMS:  # the child runs on each platform, on top of its parent
        out = docker_client.containers.run(f"{namespace}/{SUBSET}:one-call", platform=platform, remove=True,
                                           entrypoint=["python3", "-c", "import platform, sklearn, azureml_inference_server_http;"
                                                       " print(platform.machine(), sklearn.__version__)"])
        assert out.decode().split() == [Platform.parse(platform).machine, "1.9.1"], out
    docker_client.api.remove_image(f"{namespace}/{SUBSET}:one-call")
    try:  # buildx 0.13 also stores the parent, built as the child's context; 0.29.1 does not (measured)
        docker_client.api.remove_image(f"{namespace}/{MINIMAL}:one-call")
    except docker.errors.ImageNotFound:
        pass
