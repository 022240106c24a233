"""What the ``builder`` commands share: their common options, the one way an error ends a command
(one plain line each on stderr, an exit code), and matrix loading."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Iterator, NoReturn, Optional

import typer

from builder import files
from builder.engine import EngineError
from builder.engine.bases import BaseError
from builder.engine.debian_index import IndexUnavailable
from builder.matrix import ImageSpec, Matrix
from builder.matrix import load as load_matrix
from builder.matrix import plan
from builder.matrix.inputs import ConfigError, one_line
from builder.run.publish import PublishError
from builder.sign.cosign import SignError

MatrixOpt = typer.Option(Path("matrix.yaml"), "--matrix", help="The matrix file.")
TemplatesOpt = typer.Option(None, "--templates", help="The templates folder [default: templates/ beside the matrix].")
ImagesOpt = typer.Option(None, "--images", help="Where generated build contexts live [default: images/ beside the matrix].")
SelectOpt = typer.Option(None, "--select", help="Glob over image names (repeatable); ancestors are included.")
#: Every command takes it; what a command writes outside images/ and docs/ goes under it, nowhere else.
BuildDirOpt = typer.Option(files.BUILD_DIR, "--build-dir",
                           help="The build folder: logs, report.json, bases, SBOMs, plugins, registry storage, "
                                "extension contexts (`builder prune` removes it).")


def fail(lines: list[str], code: int = 2) -> NoReturn:
    """Print ``lines`` to stderr (no wrapping, no markup), each as one bounded line
    (:func:`builder.matrix.inputs.one_line`: control characters escaped, at most 400 characters), and exit
    with ``code``. The one place every error line of a command goes through."""
    for line in lines:
        sys.stderr.write(one_line(str(line)) + "\n")
    raise typer.Exit(code)


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """Turn the project's own errors into one line each and an exit code (see the module doc)."""
    try:
        yield
    except ConfigError as exc:
        fail(exc.lines, 2)
    except OSError as exc:  # a user's path that cannot be read or written
        where = f"{exc.filename}: " if exc.filename else ""
        fail([f"{where}{exc.strerror or exc}"], 2)
    except (EngineError, BaseError, IndexUnavailable, PublishError, SignError) as exc:
        fail([f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"], 1)


def load(path: Path) -> Matrix:
    """The matrix at ``path``, or exit 2 with its problems."""
    with guard():
        return load_matrix(path)


def registry_option(value: str) -> str:
    """``--registry``'s value, checked against ``host[:port][/namespace]`` (empty: the default
    registry); exit 2 with one line otherwise."""
    from builder.matrix import grammar

    if value:
        try:
            grammar.registry(value)
        except ValueError as exc:
            fail([f"--registry: {exc}"])
    return value


def stop_on_sigterm(signum, frame) -> None:
    """A SIGTERM handler that stops a command the way Ctrl-C does (a cancelled CI job, `docker stop`)."""
    raise KeyboardInterrupt


#: The templates that ship with the project (a checkout or an editable install).
PACKAGE_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def beside(matrix: Path, given: Optional[Path], name: str) -> Path:
    """``given``, or the folder ``name`` beside the matrix file (never the current directory's)."""
    return given if given is not None else Path(matrix).resolve().parent / name


def templates_dir(matrix: Path, given: Optional[Path]) -> Path:
    """``given``, or ``templates/`` beside the matrix, or the templates that ship with the package;
    exits 2 (one line) when the folder holds no ``layers/``."""
    folder = beside(matrix, given, "templates")
    if given is None and not folder.is_dir():
        folder = PACKAGE_TEMPLATES
    if not (folder / "layers").is_dir():
        fail([f"--templates: {folder} holds no layers/ templates"])
    return folder


def select_images(m: Matrix, patterns: Optional[list[str]]) -> list[ImageSpec]:
    """:func:`builder.matrix.plan.select` of ``patterns``; exits 2 (one line) for a pattern that selects nothing."""
    try:
        return plan.select(m, patterns or [])
    except ValueError as exc:
        fail([str(exc)])
