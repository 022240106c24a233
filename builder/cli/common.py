"""What the ``builder`` commands share: their common options, the one way an error ends a command
(one plain line each on stderr, an exit code), and matrix loading."""

from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path
from typing import Any, Iterator, NoReturn, Optional

import typer
import typer.core
from pydantic import ByteSize, TypeAdapter, ValidationError

from builder import files
from builder.engine import EngineError
from builder.engine.bases import BaseError
from builder.engine.debian_index import IndexUnavailable
from builder.matrix import ImageSpec, Matrix, grammar, plan
from builder.matrix import load as load_matrix
from builder.matrix.inputs import ConfigError, one_line
from builder.run.publish import PublishError
from builder.sign.cosign import SignError

def local_path(value: Any) -> Path:
    """The parser of every path option and argument: a value of
    :func:`builder.matrix.grammar.local_path`'s grammar (not empty, not too long for the file system,
    no control character, not starting with ``-``), refused while the command line is parsed,
    before anything runs (one line, exit 2). The command's own defaults (Path objects) pass."""
    if isinstance(value, Path):
        return value
    try:
        return Path(grammar.local_path(value))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


#: The largest ``--max-disk-growth`` (bytes): 1 PB.
MAX_GROWTH = 10**15
_BYTE_SIZE = TypeAdapter(ByteSize)


def byte_size(value: Any) -> int | None:
    """The parser of a size option (``--max-disk-growth``): bytes, or a number and a unit as pydantic's
    ``ByteSize`` reads them (``45GB`` is 45 * 10**9 bytes, ``45GiB`` 45 * 2**30;
    https://docs.pydantic.dev/latest/api/types/#pydantic.types.ByteSize), from 1 GB to
    :data:`MAX_GROWTH`; refused while the command line is parsed (one line, exit 2). None (the
    option left out) passes."""
    if value is None or isinstance(value, int):
        return value
    text = str(value)
    try:
        size = int(_BYTE_SIZE.validate_python(text)) if len(text) <= 32 and text.isprintable() and text == text.strip() else -1
    except ValidationError:
        size = -1
    if not 10**9 <= size <= MAX_GROWTH:
        raise typer.BadParameter(f"{text[:40]!r}: expected a size from 1GB to 1PB, such as 45GB or 40GiB")
    return size


def build_folder(value: Any) -> Path:
    """The parser of ``--build-dir``: a :func:`local_path` that :func:`builder.files.build_folder`
    accepts (absent, or a real folder: a link is refused in every command), the default included."""
    try:
        return files.build_folder(local_path(value))
    except OSError as exc:
        raise typer.BadParameter(f"{exc.filename}: {exc.strerror or exc}") from None


def path_option(default: Any, *names: str, help: str) -> Any:
    """A typer option whose value is a path (:func:`local_path`)."""
    return typer.Option(default, *names, parser=local_path, help=help)


MatrixOpt = path_option(Path("matrix.yaml"), "--matrix", help="The matrix file.")
TemplatesOpt = path_option(None, "--templates", help="The templates folder [default: templates/ beside the matrix].")
ImagesOpt = path_option(None, "--images", help="Where generated build contexts live [default: images/ beside the matrix].")
SelectOpt = typer.Option(None, "--select", help="Glob over image names (repeatable); ancestors are included.")
#: Every command takes it; what a command writes outside images/ and docs/ goes under it, nowhere else.
BuildDirOpt = typer.Option(files.BUILD_DIR, "--build-dir", parser=build_folder,
                           help="The build folder: logs, report.json, bases, SBOMs, plugins, registry storage, "
                                "extension contexts (`builder prune` removes it). A real folder, never a link.")


class OneLineGroup(typer.core.TyperGroup):
    """The ``builder`` app's group: the command line parser's own refusals (an unknown option or
    command, a value of the wrong type, a missing argument) end the way every other does
    (:func:`fail`): one line on stderr naming the command, exit 2. A bare ``builder`` or group still
    prints its help."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        """The group's ``main``, run without the parser's standalone handling, which this does instead."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except typer.TyperException as exc:  # the parser's errors (typer's click: ClickException)
            if type(exc).__name__ == "NoArgsIsHelpError":  # no arguments: the help
                exc.show()
                sys.exit(exc.exit_code)
            sys.stderr.write(one_line(f"{_command(getattr(exc, 'ctx', None))}: {exc.format_message()}") + "\n")
            sys.exit(exc.exit_code)
        except typer.Abort:
            sys.stderr.write("Aborted!\n")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _command(ctx: Any) -> str:
    # ``builder <command> [<subcommand>]`` of a parser context (the program as its console script
    # names it, whatever sys.argv[0] was), or ``builder``.
    names = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name)
        ctx = ctx.parent
    return " ".join(["builder", *reversed(names)])


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
    if value:
        try:
            grammar.registry(value)
        except ValueError as exc:
            fail([f"--registry: {exc}"])
    return value


def stop_on_sigterm(signum, frame) -> None:
    """A SIGTERM handler that stops a command the way Ctrl-C does (a cancelled CI job, `docker stop`)."""
    raise KeyboardInterrupt


def interruptible() -> dict:
    """Make SIGINT (Ctrl-C) and SIGTERM raise KeyboardInterrupt in this process, SIGINT even when
    it was inherited ignored (a shell without job control starts its background jobs so: POSIX
    XCU 2.11, "Signals and Error Handling"). Returns ``{signal: previous handler}`` for
    ``signal.signal`` to restore."""
    return {signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
            signal.SIGTERM: signal.signal(signal.SIGTERM, stop_on_sigterm)}


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
