"""Bases: takes the matrix's bases and gives each one's image on the Engine, by reference.

For each base: use the local image if present, else pull its reference, else (no registry
reachable) bootstrap it with ``debootstrap`` from its recipe, bring it to its base lock's versions
from the release and its ``-updates`` and ``-security`` suites (:mod:`builder.generate.base_lock`),
strip docs, man pages and apt lists, and load it as ``builder-base/<key>:<digest>`` of the recipe
and the lock — a changed recipe or lock names a new base. The image's apt sources name the three
suites, so every apt step on it sees security updates. The mirrors come from the environment or the
machine's own apt sources (:class:`builder.engine.debian_index.Archive`); they are never written
into the repository.

A bootstrapped base is reproducible: the same recipe from the same mirror state gives the same image
id on any machine with the containerd image store, so a fresh runner that bootstraps its bases
computes the build ids the registry already has (:mod:`builder.run.build_id`) and BuildKit's registry
cache matches. ``SOURCE_DATE_EPOCH`` is the lock's date, the newest ``InRelease`` Date of the
three suites when the lock was made:
debootstrap's package scripts date ``/etc/shadow`` from it, the records of when the bootstrap ran
(logs, ldconfig's aux-cache, dpkg's and debconf's backups, the host's hostname and resolver) are
removed or emptied, and the image is made by BuildKit with ``rewrite-timestamp``
(https://reproducible-builds.org/docs/source-date-epoch/). Measured: two bootstraps of bookworm
minbase differed, after that, in no file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import docker
from docker.errors import APIError, ImageNotFound

from builder import engine, files
from builder.engine import debian_index, export, images, plugins
from builder.matrix.inputs import ConfigError
from builder.matrix.platform import DEFAULT, Platform, oci_name
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
#: How a recipe becomes an image; a new format names new bases (2: reproducible, see the module doc;
#: 3: brought to a base lock from the release, -updates and -security suites).
BOOTSTRAP_FORMAT = 3
#: apt's sources in a bootstrapped base (deb822, the name Debian's own images use).
SOURCES = "etc/apt/sources.list.d/debian.sources"
#: Keeps package scripts from starting services in the chroot (invoke-rc.d's policy, exit 101: refused).
POLICY_RC = "usr/sbin/policy-rc.d"


class BaseError(RuntimeError):
    """A base image could not be found, pulled or bootstrapped; the message says why."""


@dataclass(frozen=True)
class BaseImage:
    """A base ready on the Engine: ``ref`` is what FROM gets; ``how`` is local, pulled or bootstrapped."""

    key: str
    ref: str
    how: str


@dataclass(frozen=True)
class Pins:
    """What a base is brought to: ``versions`` ``{package: version}`` of every Debian package, and
    ``date`` (epoch seconds), its ``SOURCE_DATE_EPOCH`` (a base lock's,
    :mod:`builder.generate.base_lock`)."""

    versions: dict[str, str]
    date: int

    @property
    def digest(self) -> str:
        """sha256 (hex) of the sorted ``name=version`` lines and the date."""
        lines = "".join(f"{n}={v}\n" for n, v in sorted(self.versions.items()))
        return hashlib.sha256(f"{lines}{self.date}\n".encode()).hexdigest()


@dataclass(frozen=True)
class Bootstrapped:
    """A base bootstrapped and loaded: ``ref``, the ``versions`` dpkg has, the ``index`` (the
    release's suites as apt fetched them in the bootstrap) and its ``date`` (epoch seconds)."""

    ref: str
    versions: dict[str, str]
    index: debian_index.Index
    date: int


def bootstrap_ref(key: str, base: Base, platform: Platform = DEFAULT, pins: Pins | None = None) -> str:
    """The local tag of a bootstrapped base: ``builder-base/<key>:<12 hex>`` of the recipe digest,
    :data:`BOOTSTRAP_FORMAT` and the ``pins``' digest (``unlocked`` without), ``builder-base/<key>-<arch>:...``
    for a platform other than linux/amd64 (the Engine's image store keeps one platform per tag)."""
    pinned = pins.digest if pins else "unlocked"
    tag = hashlib.sha256(f"{base.recipe_digest()}\n{BOOTSTRAP_FORMAT}\n{pinned}".encode()).hexdigest()[:12]
    return f"builder-base/{key}{platform.suffix}:{tag}"


def platform_of(client: docker.DockerClient, ref: str) -> str | None:
    """``os/architecture`` of a local image, or None when there is none."""
    try:
        attrs = client.images.get(ref).attrs
    except ImageNotFound:
        return None
    return oci_name(attrs.get("Os", "linux"), attrs.get("Architecture", "amd64"), attrs.get("Variant"))


def ensure(client: docker.DockerClient, key: str, base: Base, source: Source, workdir: Path,
           log: Callable[[str], None] = print,
           platform: Platform = DEFAULT, pins: Pins | None = None) -> BaseImage:
    """Make base ``key`` available for ``platform`` and return it: a local image of that platform,
    else a pull of that platform (kept under :func:`bootstrap_ref`'s name for another platform than
    linux/amd64, so the pull reference keeps naming the amd64 image), else a bootstrap at ``pins``
    (the suites' newest without). Raises BaseError when every allowed way failed."""
    ref = bootstrap_ref(key, base, platform, pins)
    pulled_ref = base.pull if platform == DEFAULT else ref
    if source in ("auto", "pull") and platform_of(client, pulled_ref) == platform.name:
        return BaseImage(key, pulled_ref, "local")
    if source in ("auto", "bootstrap") and platform_of(client, ref) == platform.name:
        return BaseImage(key, ref, "local")
    errors = []
    if source in ("auto", "pull"):
        try:
            log(f"pulling base {base.pull} ({platform})")
            image = client.images.pull(base.pull, platform=platform.name)
            if platform != DEFAULT:
                image.tag(*ref.rsplit(":", 1))
                client.images.pull(base.pull, platform=DEFAULT.name)  # the pull reference names amd64 again
            return BaseImage(key, pulled_ref, "pulled")
        except (APIError, docker.errors.DockerException) as exc:
            errors.append(f"pull {base.pull}: {exc}")
            if source == "pull":
                raise BaseError(f"base {key}: {errors[-1]}") from None
            log(f"pull failed, bootstrapping base {key} ({platform}) instead")
    try:
        ref = bootstrap(client, key, base, workdir, log, platform, pins).ref
    except (BaseError, ConfigError, engine.EngineError, debian_index.IndexUnavailable, OSError,
            subprocess.CalledProcessError) as exc:
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


def bootstrap(client: docker.DockerClient, key: str, base: Base, workdir: Path,
              log: Callable[[str], None] = print, platform: Platform = DEFAULT,
              pins: Pins | None = None, exact: bool = True) -> Bootstrapped:
    """Bootstrap ``base`` for ``platform`` with debootstrap into ``workdir``/<key>[-<arch>], bring it
    to ``pins`` (without: the suites' newest versions, dated by the suites' indexes; :func:`_bring_to`),
    strip it and load it as :func:`bootstrap_ref` of what it holds.

    ``exact`` (the default) fails unless dpkg then has exactly ``pins``' versions; without it
    (``builder refresh``) apt may add or move what the pinned versions need. Another platform than
    the machine's is bootstrapped with ``--arch`` under QEMU user emulation
    (:func:`builder.engine.ensure_emulation`). Every platform is loaded by a BuildKit build for it
    (:func:`_load`), dated by the pins (see the module doc). Needs root and Debian (debootstrap is
    installed from Debian's packages when missing). Raises BaseError (a pinned version the mirror no
    longer serves: one line naming it and `builder refresh`), EngineError, IndexUnavailable,
    ConfigError or subprocess.CalledProcessError (debootstrap's log is in ``workdir``).
    """
    if shutil.which("debootstrap") is None:
        engine.apt_install("debootstrap")
    engine.ensure_emulation(platform)
    archive = debian_index.Archive.of(base.bootstrap.suite)
    root = files.make_folder(workdir / f"{key}{platform.suffix}").resolve()  # checked before a link could be resolved
    epoch = pins.date if pins else debian_index.fetch(archive, platform.arch, root / "index").date
    rootfs = _debootstrap(key, base.bootstrap, platform.arch, archive.mirror, root, log, epoch)
    versions = _bring_to(rootfs, archive, key, platform, pins, epoch)
    if exact and pins and versions != pins.versions:
        raise BaseError(f"base {key} ({platform}): the bootstrap holds {_difference(pins.versions, versions)}, "
                        "not its lock's versions; run `builder refresh`")
    index = debian_index.read(rootfs / "var/lib/apt/lists", archive.suites, platform.arch)
    if pins is None and index.date != epoch:
        raise BaseError(f"base {key} ({platform}): the suites moved while bootstrapping; run again")
    _strip(rootfs)
    tarball = root / "rootfs.tar"
    subprocess.run(["tar", "--numeric-owner", "--sort=name", "--one-file-system", "-C", str(rootfs), "-cf", str(tarball),
                    "."], check=True)
    ref = bootstrap_ref(key, base, platform, Pins(versions, epoch))
    shutil.rmtree(rootfs)
    _load(client, tarball, ref, platform, epoch)
    tarball.unlink()
    if not _exists(client, ref):
        raise BaseError(f"loading the base did not produce {ref}")
    return Bootstrapped(ref, versions, index, epoch)


def _difference(want: dict[str, str], got: dict[str, str]) -> str:
    # The first few entries where ``got`` differs from ``want`` (``{package: version}``), for the error line.
    extra = sorted(f"{n}={v}" for n, v in got.items() if want.get(n) != v)
    missing = sorted(f"{n}={v}" for n, v in want.items() if got.get(n) != v)
    return ", ".join([*(f"+{p}" for p in extra[:3]), *(f"-{p}" for p in missing[:3])]) or "other suites"


def _bring_to(rootfs: Path, archive: debian_index.Archive, key: str, platform: Platform, pins: Pins | None,
              epoch: int) -> dict[str, str]:
    """Point ``rootfs``'s apt at the three suites (:data:`SOURCES`, the URLs without user
    information: a credential never enters an image), then in a chroot (``/proc`` mounted, services
    held back by :data:`POLICY_RC`, apt reading the sources as configured from a temporary list)
    ``apt-get update`` and install ``pins``' exact versions (downgrades allowed), or upgrade every
    package to its newest without pins. Returns ``{package: version}`` of what dpkg then has; raises
    BaseError when apt fails (a pinned version the mirror no longer serves: one line naming it) or
    ``/proc`` cannot be unmounted."""
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)  # debootstrap's, naming the mirror as given
    files.write_atomic(rootfs / SOURCES, archive.sources(public=True))
    files.write_atomic(rootfs / CHROOT_SOURCES, archive.sources())
    files.write_atomic(rootfs / POLICY_RC, "#!/bin/sh\nexit 101\n", mode=files.EXEC_MODE)
    files.write_atomic(rootfs / PINS, "".join(f"{n}={v}\n" for n, v in sorted(pins.versions.items())) if pins else "")
    r = _chroot(rootfs, _script(pins is None), epoch)
    with files.open_log(rootfs.parent / "apt.log") as out:
        out.write(archive.redact(r.stdout + r.stderr).encode())
    if r.returncode != 0:
        missing = debian_index.missing_version(r.stdout + r.stderr)
        if missing:
            raise BaseError(f"{missing[0]}={missing[1]} (base {key}, {platform}) is no longer served by the mirror; "
                            "run `builder refresh`")
        said = archive.redact(r.stderr.strip() or r.stdout.strip())
        raise BaseError(f"apt in the {key} bootstrap ({platform}) failed: {said[-300:]}")
    r = subprocess.run(["dpkg-query", f"--admindir={rootfs / 'var/lib/dpkg'}", "-W", "-f",
                        "${db:Status-Abbrev} ${Package}=${Version}\n"], capture_output=True, text=True, check=True)
    return debian_index.pins([line[3:].strip() for line in r.stdout.splitlines() if line.startswith("ii ")],
                             f"dpkg's status in the {key} bootstrap")


