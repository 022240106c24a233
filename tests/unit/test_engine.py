"""Provisioning: what the builder says when it cannot install docker buildx itself, which Engine it
accepts, and when it installs or upgrades one."""

import subprocess
from pathlib import Path

import pytest

from builder import engine
from builder.engine import daemon, host, lines, plugins


def test_missing_buildx_off_debian_names_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(plugins, "plugin_version", lambda name: None)
    monkeypatch.setattr(plugins, "can_provision", lambda: False)
    monkeypatch.setattr(plugins.shutil, "which", lambda name: "/usr/bin/docker")
    with pytest.raises(engine.EngineError) as exc:
        plugins.ensure_buildx(tmp_path)
    message = str(exc.value)
    assert "\n" not in message and "docker-buildx" in message and "docker-buildx-plugin" in message
    with pytest.raises(engine.EngineError, match="docker-compose-plugin"):
        plugins.ensure_compose(tmp_path)


def test_present_buildx_is_left_alone(monkeypatch, tmp_path):
    monkeypatch.setattr(plugins, "plugin_version", lambda name: "github.com/docker/buildx 0.13.1")
    monkeypatch.setattr(plugins, "installed_version", lambda package: "26.1.5+dfsg1-9+deb13u1+b1")
    monkeypatch.setattr(plugins, "can_provision", lambda: pytest.fail("nothing to provision"))
    assert plugins.ensure_buildx(tmp_path) == "github.com/docker/buildx 0.13.1"


def test_a_removed_package_with_configuration_left_is_not_installed(monkeypatch):
    answers = {"docker-registry": "deinstall ok config-files\t2.8.2", "skopeo": "install ok installed\t1.9.3"}
    monkeypatch.setattr(host.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(
        cmd, 0, stdout=answers[cmd[-1]], stderr=""))
    assert not engine.installed("docker-registry") and engine.installed("skopeo")
    assert host.installed_version("skopeo") == "1.9.3"


class _Engine:
    def __init__(self, version, api, driver_status=()):
        self._version = {"Version": version, "ApiVersion": api}
        self._info = {"DriverStatus": [list(p) for p in driver_status]}

    def version(self):
        return self._version

    def info(self):
        return self._info


def test_an_engine_older_than_26_is_refused_in_one_line_naming_the_minimum_and_the_upgrade():
    with pytest.raises(engine.EngineError) as exc:
        daemon.require_modern(_Engine("20.10.24+dfsg1", "1.41"))
    message = str(exc.value)
    assert "\n" not in message and "20.10.24" in message and ">= 26" in message and "install" in message


@pytest.mark.parametrize("version, api", [("26.1.5+dfsg1", "1.45"), ("28.5.1", "1.51"), ("29.0.0", "1.52")])
def test_engines_from_26_on_are_accepted(version, api):
    c = _Engine(version, api)
    assert daemon.require_modern(c) is c


def test_the_image_store_is_read_from_the_storage_drivers_type():
    assert daemon.containerd_store(_Engine("26.1.5", "1.45", [("driver-type", "io.containerd.snapshotter.v1")]))
    assert not daemon.containerd_store(_Engine("26.1.5", "1.45", [("Backing Filesystem", "extfs")]))


def _install_with(monkeypatch, dockerd, docker_io, containerd="1.6.20~ds1-1+deb12u3"):
    fetched = []
    versions = {"docker.io": docker_io, "containerd": containerd}
    monkeypatch.setattr(daemon.shutil, "which", lambda name: dockerd)
    monkeypatch.setattr(daemon, "installed_version", versions.get)
    monkeypatch.setattr(daemon.debian_suite, "download", lambda packages, root, suite: fetched.append((suite, packages))
                        or [root / f"{p}_{suite}.deb" for p in packages])
    monkeypatch.setattr(daemon, "apt_install", lambda *debs, allow_downgrades: fetched.append(list(debs)))
    return fetched


FORKY = ["docker.io", "docker-cli", "containerd", "tini-static"]


def test_debians_docker_io_older_than_26_is_upgraded_to_the_default_line(monkeypatch, tmp_path):
    fetched = _install_with(monkeypatch, "/usr/sbin/dockerd", "20.10.24+dfsg1-1+deb12u1+b6")
    daemon.install(tmp_path)
    assert fetched[0] == ("forky", FORKY)  # Debian 12's containerd 1.6 goes with it: the line brings containerd 2
    assert fetched[1] == [str(tmp_path.resolve() / "engine" / f"{p}_forky.deb") for p in FORKY]


