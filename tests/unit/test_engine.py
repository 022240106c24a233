"""Provisioning: what the builder says when it cannot install docker buildx itself, which Engine it
accepts, and when it installs or upgrades one."""

import subprocess

import pytest

from builder import engine
from builder.engine import daemon, host, plugins


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


def _install_with(monkeypatch, dockerd, docker_io):
    fetched = []
    monkeypatch.setattr(daemon.shutil, "which", lambda name: dockerd)
    monkeypatch.setattr(daemon, "installed_version", lambda package: docker_io)
    monkeypatch.setattr(daemon.debian13, "download", lambda packages, root: fetched.append(packages) or [
        root / f"{p}_26.1.5.deb" for p in packages])
    monkeypatch.setattr(daemon, "apt_install", lambda *debs: fetched.append(list(debs)))
    return fetched


def test_debians_docker_io_older_than_26_is_upgraded_from_debian_13(monkeypatch, tmp_path):
    fetched = _install_with(monkeypatch, "/usr/sbin/dockerd", "20.10.24+dfsg1-1+deb12u1+b6")
    daemon.install(tmp_path)
    assert fetched[0] == ["docker.io", "docker-cli"]
    assert fetched[1] == [str(tmp_path.resolve() / "engine" / f"{p}_26.1.5.deb") for p in ("docker.io", "docker-cli")]


def test_a_missing_engine_is_installed_and_a_current_one_left_alone(monkeypatch, tmp_path):
    fetched = _install_with(monkeypatch, None, None)
    daemon.install(tmp_path)
    assert fetched and fetched[0] == ["docker.io", "docker-cli"]
    for dockerd, docker_io in (("/usr/sbin/dockerd", "26.1.5+dfsg1-9+deb13u1+b1"), ("/usr/bin/dockerd", None)):
        fetched = _install_with(monkeypatch, dockerd, docker_io)
        daemon.install(tmp_path)
        assert fetched == []
