"""``builder prune``: remove what the builder made on this machine, and only that.

- **Images and tags**: images carrying the matrix's ``<label_prefix>.cell-digest`` label whose
  ``org.opencontainers.image.title`` names an image of the matrix, the bootstrapped bases
  (``builder-base/*``) and the wheelhouse image (:data:`builder.engine.sources.WHEELHOUSE_REPOSITORY`).
- **BuildKit cache**: the records the builder's runs created, from the ledger they keep
  (:func:`record_cache`): BuildKit's cache of the Engine is shared and carries no owner, so the
  records are told apart by when they appeared (one taken before and one after each run).
- **The local registry it started**: stopped, and its storage removed with the build folder.
- **The build folder** (``--build-dir``): only when the builder made it (its marker file).

An image a container uses is kept, and said. Sources: the Engine API's image, container and
build-cache routes (https://docs.docker.com/reference/api/engine/version/v1.41/#tag/Image).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable

import docker
import requests

from builder import files
from builder.engine import superseded
from builder.engine.sources import WHEELHOUSE_REPOSITORY
from builder.matrix import grammar
from builder.matrix.inputs import ConfigError, shown

#: The ledger's folder and file name under the state home (``$XDG_STATE_HOME``, else
#: ``~/.local/state``): machine-wide, since a record outlives the build folder of the run that made it.
LEDGER_NAME = ("inference-builder", "buildkit-cache.ids")
#: The largest ledger read (bytes): :data:`builder.matrix.grammar.MAX_COUNT` records of at most
#: 64 characters and a newline each.
MAX_LEDGER = grammar.MAX_COUNT * 65


#: The BuildKit cache record type of a cache mount (``RUN --mount=type=cache``: uv's wheels).
CACHE_MOUNT = "exec.cachemount"


def _build_cache(client: docker.DockerClient, tries: int) -> list[dict] | None:
    # BuildKit's cache records as GET /system/df lists them, or None when the Engine cannot say: it
    # answers one disk-usage query at a time (retried ``tries`` times, a second apart), or it is gone.
    for attempt in range(tries):
        try:
            return client.df().get("BuildCache") or []
        except docker.errors.APIError:
            time.sleep(1)
        except (docker.errors.DockerException, requests.RequestException):
            return None
    return None


def cache_records(client: docker.DockerClient, tries: int = 5) -> dict[str, str] | None:
    """``{record id: record type}`` of BuildKit's cache on the Engine now (``GET /system/df``; types
    such as ``regular``, ``exec.cachemount``, ``source.local``), or None when the Engine cannot say."""
    records = _build_cache(client, tries)
    return None if records is None else {str(r["ID"]): str(r.get("Type") or "") for r in records}


def cache_mount_bytes(client: docker.DockerClient, tries: int = 5) -> int:
    """The bytes BuildKit's cache mounts (:data:`CACHE_MOUNT`) hold now; 0 when the Engine cannot say."""
    return sum(int(r.get("Size") or 0) for r in _build_cache(client, tries) or [] if r.get("Type") == CACHE_MOUNT)


def cache_ids(client: docker.DockerClient, tries: int = 5) -> set[str] | None:
    """The ids of BuildKit's cache records on the Engine now (:func:`cache_records`), or None."""
    records = cache_records(client, tries)
    return None if records is None else set(records)


def ledger_path() -> Path:
    """The ledger of BuildKit cache records made by builder runs: ``inference-builder/buildkit-cache.ids``
    under ``$XDG_STATE_HOME`` (else ``~/.local/state``), as the environment says when called."""
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state").joinpath(*LEDGER_NAME)


def _record_id(value: str) -> bool:
    # True for an id the ledger may hold (builder.matrix.grammar.cache_record).
    try:
        grammar.cache_record(value)
    except ValueError:
        return False
    return True