def test_a_missing_engine_is_installed_and_a_current_one_left_alone(monkeypatch, tmp_path):
    fetched = _install_with(monkeypatch, None, None)
    daemon.install(tmp_path)
    assert fetched and fetched[0] == ("forky", FORKY)
    for dockerd, docker_io in (("/usr/sbin/dockerd", "26.1.5+dfsg1-9+deb13u1+b1"), ("/usr/bin/dockerd", None),
                               ("/usr/sbin/dockerd", "28.5.2+dfsg4-5")):
        fetched = _install_with(monkeypatch, dockerd, docker_io)
        daemon.install(tmp_path)
        assert fetched == []


def test_a_chosen_line_replaces_the_other_and_its_containerd(monkeypatch, tmp_path):
    fetched = _install_with(monkeypatch, "/usr/sbin/dockerd", "26.1.5+dfsg1-9+deb13u1+b1")
    daemon.install(tmp_path, lines.LINES["28.5"])
    assert fetched[0] == ("forky", FORKY)
    assert len(fetched) == 2
    # back to 26.1: forky's containerd 2 goes too, for Debian 12's (a downgrade)
    fetched = _install_with(monkeypatch, "/usr/sbin/dockerd", "28.5.2+dfsg4-5", "2.1.9+ds1-5")
    daemon.install(tmp_path, lines.LINES["26.1"])
    assert fetched[:2] == [("trixie", ["docker.io", "docker-cli"]), ("bookworm", ["containerd"])]
    assert [Path(d).name for d in fetched[2]] == ["docker.io_trixie.deb", "docker-cli_trixie.deb", "containerd_bookworm.deb"]


def test_a_chosen_line_already_there_or_someone_elses_engine_is_left_alone(monkeypatch, tmp_path):
    for dockerd, docker_io, containerd, line in (
            ("/usr/sbin/dockerd", "28.5.2+dfsg4-5", "2.1.9+ds1-5", "28.5"),
            ("/usr/sbin/dockerd", "26.1.5+dfsg1-9+deb13u1+b1", "1.6.20~ds1-1+deb12u3", "26.1"),
            ("/usr/bin/dockerd", None, "2.1.9", "26.1")):  # Docker's docker-ce: not Debian's, not ours to replace
        fetched = _install_with(monkeypatch, dockerd, docker_io, containerd)
        daemon.install(tmp_path, lines.LINES[line])
        assert fetched == [], (docker_io, line)


def test_the_data_root_follows_the_installed_line_unless_the_config_sets_one(monkeypatch, tmp_path):
    config = tmp_path / "daemon.json"
    monkeypatch.setattr(daemon, "installed_version", lambda package: "28.5.2+dfsg4-5")
    assert daemon.data_root_args(config) == ["--data-root", "/var/lib/docker-28.5"]  # no file
    for text, args in (('{"features": {}}', ["--data-root", "/var/lib/docker-28.5"]),
                       ('{"data-root": "/srv/docker"}', []), ("not json", ["--data-root", "/var/lib/docker-28.5"])):
        config.write_text(text)
        assert daemon.data_root_args(config) == args, text
    monkeypatch.setattr(daemon, "installed_version", lambda package: "26.1.5+dfsg1-9+deb13u1+b1")
    assert daemon.data_root_args(config) == []


def test_an_unknown_engine_line_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(daemon, "_ping", lambda: None)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(daemon, "can_provision", lambda: True)
    monkeypatch.setenv("BUILDER_ENGINE", "27.0")
    monkeypatch.setattr(daemon, "install", lambda *a: pytest.fail("nothing is installed"))
    with pytest.raises(engine.EngineError, match=r"^BUILDER_ENGINE=27.0 names no Engine line: use one of 26.1, 28.5$"):
        daemon.client(tmp_path)


def test_bake_grants_each_secret_read_only_where_buildx_takes_allow(monkeypatch, tmp_path):
    from builder.run import buildx
    seen = []
    monkeypatch.setattr(buildx, "_run", lambda name, target, cmd, *rest: seen.append(cmd))
    reads = [tmp_path / "uv.toml", Path("/etc/ssl/certs/ca-certificates.crt")]
    for takes, expected in ((True, [f"--allow=fs.read={p}" for p in reads]), (False, [])):
        monkeypatch.setattr(buildx.plugins, "bake_takes_allow", lambda: takes)
        buildx.bake("x", "x", [tmp_path / "bake.json"], tmp_path, {}, tmp_path / "log", reads=reads)
        assert [a for a in seen[-1] if a.startswith("--allow")] == expected
