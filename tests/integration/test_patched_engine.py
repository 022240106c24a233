"""Security-current images against the real mirror and Engine: the published minimal image holds
exactly its locks (base and apt step) and the security suite; `builder outdated` finds an older
version planted in a copied lock (exit 1) and `builder refresh --security-only` moves it; a locked
version the mirror no longer serves fails the bootstrap, and the build, with one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from repo import ROOT
from run_builder import MINIMAL, builder, builds, report

from builder.matrix.platform import DEFAULT
from builder.engine import bases, debian_index
from builder.generate import apt_lock, base_lock, base_resolver
from builder.matrix import load

pytestmark = pytest.mark.engine


def _dpkg(client, ref: str) -> dict[str, str]:
    out = client.containers.run(ref, ["dpkg-query", "-W", "-f", "${db:Status-Abbrev} ${Package}=${Version}\\n"],
                                entrypoint=[], user="0", remove=True, network_disabled=True).decode()
    return debian_index.pins([line[3:].strip() for line in out.splitlines() if line.startswith("ii ")], ref)


def test_the_published_image_holds_exactly_its_locks_from_the_security_suite(docker_client, main_job):
    # The main job's minimal image (built from main): dpkg inside it has the base lock's and the apt
    # lock's versions, nothing more; the base lock was current when written (no security update
    # pending at its date) and takes packages from the security suite; the image's apt sources name
    # the three suites and its labels say the lock's date.
    result, build_dir = main_job
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    tag = builds(report(build_dir)[MINIMAL])["linux/amd64"]["tag"]
    ref = f"{report(build_dir)[MINIMAL]['repository']}:{tag}"
    base = base_lock.read(ROOT, "debian12", DEFAULT)
    apt = apt_lock.read(ROOT / "images", MINIMAL, DEFAULT)
    assert _dpkg(docker_client, ref) == {**base.versions, **apt.versions}
    assert base.security_pending == 0 and "bookworm-security" in base.package_suites.values()
    sources = docker_client.containers.run(ref, ["cat", "/etc/apt/sources.list.d/debian.sources"], entrypoint=[],
                                           remove=True, network_disabled=True).decode()
    assert [line.split()[1] for line in sources.splitlines() if line.startswith("Suites:")] == list(base.suites)
    labels = docker_client.images.get(ref).labels
    assert labels["io.github.inference-images.debian-index-date"] == base.date_iso
    assert labels["io.github.inference-images.debian-security-pending"] == "0"


def _copy(tmp_path: Path) -> Path:
    # What outdated and refresh read and write: the matrix, its table, the locks.
    for name in ("matrix.yaml", "compat.yaml", "docker-bake.json"):
        shutil.copy(ROOT / name, tmp_path / name)
    for name in ("images", "bases", "templates"):
        shutil.copytree(ROOT / name, tmp_path / name)
    return tmp_path / "matrix.yaml"


def _plant_older(matrix: Path, index: debian_index.Index) -> tuple[str, str]:
    # The base lock of debian12 amd64 with one package the security suite serves at a version older
    # than that (whatever Debian's point releases did since), written with a valid digest as
    # `builder lock` would; returns (package, planted version).
    lock = base_lock.read(matrix.parent, "debian12", DEFAULT)
    name = next(n for n in sorted(lock.versions) if n in index.versions["bookworm-security"])
    old = "0~planted-1"
    versions, suites = {**lock.versions, name: old}, {**lock.package_suites, name: "bookworm"}
    path = base_lock.path_of(matrix.parent, "debian12", DEFAULT)
    path.write_text(base_lock.text("debian12", DEFAULT, lock.suites, lock.date, lock.security_pending, versions, suites))
    return name, old


def test_outdated_reports_a_planted_older_version_and_refresh_moves_it(docker_client, tmp_path):
    matrix = _copy(tmp_path)
    build = tmp_path / "build"
    index = debian_index.fetch(debian_index.Archive.of("bookworm"), "amd64", build / "index")
    planted, old = _plant_older(matrix, index)
    args = ["--select", "minimal-debian12*", "--matrix", str(matrix), "--build-dir", str(build)]
    r = builder("outdated", *args, "--no-python", "--json")
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    found = {(row["platform"], u["package"]): u for row in json.loads(r.stdout)["images"] for u in row["updates"]}
    assert found["linux/amd64", planted] == {"ecosystem": "debian", "package": planted, "locked": old,
                                             "newest": index.newest(planted)[0], "source": "security"}
    assert ("linux/arm64", planted) not in found or found["linux/arm64", planted]["locked"] != old

    r = builder("refresh", *args, "--security-only")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    moved = base_lock.read(matrix.parent, "debian12", DEFAULT)
    assert moved.versions[planted] == index.versions["bookworm-security"][planted]
    summary = (build / "refresh.md").read_text()
    assert f"| {planted} | debian | {old} | {moved.versions[planted]} | security |" in summary
    assert f"{planted} {old} -> {moved.versions[planted]} (security)" in r.stdout
    r = builder("outdated", *args, "--no-python", "--json")
    after = json.loads(r.stdout)
    assert not any(u["package"] == planted for row in after["images"] for u in row["updates"])
    # exit 0, unless Debian published a security update after the refresh's indexes were read
    assert r.returncode == 0 or debian_index.fetch(debian_index.Archive.of("bookworm"), "amd64",
                                                   build / "index").date > moved.date, r.stdout[-2000:]


def test_a_locked_base_version_the_mirror_no_longer_serves_fails_in_one_line(docker_client, tmp_path):
    m = load(ROOT / "matrix.yaml")
    lock = base_lock.read(ROOT, "debian12", DEFAULT)
    pins = base_resolver.pins(lock)
    unserved = bases.Pins({**pins.versions, "zlib1g": "1:0.0.1-0"}, pins.date)
    with pytest.raises(bases.BaseError) as exc:
        bases.bootstrap(docker_client, "unserved-test", m.data.bases["debian12"], tmp_path, print, DEFAULT, unserved)
    assert str(exc.value) == ("zlib1g=1:0.0.1-0 (base unserved-test, linux/amd64) is no longer served by the mirror; "
                              "run `builder refresh`")
