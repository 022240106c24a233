"""Making Debian package locks (``builder lock``): each root image's apt packages, resolved by the
base image's own apt against the mirror its sources name, for each of the image's platforms.

In a container of the base (under QEMU for a foreign platform, :func:`builder.engine.ensure_emulation`),
``apt-get update`` then ``apt-get install --simulate --no-install-recommends`` of matrix.yaml's
``runtime.apt`` lists every package the apt step would install (``Inst <package> (<version> …)``
lines, https://manpages.debian.org/bookworm/apt/apt-get.8.en.html); a requested package the base
already has is locked at its installed version (``dpkg-query``). Each package's suite is the one
of the base release's suites whose index serves that version (the security suite first)
(:mod:`builder.engine.debian_index`). The container's output is hostile input like any file: every
name and version is checked by :func:`builder.generate.apt_lock.parse`.
The file format is :mod:`builder.generate.apt_lock`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import docker

from builder import engine, files
from builder.engine import debian_index
from builder.generate import apt_lock, lock
from builder.generate.apt_lock import AptLock
from builder.matrix import ImageSpec, Matrix
from builder.matrix.inputs import ConfigError
from builder.matrix.platform import Platform

#: Resolves "$@" (the packages) in the base: simulated installs, then the requested packages it has.
_SCRIPT = ("apt-get update -qq >/dev/null && apt-get install --simulate -qq --no-install-recommends -- \"$@\" "
           "&& { dpkg-query -W -f '${db:Status-Abbrev} ${Package}=${Version}\\n' -- \"$@\" 2>/dev/null || true; }")
_INST = re.compile(r"^Inst (\S+) (?:\[\S+\] )?\((\S+) ")
_INSTALLED = re.compile(r"^ii +(\S+=\S+)$")


def resolve(client: docker.DockerClient, base_ref: str, platform: Platform, packages: tuple[str, ...]) -> dict[str, str]:
    """``{package: version}`` the apt step installs on ``platform`` (``linux/arm64``) in ``base_ref``
    for ``packages`` (already checked by the matrix's Debian package grammar). Raises ConfigError
    when apt cannot resolve them (its last lines)."""
    if platform != engine.native_platform(client):
        engine.ensure_emulation(platform)
    try:
        out = client.containers.run(base_ref, ["sh", "-eu", "-c", _SCRIPT, "sh", *packages], entrypoint=[], user="0",
                                    platform=platform.name, remove=True, stdout=True, stderr=True)
    except docker.errors.ContainerError as exc:
        tail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-3:]
        raise ConfigError([f"apt in {base_ref} ({platform}) could not resolve {' '.join(packages)}: "
                           + " / ".join(tail)]) from None
    return versions(out.decode(errors="replace"), packages, f"apt's output in {base_ref} ({platform})")


def versions(output: str, packages: tuple[str, ...], where: str) -> dict[str, str]:
    """``{package: version}`` from the resolving script's ``output``: every ``Inst`` line of apt's
    simulation, and each of ``packages`` dpkg says is installed (``ii``). Raises ConfigError naming
    ``where`` for a name or version outside Debian's grammars."""
    lines = output.split("\n")
    found = apt_lock.entries([f"{m[1]}={m[2]}" for m in map(_INST.match, lines) if m], where)
    installed = apt_lock.entries([m[1] for m in map(_INSTALLED.match, lines) if m], where)
    found.update((p, installed[p]) for p in packages if p in installed and p not in found)
    missing = [p for p in packages if p not in found]
    if missing:
        raise ConfigError([f"{where}: apt would not install {', '.join(missing)}, nor does the base have it"])
    return found


def write(images: Path, new: AptLock) -> Path:
    """Write ``new`` to ``images/<image>/apt.<arch>.lock`` atomically. Raises ConfigError, writing
    nothing, when a file is there that ``builder lock`` did not write."""
    path = apt_lock.path_of(images, new.image, new.platform)
    lock.ensure_ours(path)
    files.write_atomic(path, new.text)
    return path


def suites_of(versions: dict[str, str], index: debian_index.Index, where: str) -> dict[str, str]:
    """``{package: suite}``: the suite of ``index`` that serves each of ``versions`` at that
    version. Raises ConfigError naming ``where`` for one no suite serves (the mirror moved: lock again)."""
    suites = {}
    for name, version in versions.items():
        suite = index.suite_of(name, version)
        if suite is None:
            raise ConfigError([f"{where}: {name}={version} is in none of the {index.release} suites' indexes; "
                               "the mirror moved while locking, run `builder lock` again"])
        suites[name] = suite
    return suites


def lock_roots(client: docker.DockerClient, matrix: Matrix, specs: list[ImageSpec], base_refs: dict[tuple[str, Platform], str],
               images: Path, workdir: Path, log: Callable[[str], None] = print) -> list[AptLock]:
    """Lock the Debian packages of every root image in ``specs`` for each of its platforms, from its
    base (``base_refs``: ``{(image, platform): reference}``, :func:`builder.engine.bases.for_roots`),
    each with its suite from the base release's indexes fetched under ``workdir``, writing them only
    once every one resolved. Raises ConfigError, writing none, on the first that fails or when a file
    is in the way that ``builder lock`` did not write; IndexUnavailable when an index cannot be fetched."""
    packages = tuple(matrix.data.runtime.apt)
    done = []
    for spec in (s for s in specs if s.parent is None):
        release = matrix.data.bases[spec.base].bootstrap.suite
        for platform in spec.platforms:
            lock.ensure_ours(apt_lock.path_of(images, spec.name, platform))
            versions = resolve(client, base_refs[spec.name, platform], platform, packages)
            arch = platform.arch
            index = debian_index.fetch(debian_index.Archive.of(release), arch, workdir / f"{release}-{arch}")
            suites = suites_of(versions, index, f"{spec.name} ({platform})")
            done.append(apt_lock.parse(apt_lock.text(spec.name, platform, packages, versions, suites),
                                       f"{spec.name} (new apt lock)"))
            log(f"resolved {spec.name} ({platform}): {len(versions)} Debian packages")
    for new in done:
        write(images, new)
    return done
