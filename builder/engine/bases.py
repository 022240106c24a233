"""Bases: takes the matrix's bases and gives each one's image on the Engine, by reference.

For each base: use the local image if present, else pull its reference, else (no registry
reachable) bootstrap it with ``debootstrap`` from its recipe, strip docs, man pages and apt lists,
and ``docker import`` it as ``builder-base/<key>:<recipe digest>`` — a changed recipe names a new
base. The Debian mirror comes from ``$BUILDER_APT_MIRROR`` or the machine's own apt sources; it is
never written into the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import docker
from docker.errors import APIError, ImageNotFound

from builder import engine, files
from builder.engine import plugins
from builder.engine.sources import apt_mirror
from builder.matrix.compat import DEFAULT_PLATFORM
from builder.matrix.inputs import ConfigError
from builder.matrix.platform import Platform, oci_name
from builder.matrix.schema import Base, Bootstrap

Source = Literal["auto", "pull", "bootstrap"]

# Paths removed from a bootstrapped root file system (relative to it): documentation and caches
# that slim images drop too (see debian:bookworm-slim's own excludes).
STRIP = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "var/cache/apt",
         "var/lib/apt/lists")
# Directories apt expects to exist, recreated empty after stripping.
KEEP_DIRS = ("var/cache/apt/archives/partial", "var/lib/apt/lists/partial")


class BaseError(RuntimeError):
    """A base image could not be found, pulled or bootstrapped; the message says why."""


@dataclass(frozen=True)
class BaseImage:
    """A base ready on the Engine: ``ref`` is what FROM gets; ``how`` is local, pulled or bootstrapped."""

    key: str
    ref: str
    how: str


def bootstrap_ref(key: str, base: Base, platform: str = DEFAULT_PLATFORM) -> str:
    """The local tag of a bootstrapped base: ``builder-base/<key>:<12 hex of the recipe digest>``,
    ``builder-base/<key>-<arch>:...`` for a platform other than linux/amd64 (the Engine's image
    store keeps one platform per tag)."""
    return f"builder-base/{key}{Platform.parse(platform).suffix}:{base.recipe_digest()}"


def platform_of(client: docker.DockerClient, ref: str) -> str | None:
    """``os/architecture`` of a local image, or None when there is none."""
    try:
        attrs = client.images.get(ref).attrs
    except ImageNotFound:
        return None
    return oci_name(attrs.get("Os", "linux"), attrs.get("Architecture", "amd64"), attrs.get("Variant"))


def ensure(client: docker.DockerClient, key: str, base: Base, source: Source, workdir: Path,
           log: Callable[[str], None] = print,
           platform: str = DEFAULT_PLATFORM) -> BaseImage:
    """Make base ``key`` available for ``platform`` and return it: a local image of that platform,
    else a pull of that platform (kept under :func:`bootstrap_ref`'s name for another platform than
    linux/amd64, so the pull reference keeps naming the amd64 image), else a bootstrap. Raises
    BaseError when every allowed way failed."""
    ref = bootstrap_ref(key, base, platform)
    pulled_ref = base.pull if platform == DEFAULT_PLATFORM else ref
    if source in ("auto", "pull") and platform_of(client, pulled_ref) == platform:
        return BaseImage(key, pulled_ref, "local")
    if source in ("auto", "bootstrap") and platform_of(client, ref) == platform:
        return BaseImage(key, ref, "local")
    errors = []
    if source in ("auto", "pull"):
        try:
            log(f"pulling base {base.pull} ({platform})")
            image = client.images.pull(base.pull, platform=platform)
            if platform != DEFAULT_PLATFORM:
                image.tag(*ref.rsplit(":", 1))
                client.images.pull(base.pull, platform=DEFAULT_PLATFORM)  # the pull reference names amd64 again
            return BaseImage(key, pulled_ref, "pulled")
        except (APIError, docker.errors.DockerException) as exc:
            errors.append(f"pull {base.pull}: {exc}")
            if source == "pull":
                raise BaseError(f"base {key}: {errors[-1]}") from None
            log(f"pull failed, bootstrapping base {key} ({platform}) instead")
    try:
        bootstrap(client, key, base, workdir, log, platform)
    except (BaseError, ConfigError, engine.EngineError, OSError, subprocess.CalledProcessError) as exc:
        errors.append(f"bootstrap: {exc}")
        raise BaseError(f"base {key} ({platform}): " + "; ".join(errors)) from None
    return BaseImage(key, ref, "bootstrapped")


def ensure_pulled(client: docker.DockerClient, ref: str) -> None:
    """Make ``ref`` present, pulling it when missing. Raises BaseError when the pull fails."""
    if _exists(client, ref):
        return
    try:
        client.images.pull(ref)
    except docker.errors.DockerException as exc:
        raise BaseError(f"cannot pull {ref}: {exc}") from None


def _exists(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
        return True
    except ImageNotFound:
        return False


def _strip(rootfs: Path) -> None:
    # Empty the STRIP folders (docs, man pages, apt lists), keep the folders apt needs.
    for rel in STRIP:
        target = rootfs / rel
        if target.is_dir():
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    for rel in KEEP_DIRS:
        (rootfs / rel).mkdir(parents=True, exist_ok=True)


def bootstrap(client: docker.DockerClient, key: str, base: Base, workdir: Path,
              log: Callable[[str], None] = print, platform: str = DEFAULT_PLATFORM) -> str:
    """Bootstrap ``base`` for ``platform`` with debootstrap into ``workdir``/<key>[-<arch>], strip it,
    load it; return its ref.

    linux/amd64 is imported (``docker import``). Another platform is bootstrapped with ``--arch``
    under QEMU user emulation (:func:`builder.engine.ensure_emulation`) and loaded by a BuildKit build
    for that platform (``FROM scratch`` + ``ADD rootfs.tar /``), so its image config names the
    platform (``docker import --platform`` on Engine 20.10 leaves it amd64). Needs root and Debian
    (debootstrap is installed from Debian's packages when missing). Raises BaseError, EngineError or
    subprocess.CalledProcessError (debootstrap's log is in ``workdir``).
    """
    if shutil.which("debootstrap") is None:
        engine.apt_install("debootstrap")
    engine.ensure_emulation(platform)
    pf = Platform.parse(platform)
    mirror = apt_mirror()
    root = (workdir / f"{key}{pf.suffix}").resolve()
    rootfs = _debootstrap(key, base.bootstrap, pf.arch, mirror, root, log)
    _strip(rootfs)
    tarball = root / "rootfs.tar"
    subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
    ref = bootstrap_ref(key, base, platform)
    shutil.rmtree(rootfs)
    _load(client, tarball, ref, platform)
    tarball.unlink()
    if not _exists(client, ref):
        raise BaseError(f"docker import did not produce {ref}")
    return ref


def _debootstrap(key: str, recipe: Bootstrap, arch: str, mirror: str, root: Path, log: Callable[[str], None]) -> Path:
    """Run debootstrap for ``recipe`` (suite, variant) on ``arch`` (Debian's name: amd64, arm64)
    from ``mirror`` into a fresh ``root``/rootfs and return that path; its output goes to
    ``root``/debootstrap.log. Raises BaseError when debootstrap exits non-zero."""
    rootfs = root / "rootfs"
    if rootfs.exists():
        shutil.rmtree(rootfs)
    root.mkdir(parents=True, exist_ok=True)
    logfile = root / "debootstrap.log"
    log(f"debootstrap {recipe.suite} ({recipe.variant}, {arch}) for base {key}; log {logfile}")
    with files.open_log(logfile) as out:
        r = subprocess.run(["debootstrap", f"--arch={arch}", f"--variant={recipe.variant}", recipe.suite, str(rootfs),
                            mirror], stdout=out, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise BaseError(f"debootstrap exited {r.returncode}; see {logfile}")
    return rootfs


def _load(client: docker.DockerClient, tarball: Path, ref: str, platform: str) -> None:
    """Load ``tarball`` (a root file system, ``rootfs.tar``) into the Engine as ``ref``
    (``repository:tag``): ``docker import`` for linux/amd64, else a BuildKit build for ``platform``
    (``FROM scratch`` + ``ADD rootfs.tar /``, its Dockerfile written beside the tarball; the buildx
    plugin is put in place first, :func:`builder.engine.plugins.ensure_buildx`). Raises BaseError
    with buildx's last 400 characters when that build fails, EngineError when buildx cannot be had."""
    repo, tag = ref.rsplit(":", 1)
    root = tarball.parent
    if platform == DEFAULT_PLATFORM:
        client.api.import_image_from_file(str(tarball), repository=repo, tag=tag, changes=['CMD ["/bin/bash"]'])
    else:
        # buildx may not be there yet (`builder lock`, or a test, bootstraps before any build): put it
        # in place, its apt state in the build folder the bases folder is in (<build dir>/bases).
        plugins.ensure_buildx(root.parent.parent)
        files.write_atomic(root / "Dockerfile", 'FROM scratch\nADD rootfs.tar /\nCMD ["/bin/bash"]\n')
        r = subprocess.run(["docker", "buildx", "build", "--platform", platform, "--load", "--tag", ref, str(root)],
                           capture_output=True, text=True, env={**os.environ, **plugins.BUILDX_ENV})
        if r.returncode != 0:
            raise BaseError(f"loading the {platform} base failed: {r.stderr.strip()[-400:]}")


def for_roots(client: docker.DockerClient, bases: dict[str, Base], roots: list, source: Source, workdir: Path,
              log: Callable[[str, str], None], build_platform: str = DEFAULT_PLATFORM) -> dict[tuple[str, str], str]:
    """The FROM reference of each root image (``ImageSpec`` without a parent) per platform, by
    ``(image name, platform)``: its base (local, pulled or bootstrapped, once per base and
    platform), or its CUDA image (pulled as it is, never bootstrapped), for each of the image's
    platforms and for ``build_platform`` (the build stage, where uv runs, is of that platform).
    ``log(image name, line)`` reports what happened. Raises BaseError."""
    refs: dict[tuple[str, str], str] = {}
    by_base: dict[tuple[str, str], str] = {}
    for spec in roots:
        for platform in dict.fromkeys((*spec.platforms, build_platform)):
            if spec.from_cuda_image:
                ensure_pulled(client, spec.base_image)
                refs[spec.name, platform] = spec.base_image
                continue
            if (spec.base, platform) not in by_base:
                b = ensure(client, spec.base, bases[spec.base], source, workdir, log=lambda m, n=spec.name: log(n, m),
                           platform=platform)
                by_base[spec.base, platform] = b.ref
                log(spec.name, f"base {spec.base} ({platform}): {b.ref} ({b.how})")
            refs[spec.name, platform] = by_base[spec.base, platform]
    return refs
