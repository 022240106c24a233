"""Every file and folder the tool writes, written one way: into a temporary name that only this
process could have created, then renamed over the target.

A temporary file is made by :func:`tempfile.mkstemp` (``O_CREAT|O_EXCL``, mode 0600, in the
target's own folder so the rename stays on one file system) and a temporary folder by
:func:`tempfile.mkdtemp`; neither follows a symlink planted in advance, since the name is random and
``O_EXCL`` fails on any existing entry, a symlink included
(https://docs.python.org/3/library/tempfile.html#tempfile.mkstemp). :func:`os.replace` then swaps
the target in one step (rename(2) replaces a symlink at the target, it never writes through it), so
a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

#: Mode of a written file (rw-r--r--) and of an executable one or a folder (rwxr-xr-x).
FILE_MODE = 0o644
EXEC_MODE = 0o755


@contextlib.contextmanager
def _atomic(path: Path, mode: int) -> Iterator[BinaryIO]:
    # A temporary file beside ``path`` (mkstemp: a new name, never a planted one) that becomes
    # ``path`` with ``mode`` when the block ends, or is removed when it raises.
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
    parent = folder.parent
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


def claim_folder(folder: Path) -> Path:
    """Create ``folder`` (and its parents) with a :data:`MARKER` file when it does not exist; return
    it. An existing folder is left as it is, and so stays somebody else's unless it has the marker.
    Every place that may create the build folder creates it through here."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir()  # mkdir(2): fails on any existing entry, so only the creator writes the marker
    except FileExistsError:
        return folder
    write_atomic(folder / MARKER, "made by `builder`; `builder prune` removes this folder\n")
    return folder


def owned_folder(folder: Path) -> bool:
    """True when ``folder`` is a real folder (not a symlink) holding :data:`MARKER`."""
    folder = Path(folder)
    return folder.is_dir() and not folder.is_symlink() and (folder / MARKER).is_file()


def open_log(path: Path, append: bool = False):
    """Open a log file for writing (binary; truncated unless ``append``) that a child process or
    the tool streams into, without following a symlink planted at its name (``O_NOFOLLOW``: ELOOP,
    an OSError). Creates the parent folders. A log is written as it goes, so it is not atomic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
    return os.fdopen(os.open(path, flags, FILE_MODE), "ab" if append else "wb")
