"""Package sources for builds: read from the environment, served on loopback, never baked in."""

import urllib.request

import pytest

from builder.sources import Sources, serve


def test_builder_variables_win_over_pips_own(monkeypatch, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("PIP_INDEX_URL", "https://pip-index.invalid/simple")
    monkeypatch.setenv("BUILDER_INDEX_URL", "https://mirror.invalid/simple")
    monkeypatch.setenv("PIP_CERT", str(ca))
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "https://a.invalid/simple https://b.invalid/simple")
    s = Sources.from_env()
    assert s.index_url == "https://mirror.invalid/simple"
    assert s.ca_bundle == ca and s.wheelhouse == tmp_path
    assert s.extra_index_urls == ("https://a.invalid/simple", "https://b.invalid/simple")


def test_a_missing_ca_bundle_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("BUILDER_CA_BUNDLE", str(tmp_path / "absent.pem"))
    with pytest.raises(ValueError, match="not a file"):
        Sources.from_env()


def test_nothing_configured_means_nothing_served(monkeypatch):
    for v in ("BUILDER_CA_BUNDLE", "PIP_CERT", "SSL_CERT_FILE", "BUILDER_INDEX_URL", "PIP_INDEX_URL",
              "BUILDER_EXTRA_INDEX_URL", "PIP_EXTRA_INDEX_URL", "BUILDER_WHEELHOUSE", "PIP_FIND_LINKS"):
        monkeypatch.delenv(v, raising=False)
    s = Sources.from_env()
    assert s.empty
    with serve(s) as url:
        assert url == ""


def test_served_pip_conf_ca_and_wheelhouse(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "demo-1.0-py3-none-any.whl").write_bytes(b"PK")
    ca = tmp_path / "ca.pem"
    ca.write_text("CERT")
    s = Sources(ca_bundle=ca, index_url="https://user:t0ken@mirror.invalid/simple", wheelhouse=wheels, port=5197)
    assert s.secrets() == ["user:t0ken"]
    with serve(s) as url:
        conf = urllib.request.urlopen(f"{url}/pip.conf").read().decode()
        assert "index-url = https://user:t0ken@mirror.invalid/simple" in conf
        assert f"find-links = {url}/wheels/" in conf
        assert urllib.request.urlopen(f"{url}/ca.pem").read() == b"CERT"
        assert "demo-1.0-py3-none-any.whl" in urllib.request.urlopen(f"{url}/wheels/").read().decode()


def test_concurrent_builders_take_turns_on_the_same_port():
    import threading
    import time

    s = Sources(index_url="https://mirror.invalid/simple", port=5187)
    events = []

    def second():
        with serve(s) as url:
            events.append(("second", url))

    with serve(s) as first:
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.5)
        events.append(("first done", first))
    t.join(10)
    assert events == [("first done", "http://127.0.0.1:5187"), ("second", "http://127.0.0.1:5187")]
