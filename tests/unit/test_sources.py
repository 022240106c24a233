"""Package sources for builds: read from the environment, handed to builds as BuildKit secrets."""

import tomllib
from pathlib import Path

import pytest

from builder.engine.sources import Sources, apt_mirror
from builder.matrix.inputs import ConfigError

VARIABLES = ("BUILDER_CA_BUNDLE", "PIP_CERT", "SSL_CERT_FILE", "BUILDER_INDEX_URL", "PIP_INDEX_URL",
             "BUILDER_EXTRA_INDEX_URL", "PIP_EXTRA_INDEX_URL", "BUILDER_WHEELHOUSE", "PIP_FIND_LINKS")


@pytest.fixture
def clean_env(monkeypatch):
    for v in VARIABLES:
        monkeypatch.delenv(v, raising=False)
    return monkeypatch


def test_builder_variables_win_over_pips_own(clean_env, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    clean_env.setenv("PIP_INDEX_URL", "https://pip-index.invalid/simple")
    clean_env.setenv("BUILDER_INDEX_URL", "https://mirror.invalid/simple")
    clean_env.setenv("PIP_CERT", str(ca))
    clean_env.setenv("PIP_FIND_LINKS", str(tmp_path))
    clean_env.setenv("PIP_EXTRA_INDEX_URL", "https://a.invalid/simple https://b.invalid/simple")
    s = Sources.from_env()
    assert s.index_url == "https://mirror.invalid/simple"
    assert s.ca_bundle == ca and s.wheelhouse == tmp_path
    assert s.extra_index_urls == ("https://a.invalid/simple", "https://b.invalid/simple")


def test_a_missing_ca_bundle_is_an_error(clean_env, tmp_path):
    clean_env.setenv("BUILDER_CA_BUNDLE", str(tmp_path / "absent.pem"))
    with pytest.raises(ConfigError, match="not a file"):
        Sources.from_env()


@pytest.mark.parametrize("url", ["mirror.invalid/simple", "https://a.invalid/simple\nindex-url = x", "ftp://x.invalid/"])
def test_an_index_url_that_is_not_a_url_is_an_error(clean_env, url):
    clean_env.setenv("BUILDER_INDEX_URL", url)
    with pytest.raises(ConfigError, match="index URL"):
        Sources.from_env()


def test_nothing_configured_gives_empty_configurations(clean_env):
    s = Sources.from_env()
    assert s.uv_toml() == "\n" and s.pip_conf() == "[global]\n"
    with s.secrets() as secrets:
        assert sorted(x.split(",")[0] for x in secrets) == ["id=pip.conf", "id=uv.toml"]


def test_uv_and_pip_get_the_same_indexes_and_uv_searches_every_index(tmp_path):
    s = Sources(index_url="https://user:t0ken@mirror.invalid/simple",
                extra_index_urls=("https://a.invalid/simple", 'https://b.invalid/"quoted"'))
    uv = tomllib.loads(s.uv_toml())
    assert uv == {"index-url": "https://user:t0ken@mirror.invalid/simple",
                  "extra-index-url": ["https://a.invalid/simple", 'https://b.invalid/"quoted"'],
                  "index-strategy": "unsafe-best-match"}
    assert "index-url = https://user:t0ken@mirror.invalid/simple" in s.pip_conf()
    assert s.credentials() == ["user:t0ken"]


def test_secrets_live_in_a_private_folder_only_for_the_block(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("CERT")
    s = Sources(ca_bundle=ca, index_url="https://user:t0ken@mirror.invalid/simple")
    with s.secrets() as secrets:
        specs = dict(x.split(",", 1) for x in secrets)
        files = {k.removeprefix("id="): Path(v.removeprefix("src=")) for k, v in specs.items()}
        assert files["ca.pem"] == ca.resolve()
        assert "t0ken" in files["uv.toml"].read_text() and "t0ken" in files["pip.conf"].read_text()
        folder = files["uv.toml"].parent
        assert folder.stat().st_mode & 0o077 == 0
    assert not folder.exists() and ca.exists()


@pytest.mark.parametrize("name", ["ca,id=evil.pem", 'ca".pem', "ca\nx.pem"])
def test_a_ca_bundle_path_that_would_break_the_secret_spec_is_refused(clean_env, tmp_path, name):
    ca = tmp_path / name
    ca.write_text("CERT")
    clean_env.setenv("BUILDER_CA_BUNDLE", str(ca))
    with pytest.raises(ConfigError, match="secret specification") as exc:
        Sources.from_env()
    assert len(exc.value.lines) == 1


# The Debian mirror comes from apt's own sources.

def test_mirror_from_deb822_sources_skips_security(tmp_path, monkeypatch):
    monkeypatch.delenv("BUILDER_APT_MIRROR", raising=False)
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://security.mirror.invalid/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n")
    assert apt_mirror(tmp_path) == "http://mirror.invalid/debian"


def test_mirror_from_one_line_sources_list(tmp_path, monkeypatch):
    monkeypatch.delenv("BUILDER_APT_MIRROR", raising=False)
    (tmp_path / "sources.list").write_text("# comment\ndeb [arch=amd64] http://mirror.invalid/debian bookworm main\n")
    assert apt_mirror(tmp_path) == "http://mirror.invalid/debian"


def test_environment_overrides_the_mirror_and_none_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("BUILDER_APT_MIRROR", "http://override.invalid/debian")
    assert apt_mirror(tmp_path) == "http://override.invalid/debian"
    monkeypatch.delenv("BUILDER_APT_MIRROR")
    with pytest.raises(ConfigError, match="BUILDER_APT_MIRROR"):
        apt_mirror(tmp_path)
