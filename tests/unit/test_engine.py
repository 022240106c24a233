"""Provisioning: what the builder says when it cannot install docker buildx itself."""

import pytest

from builder import engine
from builder.engine import plugins


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
    import subprocess

    answers = {"docker-registry": "deinstall ok config-files", "skopeo": "install ok installed"}
    monkeypatch.setattr(engine.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(
        cmd, 0, stdout=answers[cmd[-1]], stderr=""))
    assert not engine.installed("docker-registry") and engine.installed("skopeo")