#: The chroot's temporary files: apt's sources as configured (credentials included) and the pins.
CHROOT_SOURCES, PINS = "tmp/builder.sources", "tmp/base.lock"


def _script(newest: bool) -> str:
    # The chroot's steps. ``newest``: every package to its newest version first. Either way the last
    # step installs every package dpkg then has at its version, so each is marked installed by hand,
    # whichever way it got there, and a base made from a lock later went through the same steps.
    apt = f"apt-get -q -o Dir::Etc::SourceList=/{CHROOT_SOURCES} -o Dir::Etc::SourceParts=/dev/null"
    every = f"dpkg-query -W -f '${{db:Status-Abbrev}} ${{Package}}=${{Version}}\\n' | sed -n 's/^ii *//p' > /{PINS}"
    install = f"xargs -a /{PINS} {apt} install -y --no-install-recommends --allow-downgrades"
    first = f"{apt} upgrade -y --with-new-pkgs" if newest else install
    return f"{apt} update && {first} && {every} && {install} && {apt} clean"


def _chroot(rootfs: Path, script: str, epoch: int) -> subprocess.CompletedProcess:
    # ``script`` in a chroot of ``rootfs`` with /proc mounted, then unmounted (BaseError when it
    # cannot be: the folder is not archived or removed with the host's /proc inside) and the
    # temporary files removed.
    proc = rootfs / "proc"
    subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
    try:
        return subprocess.run(["chroot", str(rootfs), "sh", "-euc", script], capture_output=True, text=True,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
                                   "LC_ALL": "C", "SOURCE_DATE_EPOCH": str(epoch)})
    finally:
        _unmount(proc)
        for rel in (POLICY_RC, CHROOT_SOURCES, PINS):
            (rootfs / rel).unlink(missing_ok=True)


