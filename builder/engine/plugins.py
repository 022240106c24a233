"""The Docker CLI plugins the builder runs, put in place when missing: ``docker buildx`` (bake,
imagetools) and ``docker compose`` v2 (the smoke tests' scoring containers), each from the Debian
package of the Engine line's release (:mod:`builder.engine.lines`) through a private apt state
(https://docs.docker.com/engine/extend/cli_plugins/)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

from builder import files
from builder.engine import debian_suite
from builder.engine import lines
from builder.engine.host import EngineError, can_provision, installed_version

#: Where a provisioned Docker CLI plugin goes: a system-wide plugin directory
#: (https://docs.docker.com/engine/extend/cli_plugins/), so every user's ``docker`` finds it.
PLUGIN_DIR = Path("/usr/local/lib/docker/cli-plugins")
#: The plugins come from the Engine line's release (:mod:`builder.engine.debian_suite`): Debian 13's
#: ``docker-buildx`` 0.13 and ``docker-compose`` 2.26, or forky's 0.29 and 2.40; Debian 12's own
#: archive has no buildx and only Compose v1.
#: The environment every ``docker buildx`` build of the builder runs with, on top of the caller's: no
#: default provenance attestation (see :mod:`builder.run.buildx`).
BUILDX_ENV = {"BUILDX_NO_DEFAULT_ATTESTATIONS": "1"}
#: Plugin name -> the Debian package that holds it.
PLUGINS = {"buildx": "docker-buildx", "compose": "docker-compose"}


def plugin_version(name: str) -> str | None:
    """``docker <name> version``'s first line, or None when the docker CLI or the plugin is missing."""
    try:
        r = subprocess.run(["docker", name, "version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else None


@functools.cache
def bake_takes_allow() -> bool:
    """True when ``docker buildx bake`` takes ``--allow`` (its ``--help`` lists it): buildx 0.29.1
    does, and refuses a bake that reads files outside its working folder (a secret's ``src``) unless
    each is granted with ``--allow=fs.read=PATH`` ("additional privileges requested",
    https://docs.docker.com/reference/cli/docker/buildx/bake/#allow); 0.13.1 has no such flag
    (both measured 2026-12-07). Asked once a process."""
    try:
        r = subprocess.run(["docker", "buildx", "bake", "--help"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0 and "--allow" in r.stdout


def ensure_buildx(state_dir: Path, mirror: str | None = None) -> str:
    """Make ``docker buildx`` work (see :func:`ensure_plugin`); return its version line."""
    return ensure_plugin("buildx", state_dir, mirror)


def ensure_compose(state_dir: Path, mirror: str | None = None) -> str:
    """Make ``docker compose`` (v2) work (see :func:`ensure_plugin`); return its version line."""
    return ensure_plugin("compose", state_dir, mirror)


def ensure_plugin(name: str, state_dir: Path, mirror: str | None = None) -> str:
    """Make the Docker CLI plugin ``name`` (:data:`PLUGINS`) work and return its version line.

    When it is missing on a Debian machine where we are root, or when the one the builder put in
    :data:`PLUGIN_DIR` is not the Engine line's version (:func:`builder.engine.lines.wanted`), the
    package of the line's Debian release is downloaded with apt from ``mirror`` (default: the mirror
    this machine's apt sources name, see :func:`builder.engine.sources.apt_mirror`) through a private apt state under ``state_dir``/plugins
    (:func:`builder.engine.debian_suite.download`), and its plugin binary is put into
    :data:`PLUGIN_DIR`. Raises EngineError with what to install anywhere else, or when the download
    or the plugin fails.
    """
    package = PLUGINS[name]
    found = plugin_version(name)
    try:
        line = lines.wanted(os.environ, installed_version("docker.io"))
    except lines.UnknownLine as exc:
        raise EngineError(str(exc)) from None
    if found and (lines.plugin_fits(line, name, found) or not (PLUGIN_DIR / f"docker-{name}").exists()):
        return found
    if shutil.which("docker") is None:
        raise EngineError("the docker CLI is not installed: install Docker (docker.io, or Docker's docker-ce-cli)")
    if not can_provision():
        raise EngineError(f"docker {name} is missing: install the {name} CLI plugin (Debian/Ubuntu: {package}; "
                          f"Docker's packages: {package}-plugin) and try again")
    files.claim_folder(state_dir)
    folder = files.make_folder(state_dir / "plugins").resolve()
    [deb] = debian_suite.download([package], folder, mirror, suite=line.suite)
    unpacked = deb.parent / "unpacked"
    shutil.rmtree(unpacked, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    files.copy_atomic(unpacked / f"usr/libexec/docker/cli-plugins/docker-{name}", PLUGIN_DIR / f"docker-{name}",
                      files.EXEC_MODE)
    shutil.rmtree(unpacked)
    found = plugin_version(name)
    if not found:
        raise EngineError(f"installed {PLUGIN_DIR / ('docker-' + name)} from {deb.name}, but `docker {name} version` "
                          "still fails")
    return found