def record_cache(before: set[str] | None, after: set[str] | None, ledger: Path | None = None) -> int:
    """Add the records in ``after`` but not in ``before`` (a run's) to the ledger (default
    :func:`ledger_path`); return how many (0 when either reading is missing: a run's records are
    then not recorded). Only ids of :func:`builder.matrix.grammar.cache_record`'s grammar are
    recorded, the one :func:`read_ledger` reads back. A record another process's build made on the
    same Engine during the run is recorded too: BuildKit's records carry no owner."""
    if before is None or after is None:
        return 0
    ledger = ledger or ledger_path()
    new = sorted(i for i in after - before if _record_id(i))
    try:
        if new:
            files.refuse_links(ledger, ledger.parent, "the ledger is a file the builder made, in a folder it made")
            with files.open_log(ledger, append=True) as f:
                f.write("".join(f"{i}\n" for i in new).encode())
    except OSError as exc:  # housekeeping: never hides the run's own outcome
        print(f"BuildKit cache records not recorded in {ledger}: {exc.strerror or exc}", file=sys.stderr)
        return 0
    return len(new)


def own_tags(image, names: set[str], registries: tuple[str, ...], keep_bases: bool = False) -> list[str]:
    """The tags of ``image`` in the builder's repositories: ``<registry>[/<namespace>...]/<matrix
    image name>`` for a registry of ``registries`` (those the builder tags for), ``builder-base/*``
    (unless ``keep_bases``) and the wheelhouse image's. A tag in any other repository (an image
    pulled from elsewhere, or tagged by a user) is somebody else's."""
    def mine(tag: str) -> bool:
        repository = tag.rsplit(":", 1)[0]
        if repository.startswith("builder-base/"):
            return not keep_bases
        under = any(repository.startswith(f"{r.rstrip('/')}/") for r in registries)
        return repository == WHEELHOUSE_REPOSITORY or (under and repository.rsplit("/", 1)[-1] in names)
    return [t for t in image.tags if mine(t)]


def ours(image, names: set[str], prefix: str) -> bool:
    """True for an image the builder made: a matrix image (its ``<prefix>.cell-digest`` label and
    a title naming a matrix image), a base or the wheelhouse (by repository)."""
    labels = image.labels or {}
    if f"{prefix}.cell-digest" in labels and labels.get("org.opencontainers.image.title") in names:
        return True
    return any(t.startswith(("builder-base/", f"{WHEELHOUSE_REPOSITORY}:")) for t in image.tags)


def remove_images(client: docker.DockerClient, names: set[str], prefix: str, registries: tuple[str, ...],
                  log: Callable[[str], None], keep_bases: bool = False) -> int:
    """Untag every image :func:`ours` names from the builder's repositories (:func:`own_tags`); an
    image that keeps another tag, or that a container uses, stays (said in a ``log`` line). Returns
    the bytes of the images that went."""
    used = superseded.images_in_use(client)
    freed = 0
    for image in client.images.list():
        mine = own_tags(image, names, registries, keep_bases) if image.tags else [image.id]
        if not ours(image, names, prefix) or not mine:
            continue
        if image.id in used:
            log(f"kept {', '.join(image.tags) or image.short_id}: a container uses it")
            continue
        try:
            for t in mine:
                client.api.remove_image(t, noprune=False)
        except docker.errors.APIError as exc:
            log(f"kept {', '.join(image.tags) or image.short_id}: {exc.explanation or exc}")
            continue
        if len(mine) == len(image.tags) or not image.tags:
            freed += image.attrs.get("Size", 0)
        else:
            log(f"kept {', '.join(t for t in image.tags if t not in mine)}: not the builder's tag")
    return freed


