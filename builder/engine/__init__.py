"""Engine access: the one place that talks to the Docker Engine and starts local services.

:func:`client` returns a docker-py client for an Engine that answers — the one ``DOCKER_HOST``
names, or the default local socket. When none answers and the machine is Debian and we are root,
it installs ``docker.io`` from Debian's packages and starts ``dockerd`` in the background (log in
dockerd.log in the build folder, ``state_dir``). :func:`ensure_registry` does the same for a local
OCI distribution registry (Debian's ``docker-registry``) on 127.0.0.1:5000 with its storage under
registry/ in the build folder. Every function that writes takes the build folder; none has a default.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import docker
import requests
from docker.errors import DockerException

from builder import files
from builder.engine import registry as registry_api
from builder.matrix.platform import PLATFORMS, Platform, of_machine


class EngineError(RuntimeError):
    """No Docker Engine or registry could be reached or started; the message says what to do."""


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


def can_provision() -> bool:
    """True where the builder installs what is missing itself: as root on Debian with apt."""
    return os.geteuid() == 0 and Path("/etc/debian_version").exists() and shutil.which("apt-get") is not None


def installed(package: str) -> bool:
    """True when dpkg has ``package`` installed (status ``install ok installed``; a removed package
    whose configuration files remain does not count)."""
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return r.returncode == 0 and r.stdout.strip() == "install ok installed"


def apt_install(*packages: str) -> None:
    """Install Debian packages (as root) unless all are already installed.

    Raises EngineError when not root on Debian, or when apt-get fails (its output is included).
    """
    missing = [p for p in packages if not installed(p)]
    if not missing:
        return
    if not can_provision():
        raise EngineError(f"{', '.join(missing)} not installed, and this is not a Debian machine "
                          "where I am root: install them and try again")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *missing]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise EngineError(f"{' '.join(cmd)} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")


def client(state_dir: Path, timeout: float = 90.0) -> docker.DockerClient:
    """A docker-py client for an Engine that answers, starting one if needed (see module doc; its
    log goes to ``state_dir``/dockerd.log, ``state_dir`` being the build folder).

    ``timeout`` (seconds) bounds the wait for a started dockerd. Raises EngineError when no Engine
    answers and one cannot be started, or when a started one does not answer in time.
    """
    c = _ping()
    if c is not None:
        return c
    if os.environ.get("DOCKER_HOST"):
        raise EngineError(f"the Docker Engine at DOCKER_HOST={os.environ['DOCKER_HOST']} does not answer")
    if not can_provision():
        raise EngineError("no Docker Engine answers on the default socket; start one or set DOCKER_HOST")
    if shutil.which("dockerd") is None:
        apt_install("docker.io")
    files.claim_folder(state_dir)
    log = files.open_log(state_dir / "dockerd.log", append=True)
    subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c = _ping()
        if c is not None:
            return c
        time.sleep(1)
    raise EngineError(f"dockerd did not answer within {timeout:.0f} s; see {state_dir / 'dockerd.log'}")


LOCAL_REGISTRY = "127.0.0.1:5000"


def registry_answers(registry: str, timeout: float = 3.0) -> bool:
    """True when ``registry`` (``host:port[/namespace]``) answers the distribution API's base route
    (:func:`builder.engine.registry.answers`)."""
    return registry_api.answers(registry_api.host_of(registry), timeout)


def ensure_registry(state_dir: Path, timeout: float = 30.0) -> str:
    """Make sure a registry answers on 127.0.0.1:5000, starting Debian's ``docker-registry``.

    Storage goes to ``state_dir``/registry/data, its log to ``state_dir``/registry/registry.log.
    Returns ``"127.0.0.1:5000"``. Raises EngineError when it cannot be installed or does not answer
    within ``timeout`` seconds.
    """
    if registry_answers(LOCAL_REGISTRY):
        return LOCAL_REGISTRY
    if shutil.which("docker-registry") is None:
        apt_install("docker-registry")
    files.claim_folder(state_dir)
    root = (state_dir / "registry").resolve()
    (root / "data").mkdir(parents=True, exist_ok=True)
    config = root / "config.yml"
    files.write_atomic(
        config, "version: 0.1\n"
        "log: {level: info}\n"
        f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: '{LOCAL_REGISTRY}'}}\n"
    )
    log = files.open_log(root / "registry.log", append=True)
    subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
                     start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if registry_answers(LOCAL_REGISTRY):
            return LOCAL_REGISTRY
        time.sleep(0.5)
    raise EngineError(f"the local registry did not answer within {timeout:.0f} s; see {root / 'registry.log'}")


#: Where the kernel lists binfmt_misc handlers (https://docs.kernel.org/admin-guide/binfmt-misc.html).
BINFMT = Path("/proc/sys/fs/binfmt_misc")
#: Where Debian's qemu-user-static keeps each handler's registration (``<handler>.conf``).
BINFMT_D = Path("/usr/lib/binfmt.d")


def native_platform(client: docker.DockerClient) -> str:
    """The platform the Engine runs natively (``linux/amd64`` on x86_64, ``linux/arm64`` on
    aarch64; the Engine's ``Architecture`` is ``uname -m``, :attr:`Platform.machine`): BuildKit's
    ``BUILDPLATFORM``, where uv cross-installs. Raises EngineError for an architecture the builder
    has no platform for."""
    arch = client.info().get("Architecture", "")
    try:
        return of_machine(arch).name
    except ValueError:
        machines = ", ".join(p.machine for p in PLATFORMS.values())
        raise EngineError(f"the Engine runs on {arch!r}; the builder supports {machines}") from None


def emulation_ready(platform: str) -> bool:
    """True when the kernel runs ``platform``'s binaries through QEMU with the ``F`` flag (the
    interpreter opened at registration, so it works inside containers and chroots)."""
    handler = Platform.parse(platform).qemu_handler
    if handler is None:
        return True
    entry = BINFMT / handler
    try:
        text = entry.read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("flags:")), "")
    return text.startswith("enabled") and "F" in flags


def ensure_emulation(platform: str) -> None:
    """Make ``platform`` (linux/arm64) binaries run on this machine under QEMU: on Debian as root,
    install ``qemu-user-static``, mount binfmt_misc when it is missing and register the handler with
    the ``F`` flag. Nothing to do for linux/amd64 or when a handler is already registered (for
    example by ``tonistiigi/binfmt``). Raises EngineError with one line saying what to run otherwise."""
    if emulation_ready(platform):
        return
    pf = Platform.parse(platform)
    name, conf = pf.qemu_handler, BINFMT_D / f"{pf.qemu_handler}.conf"
    how = (f"register QEMU for it: on Debian as root `apt-get install qemu-user-static` and register "
           f"{conf} with the F flag, or on a machine that can pull "
           f"`docker run --privileged --rm tonistiigi/binfmt --install {pf.arch}`")
    if not can_provision():
        raise EngineError(f"{platform} images need QEMU user emulation, which is not registered; {how}")
    apt_install("qemu-user-static")
    if not (BINFMT / "register").exists():
        r = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], capture_output=True, text=True)
        if r.returncode != 0:
            raise EngineError(f"cannot mount binfmt_misc ({r.stderr.strip()}); {how}")
    rule = conf.read_text().strip().splitlines()[-1]
    fields = rule.split(":")  # :name:type:offset:magic:mask:interpreter:flags
    fields[-1] = "".join(sorted(set(fields[-1]) | {"F"}))
    if (BINFMT / name).exists():  # registered without F, or disabled: register it again
        (BINFMT / name).write_text("-1")
    try:
        (BINFMT / "register").write_text(":".join(fields))
    except OSError as exc:
        raise EngineError(f"cannot register {name} with binfmt_misc ({exc.strerror}); {how}") from None
    if not emulation_ready(platform):
        raise EngineError(f"{name} is registered but not enabled with the F flag; {how}")
