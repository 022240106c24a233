"""Base images: the bootstrap tag follows the recipe; the mirror comes from apt's own sources."""

import pytest

from builder import bases
from builder.schema import Base


def _base(**bootstrap):
    return Base(title="t", python="3.11", pull="debian:bookworm-slim", bootstrap={"suite": "bookworm", **bootstrap})


def test_a_changed_recipe_names_a_new_base():
    a, b = bases.bootstrap_ref("debian12", _base()), bases.bootstrap_ref("debian12", _base(variant="buildd"))
    assert a.startswith("builder-base/debian12:") and a != b
    assert a == bases.bootstrap_ref("debian12", _base())


def test_mirror_from_deb822_sources_skips_security(tmp_path, monkeypatch):
    monkeypatch.delenv("BUILDER_APT_MIRROR", raising=False)
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://security.mirror.invalid/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n")
    assert bases.apt_mirror(tmp_path) == "http://mirror.invalid/debian"


def test_mirror_from_one_line_sources_list(tmp_path, monkeypatch):
    monkeypatch.delenv("BUILDER_APT_MIRROR", raising=False)
    (tmp_path / "sources.list").write_text("# comment\ndeb [arch=amd64] http://mirror.invalid/debian bookworm main\n")
    assert bases.apt_mirror(tmp_path) == "http://mirror.invalid/debian"


def test_environment_overrides_the_mirror_and_none_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("BUILDER_APT_MIRROR", "http://override.invalid/debian")
    assert bases.apt_mirror(tmp_path) == "http://override.invalid/debian"
    monkeypatch.delenv("BUILDER_APT_MIRROR")
    with pytest.raises(bases.BaseError, match="BUILDER_APT_MIRROR"):
        bases.apt_mirror(tmp_path)