def remove_records(client: docker.DockerClient, records: set[str]) -> tuple[int, set[str]]:
    """Remove the BuildKit cache ``records``, each by its id (a record in use stays). A record that
    others were built on goes once they are gone, so this takes passes until one removes nothing.
    Returns ``(bytes BuildKit reports reclaimed, ids still there)``."""
    left, freed = set(records), 0
    while left:
        ids = cache_ids(client)
        present = left if ids is None else left & ids
        for record in present:
            try:
                freed += client.api.prune_builds(filters={"id": [record]}, all=True).get("SpaceReclaimed") or 0
            except docker.errors.APIError:  # busy (another prune, a build using it): kept for a later prune
                continue
        ids = cache_ids(client)
        after = present if ids is None else present & ids
        if after == present:
            return freed, after
        left = after
    return freed, left


def read_ledger(ledger: Path | None = None) -> set[str]:
    """The record ids the ledger (default :func:`ledger_path`) names: empty when there is none.
    Read without following a link at the ledger or its folder (:func:`builder.files.read_state`),
    at most :data:`MAX_LEDGER` bytes, UTF-8, one id of :func:`builder.matrix.grammar.cache_record`'s
    grammar a line (blank lines aside), at most :data:`builder.matrix.grammar.MAX_COUNT` of them.
    Raises ConfigError (one line naming the ledger and the line) or OSError (a link: LinkRefused)."""
    ledger = ledger or ledger_path()
    data = files.read_state(ledger, MAX_LEDGER, ledger.parent)
    if data is None:
        return set()
    refusal = "not a ledger written by `builder`; remove it (its records stay in BuildKit's cache)"
    if len(data) > MAX_LEDGER:
        raise ConfigError([f"{ledger}: larger than {MAX_LEDGER} bytes; {refusal}"])
    try:
        lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError([f"{ledger}: line {line}: not UTF-8 text; {refusal}"]) from None
    ids = [(n, line) for n, line in enumerate(lines, 1) if line]
    if len(ids) > grammar.MAX_COUNT:
        raise ConfigError([f"{ledger}: more than {grammar.MAX_COUNT} records; {refusal}"])
    bad = next(((n, line) for n, line in ids if not _record_id(line)), None)
    if bad is not None:
        raise ConfigError([f"{ledger}: line {bad[0]}: {shown(bad[1])} is not a BuildKit cache record id; {refusal}"])
    return {line for _, line in ids}


def remove_cache(client: docker.DockerClient, wanted: set[str], ledger: Path | None = None) -> int:
    """Remove the BuildKit cache records ``wanted`` (:func:`read_ledger`'s, read before anything
    was removed) with :func:`remove_records`. Returns the bytes BuildKit reports reclaimed; the
    ledger (default :func:`ledger_path`) keeps what is left. Raises OSError (LinkRefused: a link
    at the ledger or its folder)."""
    if not wanted:
        return 0
    ledger = ledger or ledger_path()
    freed, left = remove_records(client, wanted)
    files.refuse_links(ledger, ledger.parent, "the ledger is a file the builder made, in a folder it made")
    files.write_atomic(ledger, "".join(f"{i}\n" for i in sorted(left)))
    return freed


def stop_registry(build_dir: Path) -> bool:
    """Stop the ``docker-registry`` the builder started with ``build_dir``'s config; True when one ran."""
    config = str((build_dir / "registry" / "config.yml").resolve())
    found = False
    for proc in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = proc.read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) > 2 and argv[0].endswith(b"docker-registry") and argv[2].decode(errors="replace") == config:
            found = _terminate(int(proc.parent.name)) or found
    return found


def _terminate(pid: int, deadline: float = 60.0) -> bool:
    # SIGTERM pid, then wait (up to deadline seconds) until it is gone, so nothing writes into the
    # folder about to be removed; False when it was already gone.
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    end = time.monotonic() + deadline
    while _alive(pid) and time.monotonic() < end:
        time.sleep(0.2)
    return True


def _alive(pid: int) -> bool:
    # Running: /proc/<pid>/stat exists and its state (after the command's closing parenthesis,
    # proc(5)) is not Z, a zombie its parent has not reaped yet.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:][:1] != "Z"


def folder_bytes(path: Path) -> int:
    """The bytes of the regular files under ``path`` (``du``'s apparent size)."""
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
