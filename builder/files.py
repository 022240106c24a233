"""Every file and folder the tool writes, written one way: into a temporary name that only this
process could have created, then renamed over the target.

A temporary file is made by :func:`tempfile.mkstemp` (``O_CREAT|O_EXCL``, mode 0600, in the
target's own folder so the rename stays on one file system) and a temporary folder by
:func:`tempfile.mkdtemp`; neither follows a symlink planted in advance, since the name is random and
``O_EXCL`` fails on any existing entry, a symlink included
(https://docs.python.org/3/library/tempfile.html#tempfile.mkstemp). :func:`os.replace` then swaps
the target in one step (rename(2) replaces a symlink at the target, it never writes through it), so
a reader sees the old file or the new one, never half of one.

Links the tool did not make are checked here and nowhere else (:func:`refuse_links`): the build
folder itself (:func:`build_folder`: a link there is refused by every command), every folder
between a folder the tool made (one holding :data:`MARKER`) and a path it writes or deletes in it
(the writers here, and :func:`make_folder` and :func:`remove_tree` for the folders other modules
fill: logs, SBOM tools, apt state, bases, registry storage), the marker (a regular file, never a
link: :func:`owned_folder`) and the tool's own state files (:func:`read_state`: the BuildKit cache
ledger).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

#: Mode of a written file (rw-r--r--) and of an executable one or a folder (rwxr-xr-x).
FILE_MODE = 0o644
EXEC_MODE = 0o755


class LinkRefused(OSError):
    """A path the tool would write to, delete or read its own state from passes through a symbolic
    link it did not make (errno ELOOP, ``filename`` the link); ``strerror`` says what was expected."""

    def __init__(self, link: Path, expected: str):
        super().__init__(errno.ELOOP, f"is a symbolic link{_target(link)}; {expected}", str(link))


def _target(link: Path) -> str:
    # `` (to '<target>')`` of a symbolic link, or nothing when it cannot be read.
    try:
        return f" (to {os.readlink(link)!r})"
    except OSError:
        return ""


def _is_link(path: Path) -> bool:
    # True when ``path`` itself is a symbolic link (lstat; an over-long name is no link, it fails later).
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False


def _owner(path: Path) -> Path | None:
    # The nearest folder above ``path`` (by its absolute spelling, no link followed) that holds a
    # regular MARKER file: a folder the tool made. None when no folder above it is one.
    for folder in Path(os.path.abspath(path)).parents:
        if _regular(folder / MARKER):
            return folder
    return None


def _regular(path: Path) -> bool:
    # True when ``path`` is a regular file itself (lstat: a symbolic link to one is not).
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def refuse_links(path: Path, top: Path | None = None,
                 expected: str = "the builder writes and deletes only through folders it made") -> Path:
    """Return ``path`` when no existing component of it from ``top`` down is a symbolic link
    (``top`` and ``path`` included). ``top`` defaults to the nearest folder above ``path`` the tool
    made (one holding a regular :data:`MARKER`), and then ``path`` itself is left out: a writer
    replaces a link there by rename, never writing through it. Without such a folder nothing is
    checked (a user's own path may pass through the user's own links). Raises
    :class:`LinkRefused` with ``expected``. The one check of links the tool did not make, for every
    path it writes to, deletes or reads its own state from: the build folder and what it holds,
    markers, the BuildKit cache ledger."""
    given, real = Path(path), Path(os.path.abspath(path))
    if top is None:
        top = _owner(real)
        if top is None:
            return given
        real = real.parent
    top = Path(os.path.abspath(top))
    for part in (p for p in [real, *real.parents] if p.is_relative_to(top)):
        if _is_link(part):
            raise LinkRefused(part, expected)
    return given


@contextlib.contextmanager
def _atomic(path: Path, mode: int) -> Iterator[BinaryIO]:
    # A temporary file beside ``path`` (mkstemp: a new name, never a planted one) that becomes
    # ``path`` with ``mode`` when the block ends, or is removed when it raises.
    refuse_links(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:40]}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: str | bytes, mode: int = FILE_MODE) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` atomically with ``mode``; creates the
    parent folders. Returns ``path``. Raises OSError (e.g. IsADirectoryError when ``path`` is a
    folder); nothing is left behind then."""
    with _atomic(Path(path), mode) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def copy_atomic(source: Path, path: Path, mode: int = FILE_MODE) -> Path:
    """Copy the file ``source`` to ``path`` the way :func:`write_atomic` writes (streamed, not read
    whole). Returns ``path``. Raises OSError."""
    with _atomic(Path(path), mode) as out, open(source, "rb") as src:
        shutil.copyfileobj(src, out)
    return Path(path)


def _fill(folder: Path, files: dict[str, str | bytes], executable: set[str]) -> None:
    # Every file of ``files`` (relative POSIX paths) under the fresh private ``folder``.
    for rel, data in files.items():
        path = folder / rel
        if not path.resolve().is_relative_to(folder.resolve()):
            raise ValueError(f"{rel!r} is not a path inside the folder being written")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "xb") as f:  # x: O_EXCL, in a folder nobody else can write into
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(path, EXEC_MODE if path.name in executable else FILE_MODE)


