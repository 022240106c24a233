"""The one registry client's pure parts (its requests are made against a real registry in the
engine tests: tests/integration/test_pipeline.py, test_by_platform.py)."""

import pytest

from builder.engine import registry


@pytest.mark.parametrize("host, insecure", [("127.0.0.1:5000", True), ("localhost:5000", True), ("[::1]:5000", True),
                                            ("registry.example:443", False), ("10.0.0.1:5000", False)])
def test_only_loopback_registries_are_spoken_to_over_http(host, insecure):
    assert registry.insecure(host) is insecure


def test_credentials_are_read_once_from_the_environment_and_never_shown(monkeypatch):
    monkeypatch.setenv("REGISTRY_USERNAME", "ci")
    monkeypatch.setenv("REGISTRY_PASSWORD", "s3cret")
    creds = registry.Credentials.from_env()
    monkeypatch.setenv("REGISTRY_PASSWORD", "changed")
    assert creds.docker_auth() == {"username": "ci", "password": "s3cret"}
    assert "s3cret" not in repr(creds)


def test_no_credentials_leave_the_engine_its_own_configuration(monkeypatch):
    monkeypatch.delenv("REGISTRY_USERNAME", raising=False)
    monkeypatch.setenv("REGISTRY_PASSWORD", "only half")
    assert registry.Credentials.from_env().docker_auth() is None


def test_a_repository_names_its_registry_host():
    assert registry.host_of("127.0.0.1:5000/team/minimal") == "127.0.0.1:5000"
