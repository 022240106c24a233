"""Debian package locks (builder.generate.apt_lock, apt_resolver): the file's grammar, reading it
back as hostile input, the offline check against the matrix, apt's output parsed, and the build
log's sign of a version the mirror no longer serves."""

from __future__ import annotations

import os

import pytest
from repo import ROOT

from builder.matrix.platform import PLATFORMS
from builder.engine import debian_index
from builder.generate import apt_lock, apt_resolver
from builder.matrix import load
from builder.matrix.inputs import ConfigError
from builder.run.steps import build as build_step

AMD64, ARM64 = PLATFORMS["linux/amd64"], PLATFORMS["linux/arm64"]

MINIMAL = "minimal-debian12-py311-cpu-inference"
PACKAGES = ("python3", "python3-venv", "ca-certificates", "tini")
VERSIONS = {"python3": "3.11.2-1+b1", "python3-venv": "3.11.2-1+b1", "ca-certificates": "20230311+deb12u1",
            "tini": "0.19.0-1", "libc6": "2.36-9+deb12u10", "libpython3.11-stdlib": "3.11.2-6+deb12u6",
            "libgcc-s1": "12.2.0-14+deb12u1", "libssl3": "3.0.17-1~deb12u2", "zlib1g": "1:1.2.13.dfsg-1"}
SUITES = {**{n: "bookworm" for n in VERSIONS}, "libssl3": "bookworm-security"}


def test_a_lock_reads_back_as_written_sorted():
    text = apt_lock.text(MINIMAL, ARM64, PACKAGES, VERSIONS, SUITES)
    got = apt_lock.parse(text, "apt.arm64.lock")
    assert (got.image, got.platform, got.packages, got.versions) == (MINIMAL, ARM64, PACKAGES, VERSIONS)
    assert got.suites == SUITES
    body = [line for line in text.splitlines() if not line.startswith("#")]
    names = [line.split("=")[0] for line in body]
    assert names == sorted(names) and "zlib1g=1:1.2.13.dfsg-1 bookworm" in body
    assert "libssl3=3.0.17-1~deb12u2 bookworm-security" in body


@pytest.mark.parametrize("line, expected", [
    ("-o=1 bookworm", "a Debian package name"),
    ("--allow-downgrades=1.0 bookworm", "a Debian package name"),
    ("Python3=3.11 bookworm", "a Debian package name"),
    ("tini", "is not <package>=<version> <suite>"),
    ("tini=0.19.0-1", "is not <package>=<version> <suite>"),
    ("tini=0.19;rm bookworm", "a Debian version"),
    ("tini=0.19 ; rm -rf /", "a lower-case name"),
    ("tini=$(id) bookworm", "a Debian version"),
    ("tini=v0.19 bookworm", "a Debian version"),
    ("tini=0.19.0-1 bookworm --force-yes", "a lower-case name"),
    ("tini=0.19.0-1\ttrailing", "control character"),
])
def test_a_line_outside_debians_grammars_is_refused_with_its_line_number(line, expected):
    text = apt_lock.text(MINIMAL, AMD64, PACKAGES, VERSIONS, SUITES) + line + "\n"
    with pytest.raises(ConfigError) as exc:
        apt_lock.parse(text, "apt.amd64.lock")
    number = len(text.splitlines())
    assert exc.value.lines[0].startswith(f"apt.amd64.lock:{number}: ") and expected in exc.value.lines[0]


def test_a_package_locked_twice_or_a_header_missing_is_refused():
    text = apt_lock.text(MINIMAL, AMD64, PACKAGES, VERSIONS, SUITES)
    with pytest.raises(ConfigError, match="tini is locked twice"):
        apt_lock.parse(text + "tini=0.19.0-2 bookworm\n", "f")
    with pytest.raises(ConfigError, match="no '# platform: ...' line"):
        apt_lock.parse(text.replace("# platform: linux/amd64\n", ""), "f")