def replace_folder(folder: Path, files: dict[str, str | bytes], executable: set[str] = frozenset()) -> Path:
    """Replace ``folder`` with exactly ``files`` (``{relative path: text or bytes}``), atomically:
    everything is written into a :func:`tempfile.mkdtemp` folder beside it, then swapped in with two
    renames, so a failure leaves ``folder`` as it was. Files named in ``executable`` get mode 0755.
    Returns ``folder``. Raises OSError, or ValueError for a path that leaves the folder."""
    folder = Path(folder)
    parent = refuse_links(folder).parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name[:40]}-new-", dir=parent))
    try:
        _fill(tmp, files, set(executable))
        os.chmod(tmp, EXEC_MODE)
        old = None
        if folder.exists() or folder.is_symlink():
            # moved into a private folder first (a symlink there is moved itself, never followed)
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name[:40]}-old-", dir=parent))
            os.rename(folder, old / "old")
        try:
            os.rename(tmp, folder)
        except OSError:
            if old is not None:
                os.rename(old / "old", folder)  # put the old one back
            raise
        if old is not None:
            shutil.rmtree(old)  # rmtree unlinks symlinks, it does not follow them
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


#: The build folder when ``--build-dir`` is not given (relative: under the current directory): every
#: command's logs, report.json, bases, SBOMs, plugins, dockerd's log, registry storage and extension
#: contexts go under the one a command is given, never anywhere else.
BUILD_DIR = Path("build")
#: The file that marks a folder the builder made (``builder prune`` removes only such a build folder).
MARKER = ".made-by-builder"


#: What a build folder must be (the one rule, in every command: ``--build-dir`` is refused otherwise).
BUILD_FOLDER_RULE = "the build folder must be a real folder, not a link: pass --build-dir with the folder itself"


def build_folder(folder: Path) -> Path:
    """``folder`` when it can be the build folder: absent, or a real folder. Raises
    :class:`LinkRefused` when it is a symbolic link (whatever it names: the tool never writes,
    reads its state or deletes through a link it did not make), NotADirectoryError when it is
    something else than a folder. Creates nothing."""
    folder = refuse_links(folder, folder, BUILD_FOLDER_RULE)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"is not a folder; {BUILD_FOLDER_RULE}", str(folder))
    return folder


def claim_folder(folder: Path) -> Path:
    """Create ``folder`` (and its parents) with a :data:`MARKER` file when it does not exist; return
    it. An existing folder is left as it is, and so stays somebody else's unless it has the marker.
    Every place that may create the build folder creates it through here. Raises
    :class:`LinkRefused` for a link at ``folder`` (:func:`build_folder`) or above it inside a
    folder the tool made."""
    folder = build_folder(refuse_links(folder))
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir()  # mkdir(2): fails on any existing entry, so only the creator writes the marker
    except FileExistsError:
        return folder
    write_atomic(folder / MARKER, "made by `builder`; `builder prune` removes this folder\n")
    return folder


def owned_folder(folder: Path) -> bool:
    """True when ``folder`` is a real folder (not a symlink) holding :data:`MARKER` as a regular
    file (a link named like the marker does not count)."""
    folder = Path(folder)
    return folder.is_dir() and not _is_link(folder) and _regular(folder / MARKER)


def remove_owned(folder: Path) -> None:
    """Delete ``folder`` and all it holds when :func:`owned_folder` says the tool made it; links
    inside are removed, never followed (:func:`shutil.rmtree` on Linux works on file descriptors).
    Raises :class:`LinkRefused` when ``folder`` is a link, OSError when it cannot be removed."""
    build_folder(folder)
    if owned_folder(folder):
        shutil.rmtree(folder)


def _inside_own(path: Path) -> Path:
    # ``path`` after refuse_links of every existing component of it below the nearest folder the
    # tool made above it, ``path`` itself included (a folder is written into, not replaced).
    owner = _owner(path)
    return refuse_links(path, owner) if owner is not None else Path(path)


def make_folder(path: Path) -> Path:
    """``mkdir -p path`` for a folder the tool writes into, after :func:`refuse_links` of every
    existing component below the folder the tool made above it, ``path`` included. Returns
    ``path``. Raises :class:`LinkRefused`, or OSError when it cannot be made."""
    path = _inside_own(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def remove_tree(path: Path) -> None:
    """Delete the folder ``path`` (nothing when there is none) the way :func:`make_folder` writes:
    refused when a component below the folder the tool made, ``path`` included, is a link; links
    inside are removed, never followed. Raises :class:`LinkRefused` or OSError."""
    path = _inside_own(path)
    if path.exists():
        shutil.rmtree(path)


def read_state(path: Path, limit: int, top: Path) -> bytes | None:
    """At most ``limit`` + 1 bytes of the tool's own state file at ``path`` (one more than allowed,
    so the caller sees it is too large), read without following a link at ``path`` or at any
    folder from ``top`` down (``O_NOFOLLOW`` and :func:`refuse_links`); None when there is no
    such file. Raises :class:`LinkRefused`, or OSError for something else than a regular file."""
    refuse_links(path, top, "the builder reads its own state only from files it made")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "is not a regular file; the builder's state is one", str(path))
        return f.read(limit + 1)


def open_log(path: Path, append: bool = False):
    """Open a log file for writing (binary; truncated unless ``append``) that a child process or
    the tool streams into, without following a symlink planted at its name (``O_NOFOLLOW``: ELOOP,
    an OSError) or above it in a folder the tool made (:func:`refuse_links`). Creates the parent
    folders. A log is written as it goes, so it is not atomic."""
    path = refuse_links(Path(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
    return os.fdopen(os.open(path, flags, FILE_MODE), "ab" if append else "wb")