def _unmount(path: Path) -> None:
    # Unmount ``path`` when it is a mount point (lazily when busy); BaseError when it stays one.
    if os.path.ismount(path):
        subprocess.run(["umount", str(path)], check=False, capture_output=True)
    if os.path.ismount(path):
        subprocess.run(["umount", "--lazy", str(path)], check=False, capture_output=True)
    if os.path.ismount(path):
        raise BaseError(f"{path} stays mounted; unmount it by hand")


def _debootstrap(key: str, recipe: Bootstrap, arch: str, mirror: str, root: Path, log: Callable[[str], None],
                 epoch: int) -> Path:
    """Run debootstrap for ``recipe`` (suite, variant) on ``arch`` (Debian's name: amd64, arm64)
    from ``mirror`` into a fresh ``root``/rootfs, with ``SOURCE_DATE_EPOCH`` ``epoch``, and return
    that path; its output goes to ``root``/debootstrap.log. Raises BaseError when debootstrap exits
    non-zero."""
    rootfs = root / "rootfs"
    if rootfs.exists():
        _unmount(rootfs / "proc")  # a run killed in its chroot left it mounted
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


def _load(client: docker.DockerClient, tarball: Path, ref: str, platform: Platform, epoch: int) -> None:
    """Load ``tarball`` (a root file system, ``rootfs.tar``) into the Engine as ``ref``
    (``repository:tag``) by a BuildKit build for ``platform`` (``FROM scratch`` + ``ADD rootfs.tar
    /``, its Dockerfile written beside the tarball) with ``SOURCE_DATE_EPOCH`` ``epoch``, stored
    reproducibly as :mod:`builder.engine.export` explains. The buildx plugin is put in place first
    (:func:`builder.engine.plugins.ensure_buildx`): `builder lock`, or a test, may bootstrap before
    any build. Raises BaseError with buildx's last error line when that build fails (or what
    the Engine said when it refused the image), EngineError when buildx cannot be had."""
    root = tarball.parent
    plugins.ensure_buildx(root.parent.parent)  # its apt state in the build folder (<build dir>/bases/<key>)
    files.write_atomic(root / "Dockerfile", 'FROM scratch\nADD rootfs.tar /\nCMD ["/bin/bash"]\n')
    reproducible = engine.containerd_store(client)
    cmd = ["docker", "buildx", "build", "--platform", platform.name, "--build-arg", f"SOURCE_DATE_EPOCH={epoch}",
           f"--output={export.output(ref, reproducible)}", str(root)]
    said: list[str] = []
    done = export.run(cmd, root, {**os.environ, **plugins.BUILDX_ENV}, said.append, client if reproducible else None)
    if done.start_error:
        raise BaseError(f"loading the {platform} base failed: cannot run docker buildx: {done.start_error}")
    if done.code != 0:
        errors = [line for line in said if line.startswith("ERROR")] or [line for line in said if line.strip()] or [""]
        raise BaseError(f"loading the {platform} base failed: {errors[-1].strip()[-400:]}")
    if done.load_error:
        raise BaseError(f"loading the {platform} base failed: docker load refused it: {done.load_error}")


