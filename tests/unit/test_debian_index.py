"""Debian's indexes as hostile input, the base lock's grammar, the mirrors, and what `builder
outdated` reports, on indexes and locks made here (the fetch itself is in the engine tests)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from builder.matrix.platform import PLATFORMS
from builder.engine import debian_index, sources
from builder.generate import apt_lock, base_lock, outdated
from builder.matrix.inputs import ConfigError

AMD64, ARM64 = PLATFORMS["linux/amd64"], PLATFORMS["linux/arm64"]

SUITES = ("bookworm", "bookworm-updates", "bookworm-security")
RELEASE = ("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nOrigin: Debian\nSuite: {suite}\n"
           "Date: {date}\nArchitectures: amd64 arm64\n-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n")
DATES = {"bookworm": "Sat, 08 Nov 2025 09:41:54 UTC", "bookworm-updates": "Sun, 06 Dec 2026 06:11:04 UTC",
         "bookworm-security": "Sun, 06 Dec 2026 07:33:28 UTC"}


def _stanzas(packages: dict[str, str], arch: str = "amd64") -> str:
    return "".join(f"Package: {n}\nVersion: {v}\nArchitecture: {arch}\nDescription: x\n y\n\n" for n, v in packages.items())


def _lists(root: Path, packages: dict[str, dict[str, str]], host: str = "mirror.invalid_debian") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for suite in SUITES:
        (root / f"{host}_dists_{suite}_InRelease").write_text(RELEASE.format(suite=suite, date=DATES[suite]))
        (root / f"{host}_dists_{suite}_main_binary-amd64_Packages").write_text(_stanzas(packages.get(suite, {})))
    return root


INDEX = {"bookworm": {"zlib1g": "1:1.2.13.dfsg-1", "libssl3": "3.0.17-1~deb12u2", "tzdata": "2025b-0+deb12u1"},
         "bookworm-updates": {"tzdata": "2026f-0+deb12u1"},
         "bookworm-security": {"libssl3": "3.0.22-1~deb12u2", "zlib1g": "1:1.2.13.dfsg-1+deb12u1"}}


def test_an_index_gives_each_packages_newest_version_its_suite_and_the_newest_date(tmp_path):
    index = debian_index.read(_lists(tmp_path, INDEX), SUITES, "amd64")
    assert index.newest("libssl3") == ("3.0.22-1~deb12u2", "bookworm-security")
    assert index.newest("tzdata") == ("2026f-0+deb12u1", "bookworm-updates")
    assert index.suite_of("libssl3", "3.0.17-1~deb12u2") == "bookworm" and index.suite_of("libssl3", "9") is None
    assert index.date == max(index.dates.values()) == index.dates["bookworm-security"]
    assert index.dates["bookworm"] == 1762594914
    # dpkg's order, not the strings': an epoch and ~ sort as Debian says (python-debian's Version)
    assert debian_index.newer(index, {"zlib1g": "1:1.2.13.dfsg-1", "libssl3": "3.0.22-1~deb12u2"}) == \
        {"zlib1g": ("1:1.2.13.dfsg-1", "1:1.2.13.dfsg-1+deb12u1", "bookworm-security")}
    assert [debian_index.kind(s) for s in SUITES] == ["point release", "updates", "security"]


def test_packages_of_another_architecture_are_not_counted(tmp_path):
    root = _lists(tmp_path, INDEX)
    f = next(root.glob("*bookworm-security_main_binary-amd64_Packages"))
    f.write_text(f.read_text() + _stanzas({"libssl3": "9.9.9-1"}, arch="arm64"))
    assert debian_index.read(root, SUITES, "amd64").newest("libssl3")[0] == "3.0.22-1~deb12u2"


@pytest.mark.parametrize("content, words", [
    (b"Package: libssl3\nVersion: 3.0; touch /tmp/pwned\nArchitecture: amd64\n", "is not a Debian version"),
    (b"Package: -rf\nVersion: 1.0\nArchitecture: amd64\n", "is not a Debian package name"),
    (b"Package: $(id)\nVersion: 1.0\nArchitecture: amd64\n", "is not a Debian package name"),
    (b"Version: 1.0\nArchitecture: amd64\n", "is not a string"),
    (b"\x28\xb5\x2f\xfd\x00\x00binary", "binary data"),
    (b"\x1f\x8b\x08\x08" + bytes(range(128, 250)), "not UTF-8"),
    (b"Package: a\xff\nVersion: 1\n", "not UTF-8"),
])
def test_a_hostile_index_is_one_line_that_names_the_suite_and_never_the_mirror(tmp_path, content, words):
    root = _lists(tmp_path, INDEX, host="user:secret@mirror.invalid_debian")
    next(root.glob("*bookworm-security_main_binary-amd64_Packages")).write_bytes(content)
    with pytest.raises(ConfigError) as exc:
        debian_index.read(root, SUITES, "amd64")
    assert len(exc.value.lines) == 1 and words in exc.value.lines[0]
    assert "bookworm-security" in exc.value.lines[0] and "mirror" not in exc.value.lines[0]


def test_an_oversized_index_or_release_is_refused_without_reading_it_whole(tmp_path, monkeypatch):
    root = _lists(tmp_path, INDEX)
    monkeypatch.setattr(debian_index, "MAX_INDEX", 64)
    with pytest.raises(ConfigError, match="larger than 64 bytes"):
        debian_index.read(root, SUITES, "amd64")
    monkeypatch.setattr(debian_index, "MAX_INDEX", 1 << 20)
    monkeypatch.setattr(debian_index, "MAX_STANZAS", 2)
    with pytest.raises(ConfigError, match="more than 2 stanzas"):
        debian_index.read(root, SUITES, "amd64")


@pytest.mark.parametrize("release", ["Origin: Debian\n", "Date: yesterday\n", "Date: \x00\n"])
def test_a_release_without_a_date_is_one_line(tmp_path, release):
    root = _lists(tmp_path, INDEX)
    next(root.glob("*_dists_bookworm_InRelease")).write_text(release)
    with pytest.raises(ConfigError) as exc:
        debian_index.read(root, SUITES, "amd64")
    assert len(exc.value.lines) == 1 and "bookworm InRelease" in exc.value.lines[0]


def test_a_missing_or_doubled_index_is_one_line(tmp_path):
    root = _lists(tmp_path, INDEX)
    next(root.glob("*bookworm-updates_main_binary-amd64_Packages")).unlink()
    with pytest.raises(ConfigError, match="bookworm-updates index \\(amd64\\): 0 files match"):
        debian_index.read(root, SUITES, "amd64")


def test_apt_failing_is_one_line_without_the_mirrors_url(tmp_path, monkeypatch):
    import subprocess

    archive = debian_index.Archive("bookworm", "http://user:secret@mirror.invalid/debian",
                                   "http://user:secret@mirror.invalid/debian-security")
    out = "Err:1 http://user:secret@mirror.invalid/debian-security bookworm-security InRelease\n  404\nE: failed\n"
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 100, out, ""))
    with pytest.raises(debian_index.IndexUnavailable) as exc:
        debian_index.fetch(archive, "amd64", tmp_path / "index")
    assert "secret" not in str(exc.value) and "<security mirror>" in str(exc.value) and "\n" not in str(exc.value)
    assert "secret" not in repr(archive)


def test_the_security_archive_comes_from_the_variable_the_machine_or_beside_the_mirror(tmp_path, monkeypatch):
    (tmp_path / "sources.list.d").mkdir()
    monkeypatch.delenv("BUILDER_APT_SECURITY_MIRROR", raising=False)
    assert sources.apt_security_mirror("http://m.invalid/debian/", tmp_path) == "http://m.invalid/debian-security"
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://m.invalid/debian\nSuites: bookworm bookworm-updates\n\n"
        "Types: deb\nURIs: http://s.invalid/sec\nSuites: bookworm-security\n")
    assert sources.apt_security_mirror("http://m.invalid/debian/", tmp_path) == "http://s.invalid/sec"
    monkeypatch.setenv("BUILDER_APT_SECURITY_MIRROR", "http://v.invalid/debian-security")
    assert sources.apt_security_mirror("http://m.invalid/debian/", tmp_path) == "http://v.invalid/debian-security"
    monkeypatch.setenv("BUILDER_APT_SECURITY_MIRROR", "--config=/etc/x")
    with pytest.raises(ConfigError) as exc:
        sources.apt_security_mirror("http://m.invalid/debian/", tmp_path)
    assert "--config" not in exc.value.lines[0]


@pytest.mark.parametrize("value", ["https://snap.invalid/archive/debian/20261201T000000Z",
                                   "https://snap.invalid/archive/debian/20261201T000000Z/"])
def test_a_snapshot_names_both_archives_at_one_time(monkeypatch, value):
    monkeypatch.setenv("BUILDER_APT_SNAPSHOT", value)
    assert sources.apt_snapshot() == ("https://snap.invalid/archive/debian/20261201T000000Z/",
                                      "https://snap.invalid/archive/debian-security/20261201T000000Z/")
    archive = debian_index.Archive.of("bookworm")
    assert archive.snapshot and "Check-Valid-Until: no" in archive.sources()


@pytest.mark.parametrize("value", ["https://snap.invalid/archive/debian/yesterday", "-oAPT::x=1", "https://snap.invalid/x y"])
def test_a_snapshot_of_another_form_is_one_line(monkeypatch, value):
    monkeypatch.setenv("BUILDER_APT_SNAPSHOT", value)
    with pytest.raises(ConfigError) as exc:
        sources.apt_snapshot()
    assert len(exc.value.lines) == 1 and value not in exc.value.lines[0]


def _base_lock_text(versions=None, suites=None, date=1796441608, pending=0):
    versions = versions or {"zlib1g": "1:1.2.13.dfsg-1+deb12u1", "apt": "2.6.2"}
    suites = suites or {n: "bookworm-security" for n in versions}
    return base_lock.text("debian12", AMD64, SUITES, date, pending, versions, suites)


def test_a_base_lock_reads_back_what_it_wrote():
    got = base_lock.parse(_base_lock_text(), "t")
    assert got.versions["apt"] == "2.6.2" and got.package_suites["apt"] == "bookworm-security"
    assert got.date_iso == "2026-12-05T03:33:28Z" and got.suites == SUITES and got.security_pending == 0


@pytest.mark.parametrize("edit, words", [
    (lambda t: t.replace("apt=2.6.2", "apt=2.6.1"), "do not match the header's sha256"),
    (lambda t: t + "curl=7.88.1-10 bookworm\n", "do not match the header's sha256"),
    (lambda t: t + "".join(f"p{i}=1.0 bookworm\n" for i in range(apt_lock.MAX_ENTRIES + 1)), "more than 2000 entries"),
    (lambda t: t.replace("apt=2.6.2 bookworm-security", "apt=2.6.2;id bookworm-security"), "is not a Debian version"),
    (lambda t: t.replace("apt=2.6.2 bookworm-security", "apt=2.6.2 bookworm security"), "is not a lower-case name"),
    (lambda t: t.replace("apt=2.6.2 bookworm-security", "apt=2.6.2"), "is not <package>=<version> <suite>"),
    (lambda t: t.replace("# date: 1796441608", "# date: 99999999999999"), "is not a whole number"),
    (lambda t: t.replace("# security-pending: 0", "# security-pending: -1"), "is not a whole number"),
    (lambda t: t.replace("# platform: linux/amd64\n", ""), "no '# platform: ...' line"),
    (lambda t: t.replace("apt=2.6.2", "apt=2.6.2\x1b[2J"), "control character"),
])
def test_a_base_lock_edited_by_hand_is_one_line(edit, words):
    with pytest.raises(ConfigError) as exc:
        base_lock.parse(edit(_base_lock_text()), "bases/debian12.amd64.lock")
    assert len(exc.value.lines) == 1 and words in exc.value.lines[0] and "bases/debian12.amd64.lock" in exc.value.lines[0]


def test_a_base_lock_of_a_suite_it_does_not_name_is_refused():
    text = _base_lock_text(suites={"zlib1g": "bookworm-security", "apt": "sid"})
    with pytest.raises(ConfigError, match="apt comes from sid"):
        base_lock.parse(text, "t")


def test_a_base_lock_behind_a_link_or_made_for_another_base_is_refused(tmp_path):
    (tmp_path / "bases").mkdir()
    target = tmp_path / "elsewhere.lock"
    target.write_text(_base_lock_text())
    (tmp_path / "bases" / "debian12.amd64.lock").symlink_to(target)
    with pytest.raises(ConfigError, match="not a regular file"):
        base_lock.read(tmp_path, "debian12", AMD64)
    (tmp_path / "bases" / "debian12.amd64.lock").unlink()
    (tmp_path / "bases" / "debian13.amd64.lock").write_text(_base_lock_text())
    with pytest.raises(ConfigError, match="made for base debian12"):
        base_lock.read(tmp_path, "debian13", AMD64)
    assert base_lock.read(tmp_path, "debian12", ARM64) is None


def test_the_committed_apt_and_base_locks_pass_their_grammar_and_digest():
    from repo import ROOT

    for path in sorted((ROOT / "bases").glob("*.lock")):
        got = base_lock.parse(path.read_text(), str(path))
        assert got.suites[0] in ("bookworm", "trixie") and len(got.versions) > 50
    for path in sorted((ROOT / "images").glob("*/apt.*.lock")):
        assert apt_lock.parse(path.read_text(), str(path)).suites


def test_outdated_lists_each_newer_version_with_its_source_and_counts_the_security_ones(tmp_path):
    index = debian_index.read(_lists(tmp_path, INDEX), SUITES, "amd64")
    found = debian_index.newer(index, {"libssl3": "3.0.17-1~deb12u2", "tzdata": "2025b-0+deb12u1", "zlib1g": "1:1.2.13.dfsg-1+deb12u1"})
    updates = [outdated.Update("minimal", AMD64, "debian", n, old, new, debian_index.kind(s))
               for n, (old, new, s) in found.items()]
    assert outdated.lines(updates) == [
        "minimal linux/amd64 debian libssl3 3.0.17-1~deb12u2 -> 3.0.22-1~deb12u2 (security)",
        "minimal linux/amd64 debian tzdata 2025b-0+deb12u1 -> 2026f-0+deb12u1 (updates)"]
    assert outdated.security_pending(updates) == 1
    md = outdated.markdown(updates, security_only=False)
    assert "| libssl3 | debian | 3.0.17-1~deb12u2 | 3.0.22-1~deb12u2 | security |" in md and "1 of them security" in md


def test_outdated_exits_1_with_a_pending_security_update_and_0_without(tmp_path, monkeypatch):
    # The committed locks against indexes made here: one where the security suite is newer for a
    # package the minimal image locks, one where every suite holds exactly the locked versions.
    from repo import ROOT

    from builder.cli import app

    lock = base_lock.read(ROOT, "debian12", AMD64)
    apt = apt_lock.read(ROOT / "images", "minimal-debian12-py311-cpu-inference", AMD64)
    same = {"bookworm": {**lock.versions, **apt.versions}}

    def fake(newer: bool):
        def fetch(archive, arch, root):
            packages = {s: dict(v) for s, v in same.items()}
            if newer:
                packages["bookworm-security"] = {"zlib1g": lock.versions["zlib1g"] + "+zz1"}
            return debian_index.read(_lists(tmp_path / f"{newer}-{arch}", packages), SUITES, "amd64")
        return fetch
    for newer, code in ((True, 1), (False, 0)):
        monkeypatch.setattr(debian_index, "fetch", fake(newer))
        r = CliRunner().invoke(app, ["outdated", "--select", "minimal-debian12*", "--no-python", "--json",
                                     "--matrix", str(ROOT / "matrix.yaml"), "--build-dir", str(tmp_path / "build")])
        assert r.exit_code == code, r.output
        data = json.loads(r.stdout)
        assert data["security_pending"] == (2 if newer else 0)  # zlib1g on linux/amd64 and on linux/arm64
        assert {row["platform"] for row in data["images"]} == {AMD64.name, ARM64.name}
    assert not os.path.exists(tmp_path / "build" / "report.json")


def test_a_security_update_a_point_release_folded_into_the_release_stays_a_security_update(tmp_path):
    folded = {"bookworm": {"libssl3": "3.0.22-1~deb12u2"}, "bookworm-security": {"libssl3": "3.0.22-1~deb12u2"}}
    index = debian_index.read(_lists(tmp_path, folded), SUITES, "amd64")
    assert debian_index.newer(index, {"libssl3": "3.0.17-1~deb12u2"})["libssl3"][2] == "bookworm-security"
    assert debian_index.security_fix(index, "libssl3", "3.0.17-1~deb12u2") == "3.0.22-1~deb12u2"
    assert debian_index.security_fix(index, "libssl3", "3.0.22-1~deb12u2") is None
    assert index.suite_of("libssl3", "3.0.22-1~deb12u2") == "bookworm-security"


@pytest.mark.parametrize("date, epoch", [("Sat, 08 Nov 2025 09:41:54 -0000", 1762594914),
                                         ("Sat, 08 Nov 2025 10:41:54 +0100", 1762594914)])
def test_a_release_date_without_a_known_zone_is_utc_on_every_machine(tmp_path, monkeypatch, date, epoch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    root = _lists(tmp_path, INDEX)
    next(root.glob("*_dists_bookworm_InRelease")).write_text(RELEASE.format(suite="bookworm", date=date))
    assert debian_index.read(root, SUITES, "amd64").dates["bookworm"] == epoch


def test_a_release_date_out_of_range_is_one_line(tmp_path):
    root = _lists(tmp_path, INDEX)
    next(root.glob("*_dists_bookworm_InRelease")).write_text(
        RELEASE.format(suite="bookworm", date="Sat, 08 Nov 2025 09:41:54 +99999999999999999999"))
    with pytest.raises(ConfigError, match="no RFC 2822 Date"):
        debian_index.read(root, SUITES, "amd64")


@pytest.mark.parametrize("header", ["# date: ²⁰²⁶", "# security-pending: ３"])
def test_a_lock_header_number_of_other_digits_is_one_line(header):
    key = header.split(":")[0]
    text = "\n".join(header if line.startswith(key + ":") else line for line in _base_lock_text().split("\n"))
    with pytest.raises(ConfigError) as exc:
        base_lock.parse(text, "bases/debian12.amd64.lock")
    assert len(exc.value.lines) == 1 and "is not a whole number" in exc.value.lines[0]


def test_an_image_carries_its_apt_sources_without_credentials():
    archive = debian_index.Archive("bookworm", "http://user:secret@m.invalid:8080/debian/", "https://t0k3n@s.invalid/sec")
    public, chroot = archive.sources(public=True), archive.sources()
    assert "secret" not in public and "t0k3n" not in public and "URIs: http://m.invalid:8080/debian/" in public
    assert "user:secret@" in chroot
    assert archive.redact("Err:1 http://m.invalid:8080/debian bookworm; E: https://s.invalid/sec x") == \
        "Err:1 <mirror> bookworm; E: <security mirror> x"


def test_the_bootstrap_ends_installing_everything_dpkg_has_so_both_ways_mark_alike():
    from builder.engine import bases

    for newest in (True, False):
        steps = bases._script(newest).split(" && ")
        assert steps[-3].startswith("dpkg-query -W") and steps[-2].startswith("xargs -a /tmp/base.lock")
        assert all("Dir::Etc::SourceList=/tmp/builder.sources" in s for s in steps if s.startswith("apt-get"))


def test_a_proc_that_stays_mounted_stops_the_bootstrap(tmp_path, monkeypatch):
    import subprocess

    from builder.engine import bases

    monkeypatch.setattr(bases.os.path, "ismount", lambda p: True)
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 32, "", ""))
    with pytest.raises(bases.BaseError, match="stays mounted"):
        bases._unmount(tmp_path / "proc")