@pytest.mark.parametrize("header, value, expected", [
    ("platform", "linux/s390x", "# platform: 'linux/s390x' is not a platform"),
    ("platform", "--platform=linux/amd64", "is not a platform"),
    ("image", "Minimal;rm", "# image: 'Minimal;rm' is not an image name"),
])
def test_a_header_outside_its_grammar_is_refused_in_one_line(header, value, expected):
    # The image and platform a lock names are read back like its entries: through their grammars.
    old = {"platform": "linux/amd64", "image": MINIMAL}[header]
    text = apt_lock.text(MINIMAL, AMD64, PACKAGES, VERSIONS, SUITES).replace(f"# {header}: {old}\n", f"# {header}: {value}\n")
    with pytest.raises(ConfigError) as exc:
        apt_lock.parse(text, "apt.amd64.lock")
    assert len(exc.value.lines) == 1 and exc.value.lines[0].startswith("apt.amd64.lock: ") and expected in exc.value.lines[0]

def test_reading_refuses_a_symlink_another_platforms_lock_and_a_huge_file(tmp_path):
    folder = tmp_path / MINIMAL
    folder.mkdir()
    (tmp_path / "elsewhere").write_text(apt_lock.text(MINIMAL, AMD64, PACKAGES, VERSIONS, SUITES))
    (folder / "apt.amd64.lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="is a symbolic link, not a lock `builder lock` wrote; remove it and run `builder lock"):
        apt_lock.read(tmp_path, MINIMAL, AMD64)
    (folder / "apt.arm64.lock").write_text(apt_lock.text(MINIMAL, AMD64, PACKAGES, VERSIONS, SUITES))
    with pytest.raises(ConfigError, match="made for .* linux/amd64, not .* linux/arm64"):
        apt_lock.read(tmp_path, MINIMAL, ARM64)
    (folder / "apt.arm64.lock").write_bytes(b"#" * (apt_lock.MAX_BYTES + 1))
    with pytest.raises(ConfigError, match="larger than"):
        apt_lock.read(tmp_path, MINIMAL, ARM64)


def test_the_committed_locks_cover_every_root_image_and_platform():
    m = load(ROOT / "matrix.yaml")
    assert apt_lock.check(m, ROOT / "images") == []
    roots = apt_lock.read_every(ROOT / "images", m.images())
    assert {(n, p) for n, by in roots.items() for p in by} == {
        (s.name, p) for s in m.images() if s.parent is None for p in s.platforms}
    for by in roots.values():
        for got in by.values():
            assert set(m.data.runtime.apt) < set(got.versions)  # their dependencies too


def test_a_lock_made_for_another_apt_list_or_missing_a_package_is_stale(tmp_path):
    m = load(ROOT / "matrix.yaml")
    for s in (s for s in m.images() if s.parent is None):
        for p in s.platforms:
            path = apt_lock.path_of(tmp_path, s.name, p)
            path.parent.mkdir(exist_ok=True)
            path.write_text(apt_lock.text(s.name, p, PACKAGES, VERSIONS, SUITES))
    assert apt_lock.check(m, tmp_path) == []
    path = apt_lock.path_of(tmp_path, MINIMAL, AMD64)
    path.write_text(apt_lock.text(MINIMAL, AMD64, PACKAGES[:3], {k: v for k, v in VERSIONS.items() if k != "tini"},
                                  SUITES))
    problems = apt_lock.check(m, tmp_path)
    assert len(problems) == 2 and all(str(path) in p for p in problems)
    assert "runtime.apt is python3,python3-venv,ca-certificates,tini" in problems[0]
    assert "tini (runtime.apt) is not locked" in problems[1]


def test_apts_simulation_and_dpkgs_installed_packages_make_the_versions():
    output = ("Inst libc6 [2.36-9+deb12u9] (2.36-9+deb12u10 Debian:12.12/stable [arm64])\n"
              "Inst tini (0.19.0-1 Debian:12.12/stable [arm64])\n"
              "Conf tini (0.19.0-1 Debian:12.12/stable [arm64])\n"
              "ii  ca-certificates=20230311+deb12u1\n"
              "un  python3=\n"
              "ii  python3=3.11.2-1+b1\nii  python3-venv=3.11.2-1+b1\n"
              "ii  libzstd1=1.5.4+dfsg2-5\n")
    got = apt_resolver.versions(output, PACKAGES, "apt")
    assert got == {"libc6": "2.36-9+deb12u10", "tini": "0.19.0-1", "ca-certificates": "20230311+deb12u1",
                   "python3": "3.11.2-1+b1", "python3-venv": "3.11.2-1+b1"}
    with pytest.raises(ConfigError, match="a Debian version"):
        apt_resolver.versions("Inst tini ($(reboot) Debian:12)\n", PACKAGES, "apt")


def test_a_requested_package_apt_upgrades_is_locked_at_the_new_version_and_one_apt_skips_is_refused():
    output = ("Inst ca-certificates [20230311] (20230311+deb12u1 Debian:12.12/stable [all])\n"
              "ii  ca-certificates=20230311\nii  python3=3.11.2-1+b1\nii  python3-venv=3.11.2-1+b1\n"
              "Inst tini (0.19.0-1 Debian:12.12/stable [amd64])\n")
    got = apt_resolver.versions(output, PACKAGES, "apt")
    assert got["ca-certificates"] == "20230311+deb12u1" and got["python3"] == "3.11.2-1+b1"
    with pytest.raises(ConfigError, match="apt would not install tini"):
        apt_resolver.versions(output.replace("Inst tini", "Conf tini"), PACKAGES, "apt")


def test_a_line_break_other_than_newline_or_a_control_character_is_refused():
    text = apt_lock.text(MINIMAL, AMD64, PACKAGES, VERSIONS, SUITES)
    for bad in (text.replace("tini=0.19.0-1 bookworm\n", "tini=0.19.0-1 bookworm\r\n"), text + "\x0b# -o=APT::x=1\n",
                text.replace("# image:", "# \x1b[2J image:")):
        with pytest.raises(ConfigError, match="control character"):
            apt_lock.parse(bad, "apt.amd64.lock")


def test_writing_refuses_a_file_it_did_not_write_a_symlink_and_a_fifo(tmp_path):
    new = apt_lock.parse(apt_lock.text(MINIMAL, AMD64, PACKAGES, VERSIONS, SUITES), "new")
    path = apt_lock.path_of(tmp_path, MINIMAL, AMD64)
    path.parent.mkdir()
    path.write_text("tini=0.19.0-1\n")  # a user's file
    with pytest.raises(ConfigError, match="was not written by `builder lock`"):
        apt_resolver.write(tmp_path, new)
    assert path.read_text() == "tini=0.19.0-1\n"
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(ConfigError, match="not a regular file"):
        apt_resolver.write(tmp_path, new)
    path.unlink()
    path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="not a regular file"):
        apt_resolver.write(tmp_path, new)
    path.unlink()
    assert apt_resolver.write(tmp_path, new) == path and apt_lock.read(tmp_path, MINIMAL, AMD64) == new
    apt_resolver.write(tmp_path, new)  # its own file is replaced


def test_apts_error_for_a_version_the_mirror_no_longer_serves_is_recognised():
    log = "#12 3.1 Reading package lists...\n#12 3.4 E: Version '0.19.0-0' for 'tini' was not found\n"
    assert debian_index.missing_version(log) == ("tini", "0.19.0-0")
    assert debian_index.missing_version("E: Unable to locate package tinny\n") is None
    assert debian_index.missing_version("E: Version 'x$(id)' for 'tini' was not found") is None  # not a version


def test_a_build_log_naming_an_unserved_version_gives_the_one_line_to_relock(tmp_path):
    spec = load(ROOT / "matrix.yaml").image(MINIMAL)
    log = tmp_path / "build.log"
    log.write_text("x" * 200_000 + "\n#9 2.0 E: Version '0.19.0-0' for 'tini' was not found\nERROR: exit code: 100\n")
    assert build_step._unserved(spec, log) == (
        f"tini=0.19.0-0 (locked for {MINIMAL}) is no longer served by the mirror; "
        f"run `builder refresh --select {MINIMAL}`, then `builder render`")
    log.write_text("#9 2.0 E: Unable to locate package tinny\n")
    assert build_step._unserved(spec, log) is None
    assert build_step._unserved(spec, tmp_path / "no-such.log") is None


def test_a_runtime_without_apt_packages_is_refused_by_the_matrix(tmp_path):
    text = (ROOT / "matrix.yaml").read_text()
    assert "  apt: [python3, python3-venv, ca-certificates, tini]\n" in text
    (tmp_path / "matrix.yaml").write_text(text.replace("  apt: [python3, python3-venv, ca-certificates, tini]\n", "  apt: []\n"))
    with pytest.raises(ConfigError, match="runtime.apt"):
        load(tmp_path / "matrix.yaml")
