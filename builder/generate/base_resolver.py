"""Making base locks (``builder lock``, ``builder refresh``): each bootstrapped base bootstrapped at
the suites' newest versions (or its lock's security updates only), what dpkg then holds written as
its lock, each package's suite from the indexes apt fetched in the bootstrap. The file is
:mod:`builder.generate.base_lock`; the bootstrap :mod:`builder.engine.bases`."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import docker

from builder.engine import bases, debian_index
from builder.generate import base_lock, lock
from builder.generate.base_lock import BaseLock
from builder.matrix.inputs import ConfigError
from builder.matrix.platform import DEFAULT, Platform
from builder.matrix.schema import Base


def pins(lock: BaseLock | None) -> bases.Pins | None:
    """What a bootstrap at ``lock`` is brought to: its versions and date."""
    return bases.Pins(dict(lock.versions), lock.date) if lock else None


def pins_of(root: Path, source: str) -> Callable[[str, Platform], bases.Pins | None]:
    """``pins(base key, platform)`` from the base locks under ``root`` (the folder of matrix.yaml),
    for :func:`builder.engine.bases.for_roots`. It raises ConfigError for an invalid lock, or a
    missing one unless ``source`` is ``pull`` (a pulled base has no lock)."""
    def of(key: str, platform: Platform) -> bases.Pins | None:
        got = base_lock.read(root, key, platform)
        if got is None and source != "pull":
            raise ConfigError([f"{base_lock.path_of(root, key, platform)}: missing; run `builder lock`"])
        return pins(got)
    return of


def lock_of(key: str, platform: Platform, made: bases.Bootstrapped) -> BaseLock:
    """The base lock of a bootstrap: its versions, each one's suite the one of the release's suites
    that serves it, its date, and the count of packages the security suite serves newer. Raises
    ConfigError for a version no suite serves."""
    suites = {}
    for name, version in made.versions.items():
        suite = made.index.suite_of(name, version)
        if suite is None:
            raise ConfigError([f"base {key} ({platform}): {name}={version} is in none of the suites' indexes"])
        suites[name] = suite
    pending = sum(1 for _, _, s in debian_index.newer(made.index, made.versions).values() if s.endswith("-security"))
    text = base_lock.text(key, platform, made.index.suites, made.date, pending, made.versions, suites)
    return base_lock.parse(text, f"{key} (new base lock)")


def lock_bases(client: docker.DockerClient, bases_: dict[str, Base], roots: list, workdir: Path, root: Path,
               log: Callable[[str], None], build_platform: Platform = DEFAULT, refresh: bool = False,
               security_only: bool = False) -> list[tuple[BaseLock | None, BaseLock]]:
    """The new base lock of every bootstrapped base of ``roots`` and platform that has none under
    ``root`` (all of them with ``refresh``: each moved to the suites' newest versions, or with
    ``security_only`` only its packages the security suite serves newer), bootstrapping and loading
    the base it names; nothing is written (:func:`write_all`, once what stands on them resolved
    too). Returns ``(old lock or None, new lock)`` for each lock whose versions or suites changed: a
    lock that only the suites' newer date would change is kept, with its date, so its images keep
    their build ids. Raises BaseError, ConfigError, IndexUnavailable."""
    done: list[tuple[BaseLock | None, BaseLock]] = []
    seen: set[tuple[str, Platform]] = set()
    for spec, platform in bases.base_platforms(roots, build_platform):
        if spec.from_cuda_image or (spec.base, platform) in seen:
            continue
        seen.add((spec.base, platform))
        old = base_lock.read(root, spec.base, platform)
        if old is not None and not refresh:
            continue
        base = bases_[spec.base]
        target = _security_target(old, base, platform, workdir / spec.base) if security_only and old else None
        if target is not None and target.versions == old.versions:
            continue  # no security update: nothing to bootstrap
        log(f"bootstrapping base {spec.base} ({platform}) at the suites' "
            f"{'security updates' if target else 'newest versions'}")
        made = bases.bootstrap(client, spec.base, base, workdir, log, platform, pins(target), exact=False)
        new = lock_of(spec.base, platform, made)
        if old is None or (old.versions, old.package_suites) != (new.versions, new.package_suites):
            done.append((old, new))
    return done


def write_all(root: Path, written: list[tuple[BaseLock | None, BaseLock]]) -> None:
    """Write the new locks of :func:`lock_bases` under ``root``. Raises ConfigError, writing none of
    them, when a file is in the way that ``builder lock`` did not write."""
    for _, new in written:
        lock.ensure_ours(base_lock.path_of(root, new.base, new.platform))
    for _, new in written:
        base_lock.write(root, new)


def pins_with(root: Path, source: str, written: list[tuple[BaseLock | None, BaseLock]]) -> Callable[[str, Platform], bases.Pins | None]:
    """:func:`pins_of` ``root``, except for the bases ``written`` (not yet on disk): their new locks'."""
    new = {(n.base, n.platform): n for _, n in written}
    on_disk = pins_of(root, source)
    return lambda key, platform: pins(new[key, platform]) if (key, platform) in new else on_disk(key, platform)


def _security_target(old: BaseLock, base: Base, platform: Platform, workdir: Path) -> BaseLock:
    # ``old`` with each package the security suite serves newer moved to that version, dated now.
    arch = platform.arch
    index = debian_index.fetch(debian_index.Archive.of(base.bootstrap.suite), arch, workdir / f"index-{arch}")
    versions, suites = dict(old.versions), dict(old.package_suites)
    security = old.suites[-1]
    for name, version in old.versions.items():
        if fix := debian_index.security_fix(index, name, version):
            versions[name], suites[name] = fix, security
    text = base_lock.text(old.base, old.platform, old.suites, index.date, 0, versions, suites)
    return base_lock.parse(text, f"{old.base} (security target)")
