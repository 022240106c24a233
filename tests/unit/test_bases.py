"""Base images: the bootstrap tag follows the recipe."""

from builder.engine import bases
from builder.matrix.schema import Base


def _base(**bootstrap):
    return Base(title="t", python="3.11", pull="debian:bookworm-slim", bootstrap={"suite": "bookworm", **bootstrap})


def test_a_changed_recipe_names_a_new_base():
    a, b = bases.bootstrap_ref("debian12", _base()), bases.bootstrap_ref("debian12", _base(variant="buildd"))
    assert a.startswith("builder-base/debian12:") and a != b
    assert a == bases.bootstrap_ref("debian12", _base())


def test_a_base_of_another_platform_is_loaded_with_buildx_put_in_place_first(tmp_path, monkeypatch):
    # On a machine that never saw the project, `builder lock` (or any first use) bootstraps the arm64
    # base before anything else installed the buildx plugin (found by a CI run on a fresh machine).
    import subprocess

    from builder.engine import bases, plugins

    calls: list = []
    monkeypatch.setattr(plugins, "ensure_buildx", lambda state_dir: calls.append(("ensure", state_dir)))
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(("run", cmd[:3])) or
                        subprocess.CompletedProcess(cmd, 0, "", ""))
    root = tmp_path / "build" / "bases" / "debian12-arm64"
    root.mkdir(parents=True)
    bases._load(None, root / "rootfs.tar", "builder-base/debian12-arm64:abc", "linux/arm64")
    assert calls == [("ensure", tmp_path / "build"), ("run", ["docker", "buildx", "build"])]
