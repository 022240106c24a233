"""The Docker Engine the builder talks to: Docker Engine >= 26 (BuildKit >= 0.13), with either image
store; the containerd image store is the one tested in full.

:func:`client` returns a docker-py client for an Engine that answers — the one ``DOCKER_HOST``
names, or the default local socket — and refuses, in one line, an Engine older than 26. When none
answers on a Debian machine where we are root, it installs an Engine line (:mod:`builder.engine.lines`:
by default Debian forky's ``docker.io`` and ``docker-cli`` 28.5.2 with its containerd 2.1 and Debian
12's runc; ``BUILDER_ENGINE=26.1`` Debian 13's 26.1.5 with Debian 12's containerd and runc) through
:mod:`builder.engine.debian_suite` (an installed ``docker.io`` older than 26, or of another line
than ``BUILDER_ENGINE`` names, is replaced the same way), turns the containerd image store on in
``/etc/docker/daemon.json`` when there is no such file, and starts ``dockerd`` in the background on
the line's data root (log in dockerd.log in the build folder).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import docker
import requests
from docker.errors import DockerException
from packaging.version import Version

from builder import files
from builder.engine import debian_suite, lines
from builder.engine.host import EngineError, apt_install, can_provision, installed_version, version_at_least

#: The oldest Engine API the builder speaks: Docker Engine 26.0's
#: (https://docs.docker.com/reference/api/engine/#api-version-matrix). It embeds BuildKit 0.13,
#: the first with ``rewrite-timestamp`` (https://github.com/moby/buildkit/releases/tag/v0.13.0).
MINIMUM_API = Version("1.45")
#: The same floor as a Debian package version of ``docker.io``.
MINIMUM_PACKAGE = "26"
#: dockerd's default configuration file (https://docs.docker.com/reference/cli/dockerd/#daemon-configuration-file).
DAEMON_CONFIG = Path("/etc/docker/daemon.json")
#: What the builder writes there when the file does not exist: the containerd image store
#: (https://docs.docker.com/engine/storage/containerd/).
CONTAINERD_STORE = {"features": {"containerd-snapshotter": True}}
HOW_TO_UPGRADE = ("stop it and run the builder as root on Debian, which upgrades docker.io to Debian 13's, "
                  "or install Docker Engine >= 26 (https://docs.docker.com/engine/install/)")


def _ping() -> docker.DockerClient | None:
    try:
        c = docker.from_env(timeout=600)
        c.ping()
        return c
    except (DockerException, requests.RequestException, OSError):
        return None


def is_local(c: docker.DockerClient) -> bool:
    """True when ``c`` talks to an Engine on this machine (a unix socket), so its data root is a
    local path."""
    return c.api.base_url.startswith("http+docker://localhost") or c.api.base_url.startswith("http+unix://")


def data_root(c: docker.DockerClient) -> Path | None:
    """The Engine's data root (``GET /info`` DockerRootDir) as a local folder, or None when ``c``
    talks to an Engine elsewhere (another machine, or a socket from a VM or container whose data
    root is not a folder here)."""
    if not is_local(c):
        return None
    root = Path(c.info()["DockerRootDir"])
    return root if root.is_dir() else None


def containerd_store(c: docker.DockerClient) -> bool:
    """True when the Engine keeps images in containerd's image store (``docker info`` lists the
    storage driver's ``driver-type`` as ``io.containerd.snapshotter.v1``), False on the classic store."""
    status = dict(tuple(pair) for pair in c.info().get("DriverStatus") or [] if len(pair) == 2)
    return status.get("driver-type") == "io.containerd.snapshotter.v1"


def require_modern(c: docker.DockerClient) -> docker.DockerClient:
    """Return ``c`` when its Engine speaks API >= :data:`MINIMUM_API` (Docker Engine >= 26); raise
    EngineError naming the version found, the minimum and how to upgrade otherwise."""
    found = c.version()
    if Version(found.get("ApiVersion", "0")) < MINIMUM_API:
        raise EngineError(f"Docker Engine {found.get('Version', '?')} (API {found.get('ApiVersion', '?')}) answers; "
                          f"the builder needs Docker Engine >= 26 (API >= {MINIMUM_API}): {HOW_TO_UPGRADE}")
    return c


