"""Engine access: the Docker Engine's client and the local services the builder starts. (Other
modules talk to the Engine through the client this gives; docs/architecture.md lists them.)

:func:`client` returns a docker-py client for a Docker Engine >= 26 that answers, installing and
starting one where it may (:mod:`builder.engine.daemon`). :func:`ensure_registry` does the same for a local
OCI distribution registry (Debian's ``docker-registry``) on 127.0.0.1:5000 with its storage under
registry/ in the build folder. Every function that writes takes the build folder; none has a default.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import docker

from builder import files
from builder.engine import registry as registry_api
from builder.engine.daemon import client, containerd_store, data_root, is_local, require_modern
from builder.engine.host import EngineError, apt_install, can_provision, installed
from builder.matrix.platform import PLATFORMS, Platform, of_machine

__all__ = ["EngineError", "apt_install", "can_provision", "client", "containerd_store", "data_root", "installed",
           "is_local", "require_modern"]

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
    root = files.make_folder(state_dir / "registry").resolve()  # checked before a link could be resolved
    files.make_folder(root / "data")
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


def native_platform(client: docker.DockerClient) -> Platform:
    """The platform the Engine runs natively (``linux/amd64`` on x86_64, ``linux/arm64`` on
    aarch64; the Engine's ``Architecture`` is ``uname -m``, :attr:`Platform.machine`): BuildKit's
    ``BUILDPLATFORM``, where uv cross-installs. Raises EngineError for an architecture the builder
    has no platform for."""
    arch = client.info().get("Architecture", "")
    try:
        return of_machine(arch)
    except ValueError:
        machines = ", ".join(p.machine for p in PLATFORMS.values())
        raise EngineError(f"the Engine runs on {arch!r}; the builder supports {machines}") from None


def emulation_ready(platform: Platform) -> bool:
    """True when the kernel runs ``platform``'s binaries through QEMU with the ``F`` flag (the
    interpreter opened at registration, so it works inside containers and chroots)."""
    handler = platform.qemu_handler
    if handler is None:
        return True
    entry = BINFMT / handler
    try:
        text = entry.read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("flags:")), "")
    return text.startswith("enabled") and "F" in flags


def ensure_emulation(platform: Platform) -> None:
    """Make ``platform`` (linux/arm64) binaries run on this machine under QEMU: on Debian as root,
    install ``qemu-user-static``, mount binfmt_misc when it is missing and register the handler with
    the ``F`` flag. Nothing to do for linux/amd64 or when a handler is already registered (for
    example by ``tonistiigi/binfmt``). Raises EngineError with one line saying what to run otherwise."""
    if emulation_ready(platform):
        return
    name, conf = platform.qemu_handler, BINFMT_D / f"{platform.qemu_handler}.conf"
    how = (f"register QEMU for it: on Debian as root `apt-get install qemu-user-static` and register "
           f"{conf} with the F flag, or on a machine that can pull "
           f"`docker run --privileged --rm tonistiigi/binfmt --install {platform.arch}`")
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