def for_roots(client: docker.DockerClient, bases: dict[str, Base], roots: list, source: Source, workdir: Path,
              log: Callable[[str, str], None], build_platform: Platform = DEFAULT,
              pins: Callable[[str, Platform], Pins | None] | None = None) -> dict[tuple[str, Platform], str]:
    """The FROM reference of each root image (``ImageSpec`` without a parent) per platform, by
    ``(image name, platform)``: its base (local, pulled or bootstrapped at ``pins(base key,
    platform)``, its base lock's, once per base and platform), or its CUDA image (pulled as
    it is, never bootstrapped), for each of the image's platforms and for ``build_platform`` (the
    build stage, where uv runs, is of that platform). ``log(image name, line)`` reports what
    happened. Raises BaseError, or what ``pins`` raises (ConfigError for a lock that is invalid, or
    missing where a base may be bootstrapped)."""
    refs: dict[tuple[str, Platform], str] = {}
    by_base: dict[tuple[str, Platform], str] = {}
    for spec, platform in base_platforms(roots, build_platform):
        if spec.from_cuda_image:
            ensure_pulled(client, spec.base_image)
            refs[spec.name, platform] = spec.base_image
            continue
        if (spec.base, platform) not in by_base:
            b = ensure(client, spec.base, bases[spec.base], source, workdir, log=lambda m, n=spec.name: log(n, m),
                       platform=platform, pins=pins(spec.base, platform) if pins else None)
            by_base[spec.base, platform] = b.ref
            log(spec.name, f"base {spec.base} ({platform}): {b.ref} ({b.how})")
        refs[spec.name, platform] = by_base[spec.base, platform]
    return refs


def base_platforms(roots: list, build_platform: Platform) -> list[tuple]:
    """``(spec, platform)`` for each of ``roots``' platforms and the build platform, in order."""
    return [(spec, platform) for spec in roots for platform in dict.fromkeys((*spec.platforms, build_platform))]