def client(state_dir: Path, timeout: float = 90.0) -> docker.DockerClient:
    """A docker-py client for an Engine >= 26 that answers, starting one if needed (see the module
    doc; dockerd's log goes to ``state_dir``/dockerd.log, ``state_dir`` being the build folder).

    ``timeout`` (seconds) bounds the wait for a started dockerd. Raises EngineError when the Engine
    that answers is older than 26, when none answers and one cannot be installed or started, or when
    a started one does not answer in time.
    """
    c = _ping()
    if c is not None:
        return require_modern(c)
    if os.environ.get("DOCKER_HOST"):
        raise EngineError(f"the Docker Engine at DOCKER_HOST={os.environ['DOCKER_HOST']} does not answer")
    if not can_provision():
        raise EngineError("no Docker Engine answers on the default socket; start Docker Engine >= 26 or set DOCKER_HOST")
    try:
        line = lines.chosen(os.environ)
    except lines.UnknownLine as exc:
        raise EngineError(str(exc)) from None
    files.claim_folder(state_dir)
    install(state_dir, line)
    if not DAEMON_CONFIG.exists():
        files.write_atomic(DAEMON_CONFIG, json.dumps(CONTAINERD_STORE, indent=2) + "\n")
    return require_modern(start(state_dir, timeout))


def install(state_dir: Path, choice: lines.Line | None = None) -> None:
    """Install an Engine line's packages (:class:`builder.engine.lines.Line`), downloaded into
    ``state_dir``/engine, when they are needed:

    - ``choice`` None (``BUILDER_ENGINE`` unset): unless a ``dockerd`` is there that is not
      Debian's ``docker.io`` older than 26, :data:`builder.engine.lines.DEFAULT` is installed (an
      older ``docker.io`` is upgraded in place);
    - a line: unless its ``docker.io`` and a containerd of its major are installed, or a ``dockerd``
      not from Debian's ``docker.io`` is (someone else's Engine, left alone).

    A containerd of another major than the line's is replaced (the 26.1 line's by Debian 12's,
    with ``--allow-downgrades``). Raises EngineError when the download or apt fails."""
    version = installed_version("docker.io")
    someone_elses = shutil.which("dockerd") is not None and version is None
    containerd_fits = choice is None or lines.containerd_fits(choice, installed_version("containerd"))
    if someone_elses or (choice is None and version_at_least(version or "0", MINIMUM_PACKAGE)):
        return
    if choice is not None and lines.of_version(version) is choice and containerd_fits:
        return
    choice = choice or lines.DEFAULT
    folder = files.make_folder(state_dir / "engine").resolve()
    debs = debian_suite.download(list(choice.packages), folder, suite=choice.suite)
    if not lines.containerd_fits(choice, installed_version("containerd")) and "containerd" not in choice.packages:
        debs += debian_suite.download(["containerd"], folder, suite=lines.BOOKWORM)
    apt_install(*(str(d) for d in debs), allow_downgrades=True)


def data_root_args(config: Path) -> list[str]:
    """dockerd's ``--data-root`` for the installed ``docker.io``'s line (none for the 26.1 line,
    whose root is dockerd's default, or for an Engine of no line), unless the configuration file
    ``config`` sets ``data-root`` itself (dockerd refuses a setting made twice). An unreadable or
    invalid file sets nothing here: dockerd says what is wrong with it."""
    line = lines.of_version(installed_version("docker.io"))
    if line is None or line.data_root is None:
        return []
    try:
        settings = json.loads(config.read_text()) if config.exists() else {}
    except (OSError, ValueError):
        settings = {}
    return [] if isinstance(settings, dict) and "data-root" in settings else ["--data-root", str(line.data_root)]


def start(state_dir: Path, timeout: float = 90.0, config: Path | None = None) -> docker.DockerClient:
    """Start ``dockerd`` in the background, with ``config`` as its configuration file (default: its
    own, :data:`DAEMON_CONFIG`) on its line's data root (:func:`data_root_args`), and wait up to
    ``timeout`` seconds for it to answer. Raises EngineError when it does not."""
    log = files.open_log(state_dir / "dockerd.log", append=True)
    cmd = ["dockerd", *(["--config-file", str(config)] if config else [])]
    cmd += data_root_args(config or DAEMON_CONFIG)
    subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c = _ping()
        if c is not None:
            return c
        time.sleep(1)
    raise EngineError(f"dockerd did not answer within {timeout:.0f} s; see {state_dir / 'dockerd.log'}")
