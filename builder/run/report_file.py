"""The run report file (``build/report.json``) read back as hostile input.

``builder merge`` and ``builder catalog`` read reports an earlier run (often another CI job) wrote;
a report's repository, tags and digests reach ``docker buildx imagetools`` and the registry, so
every report read passes :func:`read`: at most :data:`MAX_BYTES`, UTF-8, JSON nested at most
:data:`builder.matrix.inputs.MAX_DEPTH` levels, and the one model :class:`builder.run.report.RunReport`
(strict: no extra key, nothing coerced), each repository, tag, digest, platform and image name
checked against its grammar (:mod:`builder.matrix.grammar`).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from builder.matrix import inputs, validation
from builder.matrix.inputs import ConfigError
from builder.run.report import ImageReport, RunReport

#: Largest report read (bytes); at most one byte more is read, so ``--report /dev/zero`` ends.
MAX_BYTES = 16 << 20


def _text(path: Path, fname: str) -> str:
    data = inputs.read_bounded(path, MAX_BYTES, fname, "not a report written by `builder`")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([f"{fname}: not UTF-8 text; not a report written by `builder`"]) from None


def read(path: Path) -> list[ImageReport]:
    """The image reports in the report at ``path``, in its order. Raises ConfigError with one line
    per problem (at most 10), each naming ``path`` and the key path."""
    fname = f"--report: {path}"
    text = _text(path, fname)
    raw = inputs.load_json(text, fname)  # the depth limit, before pydantic parses it again
    if not isinstance(raw, dict):
        raise ConfigError([f"{fname}: not a report written by `builder` (expected an object with an images list, "
                           f"got {type(raw).__name__})"])
    try:
        return RunReport.model_validate_json(text).images
    except ValidationError as exc:
        raise ConfigError(validation.pydantic_lines(fname, exc, RunReport)[:10]) from None


def read_all(paths: list[Path], names: list[str] | None = None) -> dict[str, list[ImageReport]]:
    """``{image name: [its report in each of paths that has it, in order]}``. With ``names`` (the
    matrix's images), a report naming another image is refused. Raises ConfigError (one line each)
    for a report that is missing, too large, too deep or not this tool's report."""
    out: dict[str, list[ImageReport]] = {}
    for path in paths:
        for image in read(Path(path)):
            if names is not None and image.name not in names:
                raise ConfigError([f"--report: {path}: image {image.name} is not in the matrix"])
            out.setdefault(image.name, []).append(image)
    return out


def refuse_foreign(path: Path) -> None:
    """Raise ConfigError when ``path`` is a symlink or an existing file that is not a run report:
    the tool never replaces a file it did not write."""
    if path.is_symlink() or (path.exists() and not _is_report(path)):
        raise ConfigError([f"{path} exists and is not a report written by `builder`; refusing to replace it"])


def _is_report(path: Path) -> bool:
    try:
        read(path)
    except ConfigError:
        return False
    return True
