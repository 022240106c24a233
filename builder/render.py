"""Stage 3 — render: image specs -> ``images/<name>/`` (Dockerfile plus the context files it COPYs).

Pure and offline: the output is a function of matrix.yaml and templates/ only. :func:`render_all`
returns the files as a ``{relative path: text}`` mapping; :func:`write` swaps them into images/
atomically; :func:`check` compares them with what is committed (docker-library's re-render + diff).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import jinja2

from builder.matrix import ImageSpec, Matrix

#: Context files a root image (one without a parent) COPYs, rendered from templates/context/.
ROOT_CONTEXT = ("pip-install", "serve")
EXECUTABLE = set(ROOT_CONTEXT)


def environment(templates: Path) -> jinja2.Environment:
    """A Jinja2 environment over ``templates`` that fails on any undefined name (StrictUndefined)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render_image(matrix: Matrix, spec: ImageSpec, templates: Path) -> dict[str, str]:
    """The files of one image's build context: ``{"Dockerfile": text, ...}``.

    Raises jinja2.TemplateError (e.g. UndefinedError) when a template uses a name it was not given.
    """
    env = environment(templates)
    data = matrix.data
    ctx = {"spec": spec, "project": data.project, "runtime": data.runtime, "base": data.bases[spec.base],
           "build_tools": data.build_tools}
    kind = "framework" if spec.parent else "runtime"
    files = {"Dockerfile": env.get_template(f"layers/{kind}.Dockerfile.j2").render(ctx)}
    if spec.parent is None:
        for name in ROOT_CONTEXT:
            files[name] = env.get_template(f"context/{name}.j2").render(ctx)
    return {name: _tidy(text) for name, text in files.items()}


def _tidy(text: str) -> str:
    # Collapse the blank lines that empty blocks leave behind; end with exactly one newline.
    lines: list[str] = []
    for line in text.rstrip().splitlines():
        line = line.rstrip()
        if line == "" and lines and lines[-1] == "":
            continue
        lines.append(line)
    return "\n".join(lines) + "\n"


def render_all(matrix: Matrix, templates: Path) -> dict[str, str]:
    """Every generated file, keyed by its path relative to images/ (``"<name>/Dockerfile"``)."""
    out: dict[str, str] = {}
    for spec in matrix.images():
        for name, text in render_image(matrix, spec, templates).items():
            out[f"{spec.name}/{name}"] = text
    return out


def write(files: dict[str, str | bytes], images: Path) -> None:
    """Replace ``images`` with exactly ``files`` (text or bytes), atomically.

    Everything is written into a temporary directory beside ``images`` first and then swapped in
    with two renames, so a failure leaves ``images`` exactly as it was; images no longer in the
    matrix disappear with the old directory.
    """
    images = Path(images)
    parent = images.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".images-new-", dir=parent))
    try:
        for rel, text in files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(text, bytes):
                path.write_bytes(text)
            else:
                path.write_text(text)
            mode = 0o755 if path.name in EXECUTABLE else 0o644
            os.chmod(path, mode)
        os.chmod(tmp, 0o755)
        old = None
        if images.exists():
            old = Path(tempfile.mkdtemp(prefix=".images-old-", dir=parent))
            old.rmdir()
            images.rename(old)
        tmp.rename(images)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


#: The bake file's name; it is written beside the images folder (bake resolves contexts from there).
BAKE_FILE = "docker-bake.json"


def bake_path(images: Path) -> Path:
    """Where the bake file of ``images`` lives: ``<images>/../docker-bake.json``."""
    return Path(images).parent / BAKE_FILE


def write_bake(text: str, images: Path) -> Path:
    """Write the bake file beside ``images`` atomically (a temporary file, then a rename); return its path."""
    path = bake_path(images)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".docker-bake-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_bake(text: str, images: Path) -> list[str]:
    """``["stale: docker-bake.json"]`` or ``["missing: docker-bake.json"]`` when the bake file beside
    ``images`` differs from ``text``; empty when it is fresh."""
    path = bake_path(images)
    if not path.is_file():
        return [f"missing: {BAKE_FILE}"]
    return [] if path.read_text() == text else [f"stale: {BAKE_FILE}"]


def check(files: dict[str, str], images: Path) -> list[str]:
    """Differences between ``files`` and ``images`` as lines ``stale: p``, ``missing: p``, ``extra: p``
    (paths relative to images/). Empty when images/ is fresh. A wrong executable bit counts as stale."""
    images = Path(images)
    problems: list[str] = []
    present = {p.relative_to(images).as_posix() for p in images.rglob("*") if p.is_file()} if images.exists() else set()
    for rel in sorted(files):
        path = images / rel
        if rel not in present:
            problems.append(f"missing: images/{rel}")
        elif path.read_text() != files[rel] or _exec_bit(path) != (path.name in EXECUTABLE):
            problems.append(f"stale: images/{rel}")
    for rel in sorted(present - set(files)):
        problems.append(f"extra: images/{rel}")
    return problems


def _exec_bit(path: Path) -> bool:
    return bool(path.stat().st_mode & stat.S_IXUSR)
