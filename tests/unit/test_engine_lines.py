"""The Engine lines (builder.engine.lines): which one a run provisions, and what fits it."""

from pathlib import Path

import pytest

from builder.engine import lines


def test_the_environment_chooses_a_line_and_unset_chooses_none():
    assert lines.chosen({}) is None
    assert lines.chosen({"BUILDER_ENGINE": "  "}) is None
    assert lines.chosen({"BUILDER_ENGINE": " 28.5\n"}) is lines.LINES["28.5"] is lines.DEFAULT
    assert lines.chosen({"BUILDER_ENGINE": "26.1"}) is lines.LINES["26.1"] is lines.OTHER


@pytest.mark.parametrize("value", ["28", "28.5.2", "forky", "latest", "26.1;rm -rf /", "\x1b[2J", "9" * 5000])
def test_anything_else_is_refused_in_one_short_line(value):
    with pytest.raises(lines.UnknownLine) as exc:
        lines.chosen({"BUILDER_ENGINE": value})
    message = str(exc.value)
    assert "\n" not in message and "\x1b" not in message and len(message) < 200
    assert message.endswith("use one of 26.1, 28.5")


@pytest.mark.parametrize("version, expected", [
    ("28.5.2+dfsg4-5", (28, 5)), ("26.1.5+dfsg1-9+deb13u1+b1", (26, 1)), ("20.10.24+dfsg1-1+deb12u1+b6", (20, 10)),
    ("1:28.5~rc1", (28, 5)), ("2.1.9+ds1-5", (2, 1)), ("28", None), ("", None), ("x.y", None)])
def test_major_minor_of_a_debian_version(version, expected):
    assert lines.major_minor(version) == expected


def test_the_installed_version_names_its_line_and_the_environment_wins():
    assert lines.of_version("28.5.2+dfsg4-5") is lines.LINES["28.5"]
    assert lines.of_version("26.1.4+dfsg1-1") is lines.LINES["26.1"]
    assert lines.of_version("27.5.1+dfsg4-1") is None and lines.of_version(None) is None
    assert lines.of_version("228.5.2") is None
    assert lines.wanted({}, "28.5.2+dfsg4-5") is lines.LINES["28.5"]
    assert lines.wanted({}, None) is lines.DEFAULT and lines.wanted({}, "27.5.1") is lines.DEFAULT
    assert lines.wanted({"BUILDER_ENGINE": "26.1"}, "28.5.2+dfsg4-5") is lines.OTHER
    assert lines.wanted({}, "26.1.5+dfsg1-9+deb13u1+b1") is lines.OTHER  # an installed line stays


def test_each_line_keeps_its_own_data_root_and_containerd_major():
    assert lines.OTHER.data_root is None and lines.OTHER.containerd_major == 1
    assert lines.LINES["28.5"].data_root == Path("/var/lib/docker-28.5") and lines.LINES["28.5"].containerd_major == 2
    assert lines.containerd_fits(lines.OTHER, "1.6.20~ds1-1+deb12u3") and lines.containerd_fits(lines.OTHER, None)
    assert not lines.containerd_fits(lines.OTHER, "2.1.9+ds1-5")
    assert lines.containerd_fits(lines.LINES["28.5"], "2.1.9+ds1-5")
    assert not lines.containerd_fits(lines.LINES["28.5"], "1.6.20~ds1-1+deb12u3")


def test_a_plugin_fits_the_line_whose_version_it_reports():
    forky = lines.LINES["28.5"]
    assert lines.plugin_fits(forky, "buildx", "github.com/docker/buildx 0.29.1+ds1 0.29.1+ds1-4")
    assert lines.plugin_fits(forky, "compose", "Docker Compose version 2.40.3-3")
    assert lines.plugin_fits(forky, "buildx", "github.com/docker/buildx v0.29.0 abcdef")
    assert not lines.plugin_fits(forky, "buildx", "github.com/docker/buildx 0.13.1+ds1 0.13.1+ds1-3")
    assert not lines.plugin_fits(forky, "buildx", "github.com/docker/buildx 10.29.1")
    assert lines.plugin_fits(lines.OTHER, "buildx", "github.com/docker/buildx 0.13.1+ds1 0.13.1+ds1-3")
    assert lines.plugin_fits(lines.OTHER, "other", "anything")


def test_a_download_asks_for_the_suites_version_not_the_installed_one(monkeypatch, tmp_path):
    from builder.engine import debian_suite
    calls = []

    def apt(cmd, cwd, capture_output, text):
        calls.append(cmd)
        if "download" in cmd:
            for wanted in cmd[cmd.index("--") + 1:]:
                (cwd / f"{wanted.split('/')[0]}_26.1.5_amd64.deb").write_bytes(b"deb")
        return type("R", (), {"returncode": 0, "stderr": ""})()
    monkeypatch.setattr(debian_suite.subprocess, "run", apt)
    debs = debian_suite.download(["docker.io", "docker-cli"], tmp_path, "http://deb.example/debian", suite="trixie")
    assert calls[-1][-3:] == ["--", "docker.io/trixie", "docker-cli/trixie"]
    assert [d.name for d in debs] == ["docker.io_26.1.5_amd64.deb", "docker-cli_26.1.5_amd64.deb"]
    with pytest.raises(ValueError, match="not a Debian suite name"):
        debian_suite.download(["docker.io"], tmp_path, "http://deb.example/debian", suite="../etc")
