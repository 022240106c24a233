"""Bases: takes the matrix's bases and gives each one's image on the Engine, by reference.

For each base: use the local image if present, else pull its reference, else (no registry
reachable) bootstrap it with ``debootstrap`` from its recipe, strip docs, man pages and apt lists,
and load it as ``builder-base/<key>:<recipe digest>`` — a changed recipe names a new base. The
Debian mirror comes from ``$BUILDER_APT_MIRROR`` or the machine's own apt sources; it is never
written into the repository.

A bootstrapped base is reproducible: the same recipe from the same mirror state gives the same image
id on any machine with the containerd image store, so a fresh runner that bootstraps its bases
computes the build ids the registry already has (:mod:`builder.run.build_id`) and BuildKit's registry
cache matches. ``SOURCE_DATE_EPOCH`` is the suite's ``Release`` date (:func:`release_epoch`):
debootstrap's package scripts date ``/etc/shadow`` from it, the records of when the bootstrap ran
(logs, ldconfig's aux-cache, dpkg's and debconf's backups, the host's hostname and resolver) are
removed or emptied, and the image is made by BuildKit with ``rewrite-timestamp``
(https://reproducible-builds.org/docs/source-date-epoch/). Measured: two bootstraps of bookworm
minbase differed, after that, in no file.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import docker
import requests
from docker.errors import APIError, ImageNotFound

from builder import engine, files
from builder.engine import images, plugins
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
#: Files that record when and where a bootstrap ran (globs relative to the root file system):
#: removed, so that two bootstraps of one recipe from one mirror state are the same.
RUN_RECORDS = ("var/log/bootstrap.log", "var/log/dpkg.log", "var/log/alternatives.log", "var/log/apt/*",
               "var/cache/ldconfig/aux-cache", "var/lib/dpkg/*-old", "var/cache/debconf/*-old")
#: Files debootstrap copies from the host: emptied (the Engine mounts its own over them in a container).
HOST_COPIES = ("etc/hostname", "etc/resolv.conf")
#: How a recipe becomes an image; a new format names new bases (2: reproducible, see the module doc).
BOOTSTRAP_FORMAT = 2
#: The most bytes of a suite's Release file read for its date.
MAX_RELEASE = 1 << 20


class BaseError(RuntimeError):
    """A base image could not be found, pulled or bootstrapped; the message says why."""


@dataclass(frozen=True)
class BaseImage:
    """A base ready on the Engine: ``ref`` is what FROM gets; ``how`` is local, pulled or bootstrapped."""

    key: str
    ref: str
    how: str


def bootstrap_ref(key: str, base: Base, platform: str = DEFAULT_PLATFORM) -> str:
    """The local tag of a bootstrapped base: ``builder-base/<key>:<12 hex>`` of the recipe digest
    and :data:`BOOTSTRAP_FORMAT`, ``builder-base/<key>-<arch>:...`` for a platform other than
    linux/amd64 (the Engine's image store keeps one platform per tag)."""
    tag = hashlib.sha256(f"{base.recipe_digest()}\n{BOOTSTRAP_FORMAT}".encode()).hexdigest()[:12]
    return f"builder-base/{key}{Platform.parse(platform).suffix}:{tag}"


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
        raise BaseError(f"cannot pull {ref}: {images.explained(exc)}") from None


def _exists(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
        return True
    except ImageNotFound:
        return False


def _strip(rootfs: Path) -> None:
    # Empty the STRIP folders (docs, man pages, apt lists), keep the folders apt needs, remove the
    # RUN_RECORDS and empty the HOST_COPIES.
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
    for pattern in RUN_RECORDS:
        for path in rootfs.glob(pattern):
            if path.is_file() or path.is_symlink():
                path.unlink()
    for rel in HOST_COPIES:
        if (rootfs / rel).is_file() and not (rootfs / rel).is_symlink():
            (rootfs / rel).write_bytes(b"")


def release_epoch(mirror: str, suite: str, get=requests.get) -> int:
    """The ``Date`` of ``mirror``'s ``dists/<suite>/Release`` as epoch seconds: the suite's state,
    the bootstrap's ``SOURCE_DATE_EPOCH``. The Date field is RFC 2822
    (https://wiki.debian.org/DebianRepository/Format#Date). Reads at most :data:`MAX_RELEASE`
    bytes. Raises BaseError (one line, never the mirror's URL, which may hold credentials) when the
    file cannot be read or has no such date."""
    where = f"the {suite} suite's Release file"
    try:
        with get(f"{mirror.rstrip('/')}/dists/{suite}/Release", stream=True, timeout=120) as r:
            r.raise_for_status()
            head = r.raw.read(MAX_RELEASE, decode_content=True)
    except (requests.RequestException, OSError) as exc:
        raise BaseError(f"{where} could not be read from the mirror ({type(exc).__name__})") from None
    for line in head.decode("utf-8", errors="replace").splitlines():
        if not line.strip():
            break  # the first paragraph holds the suite's fields
        if line.startswith("Date:"):
            try:
                return int(email.utils.parsedate_to_datetime(line[5:].strip()).timestamp())
            except (TypeError, ValueError):
                break
    raise BaseError(f"{where} has no RFC 2822 Date field in its first paragraph")


def bootstrap(client: docker.DockerClient, key: str, base: Base, workdir: Path,
              log: Callable[[str], None] = print, platform: str = DEFAULT_PLATFORM) -> str:
    """Bootstrap ``base`` for ``platform`` with debootstrap into ``workdir``/<key>[-<arch>], strip it,
    load it; return its ref.

    Another platform than the machine's is bootstrapped with ``--arch`` under QEMU user emulation
    (:func:`builder.engine.ensure_emulation`). Every platform is loaded by a BuildKit build for it
    (:func:`_load`), dated the suite's Release date (see the module doc). Needs root and Debian
    (debootstrap is installed from Debian's packages when missing). Raises BaseError, EngineError or
    subprocess.CalledProcessError (debootstrap's log is in ``workdir``).
    """
    if shutil.which("debootstrap") is None:
        engine.apt_install("debootstrap")
    engine.ensure_emulation(platform)
    pf = Platform.parse(platform)
    mirror = apt_mirror()
    epoch = release_epoch(mirror, base.bootstrap.suite)
    root = files.make_folder(workdir / f"{key}{pf.suffix}").resolve()  # checked before a link could be resolved
    rootfs = _debootstrap(key, base.bootstrap, pf.arch, mirror, root, log, epoch)
    _strip(rootfs)
    tarball = root / "rootfs.tar"
    subprocess.run(["tar", "--numeric-owner", "--sort=name", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
    ref = bootstrap_ref(key, base, platform)
    shutil.rmtree(rootfs)
    _load(client, tarball, ref, platform, epoch)
    tarball.unlink()
    if not _exists(client, ref):
        raise BaseError(f"loading the base did not produce {ref}")
    return ref


def _debootstrap(key: str, recipe: Bootstrap, arch: str, mirror: str, root: Path, log: Callable[[str], None],
                 epoch: int) -> Path:
    """Run debootstrap for ``recipe`` (suite, variant) on ``arch`` (Debian's name: amd64, arm64)
    from ``mirror`` into a fresh ``root``/rootfs, with ``SOURCE_DATE_EPOCH`` ``epoch``, and return
    that path; its output goes to ``root``/debootstrap.log. Raises BaseError when debootstrap exits
    non-zero."""
    rootfs = root / "rootfs"
    files.remove_tree(rootfs)
    files.make_folder(root)
    logfile = root / "debootstrap.log"
    log(f"debootstrap {recipe.suite} ({recipe.variant}, {arch}) for base {key}; log {logfile}")
    with files.open_log(logfile) as out:
        r = subprocess.run(["debootstrap", f"--arch={arch}", f"--variant={recipe.variant}", recipe.suite, str(rootfs),
                            mirror], stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "SOURCE_DATE_EPOCH": str(epoch)})
    if r.returncode != 0:
        raise BaseError(f"debootstrap exited {r.returncode}; see {logfile}")
    return rootfs


def _load(client: docker.DockerClient, tarball: Path, ref: str, platform: str, epoch: int) -> None:
    """Load ``tarball`` (a root file system, ``rootfs.tar``) into the Engine as ``ref``
    (``repository:tag``) by a BuildKit build for ``platform`` (``FROM scratch`` + ``ADD rootfs.tar
    /``, its Dockerfile written beside the tarball) with ``SOURCE_DATE_EPOCH`` ``epoch``: on the
    containerd image store an OCI archive with ``rewrite-timestamp``, then loaded (the reproducible
    path, as :mod:`builder.run.steps.build` explains), on the classic store ``--load``. The buildx
    plugin is put in place first (:func:`builder.engine.plugins.ensure_buildx`): `builder lock`, or
    a test, may bootstrap before any build. Raises BaseError with buildx's last 400 characters when
    that build fails, EngineError when buildx cannot be had."""
    root = tarball.parent
    plugins.ensure_buildx(root.parent.parent)  # its apt state in the build folder (<build dir>/bases/<key>)
    files.write_atomic(root / "Dockerfile", 'FROM scratch\nADD rootfs.tar /\nCMD ["/bin/bash"]\n')
    archive = root / "base.oci.tar"
    reproducible = engine.containerd_store(client)
    output = [f"--output=type=oci,dest={archive},name={ref},rewrite-timestamp=true"] if reproducible else ["--load", "--tag", ref]
    r = subprocess.run(["docker", "buildx", "build", "--platform", platform, "--build-arg", f"SOURCE_DATE_EPOCH={epoch}",
                        *output, str(root)], capture_output=True, text=True, env={**os.environ, **plugins.BUILDX_ENV})
    if r.returncode != 0:
        archive.unlink(missing_ok=True)
        raise BaseError(f"loading the {platform} base failed: {r.stderr.strip()[-400:]}")
    if reproducible:
        try:
            images.load(client, archive, ref)
        finally:
            archive.unlink(missing_ok=True)


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
