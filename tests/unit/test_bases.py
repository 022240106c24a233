"""Base images: the bootstrap tag follows the recipe and the base lock; a bootstrap keeps no record
of when or where it ran (the Engine's side is in the engine tests; the date is the lock's)."""

import pytest

from builder.matrix.platform import PLATFORMS
from builder.engine import bases
from builder.matrix.schema import Base

AMD64, ARM64 = PLATFORMS["linux/amd64"], PLATFORMS["linux/arm64"]


def _base(**bootstrap):
    return Base(title="t", python="3.11", pull="debian:bookworm-slim", bootstrap={"suite": "bookworm", **bootstrap})


def test_a_changed_recipe_names_a_new_base():
    a, b = bases.bootstrap_ref("debian12", _base()), bases.bootstrap_ref("debian12", _base(variant="buildd"))
    assert a.startswith("builder-base/debian12:") and a != b
    assert a == bases.bootstrap_ref("debian12", _base())


def test_a_base_of_another_platform_is_loaded_with_buildx_put_in_place_first(tmp_path, monkeypatch):
    # On a machine that never saw the project, `builder lock` (or any first use) bootstraps the arm64
    # base before anything else installed the buildx plugin (found by a CI run on a fresh machine).
    from builder.engine import bases, export, plugins

    calls: list = []
    monkeypatch.setattr(plugins, "ensure_buildx", lambda state_dir: calls.append(("ensure", state_dir)))
    monkeypatch.setattr(export, "run", lambda cmd, cwd, env, on_line, load_into=None:
                        calls.append(("run", cmd[:3], load_into)) or export.Exported(0))
    monkeypatch.setattr(bases.engine, "containerd_store", lambda client: False)
    root = tmp_path / "build" / "bases" / "debian12-arm64"
    root.mkdir(parents=True)
    bases._load(None, root / "rootfs.tar", "builder-base/debian12-arm64:abc", ARM64, 1700000000)
    assert calls == [("ensure", tmp_path / "build"), ("run", ["docker", "buildx", "build"], None)]


def test_on_the_containerd_store_a_base_is_a_dated_oci_archive_streamed_into_the_engine(tmp_path, monkeypatch):
    from builder.engine import export, plugins
    seen: dict = {}
    client = object()

    def run(cmd, cwd, env, on_line, load_into=None):
        seen["cmd"], seen["load_into"] = cmd, load_into
        return export.Exported(0)
    monkeypatch.setattr(plugins, "ensure_buildx", lambda state_dir: None)
    monkeypatch.setattr(export, "run", run)
    monkeypatch.setattr(bases.engine, "containerd_store", lambda client: True)
    root = tmp_path / "b" / "debian12"
    root.mkdir(parents=True)
    bases._load(client, root / "rootfs.tar", "builder-base/debian12:abc", AMD64, 1700000000)
    assert "SOURCE_DATE_EPOCH=1700000000" in seen["cmd"] and seen["load_into"] is client
    assert "--output=type=oci,dest=-,name=builder-base/debian12:abc,rewrite-timestamp=true" in seen["cmd"]
    assert sorted(p.name for p in root.iterdir()) == ["Dockerfile"]  # no archive written


@pytest.mark.parametrize("done, said", [
    (("code", 1), "loading the linux/amd64 base failed: ERROR: boom"),
    (("load_error", "unexpected EOF"), "docker load refused it: unexpected EOF"),
])
def test_a_base_that_does_not_build_or_load_is_one_error_line(tmp_path, monkeypatch, done, said):
    from builder.engine import export, plugins

    def run(cmd, cwd, env, on_line, load_into=None):
        on_line("#1 building")
        on_line("ERROR: boom")
        return export.Exported(**{"code": 0, done[0]: done[1]})
    monkeypatch.setattr(plugins, "ensure_buildx", lambda state_dir: None)
    monkeypatch.setattr(export, "run", run)
    monkeypatch.setattr(bases.engine, "containerd_store", lambda client: True)
    (tmp_path / "b" / "debian12").mkdir(parents=True)
    with pytest.raises(bases.BaseError, match=said.replace("(", ".").replace(")", ".")):
        bases._load(object(), tmp_path / "b" / "debian12" / "rootfs.tar", "builder-base/debian12:abc", AMD64, 1)


def test_strip_removes_the_records_of_when_and_where_a_bootstrap_ran(tmp_path):
    for rel in ("var/log/dpkg.log", "var/log/bootstrap.log", "var/log/apt/history.log", "var/log/wtmp",
                "var/cache/ldconfig/aux-cache", "var/lib/dpkg/status-old", "var/lib/dpkg/status",
                "var/cache/debconf/config.dat-old", "var/cache/debconf/config.dat", "usr/share/doc/x/README"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "hostname").write_text("build-host-42\n")
    bases._strip(tmp_path)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["etc/hostname", "var/cache/debconf/config.dat", "var/lib/dpkg/status", "var/log/wtmp"]
    assert (tmp_path / "etc" / "hostname").read_bytes() == b""
    assert (tmp_path / "var/lib/apt/lists/partial").is_dir()


def test_changed_pins_name_a_new_base():
    def pins(version, date=1796441608):
        return bases.Pins({"zlib1g": version, "apt": "2.6.2"}, date)
    a, b = (bases.bootstrap_ref("debian12", _base(), AMD64, pins(v)) for v in ("1:1.2.13.dfsg-1+deb12u1", "1:1.2.13.dfsg-1+deb12u2"))
    assert a != b and a != bases.bootstrap_ref("debian12", _base())
    assert a != bases.bootstrap_ref("debian12", _base(), AMD64, pins("1:1.2.13.dfsg-1+deb12u1", 1796441609))
    assert a == bases.bootstrap_ref("debian12", _base(), AMD64, pins("1:1.2.13.dfsg-1+deb12u1"))
