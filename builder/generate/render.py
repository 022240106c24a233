"""Render: takes the image specs and their locks, gives ``images/<name>/`` (Dockerfile plus the context files it COPYs).

Pure and offline: the output is a function of matrix.yaml, templates/ and the committed locks
(:mod:`builder.generate.lock`, which an image installs from and whose digest it carries as a label; each lock is
passed through unchanged). :func:`render_all` returns the files as a ``{relative path: text}`` mapping; :func:`write` swaps them into images/
atomically; :func:`check` compares them with what is committed (docker-library's re-render + diff);
:func:`preflight` is the one "is images/ fresh" check of ``builder render`` and the commands that build.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import jinja2

from builder import files as files_
from builder.generate import apt_lock, bake, base_lock, lock, python_resolver
from builder.matrix import ImageSpec, Matrix, grammar, inputs
from builder.matrix.platform import DEFAULT, Platform

#: Context files a root image (one without a parent) COPYs, rendered from templates/context/.
ROOT_CONTEXT = ("pip-install", "serve")
EXECUTABLE = set(ROOT_CONTEXT)


def environment(*templates: Path) -> jinja2.Environment:
    """A Jinja2 environment over the ``templates`` folders (the first that has a name wins) that
    fails on any undefined name (StrictUndefined), with the two escaping filters every value written
    into a Dockerfile goes through: ``dq`` (a double-quoted Dockerfile word, for LABEL and ENV) and
    ``sh`` (one shell word, for RUN), both from :mod:`builder.matrix.grammar`."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(t) for t in templates]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["dq"] = grammar.dockerfile_quote
    env.filters["sh"] = grammar.shell_quote
    return env


def render_image(matrix: Matrix, spec: ImageSpec, templates: Path, locks: dict[Platform, lock.Lock],
                 parent_locks: dict[Platform, lock.Lock] | None = None,
                 apt_locks: dict[Platform, apt_lock.AptLock] | None = None,
                 base_locks: dict[Platform, base_lock.BaseLock] | None = None) -> dict[str, str]:
    """The files of one image's build context: ``{"Dockerfile": text, "requirements.lock": text, ...}``.

    ``locks`` are the image's locks by platform (installed from, the linux/amd64 one's digest a
    label, passed through as they are); a child also gets ``layer.<arch>.lock``, the entries its
    ``parent_locks`` lack (:func:`builder.generate.lock.layer`), which its own layer installs. A root
    image's ``apt_locks`` (by platform, :mod:`builder.generate.apt_lock`), which its apt step
    bind-mounts, are passed through as they are, and so are its base's ``base_locks`` (by platform,
    as ``base.<arch>.lock``), which the apt step installs too; they give every image's labels the
    Debian index date and the pending security updates of the linux/amd64 lock.

    Raises jinja2.TemplateError (e.g. UndefinedError) when a template uses a name it was not given.
    """
    env = environment(templates)
    data = matrix.data
    ctx = {"spec": spec, "project": data.project, "runtime": data.runtime, "base": data.bases[spec.base],
           "build_tools": data.build_tools, "parent_context": bake.PARENT_CONTEXT,
           "parent_target": bake.target_name(spec.parent) if spec.parent else None, "lock": locks[DEFAULT], "locks": {p.name: got for p, got in locks.items()},
           "base_lock": (base_locks or {}).get(DEFAULT),
           "platforms": [{"platform": p.name, "arch": p.arch, "wheels": p.uv_triple, "lock": lock.file_name(p),
                          "install": lock.layer_file(p) if spec.parent else lock.file_name(p)} for p in spec.platforms]}
    kind = "framework" if spec.parent else "runtime"
    files = {"Dockerfile": env.get_template(f"layers/{kind}.Dockerfile.j2").render(ctx)}
    if spec.parent is None:
        for name in ROOT_CONTEXT:
            files[name] = env.get_template(f"context/{name}.j2").render(ctx)
    out = {name: _tidy(text) for name, text in files.items()}
    for platform, image_lock in locks.items():
        out[lock.file_name(platform)] = image_lock.text
        if spec.parent is not None:
            out[lock.layer_file(platform)] = lock.layer(image_lock, (parent_locks or {})[platform])
    for platform, packages in (apt_locks or {}).items():
        out[apt_lock.file_name(platform)] = packages.text
        if spec.parent is None and base_locks and platform in base_locks:
            out[base_lock.context_name(platform)] = base_locks[platform].text
    return out


def _tidy(text: str) -> str:
    # Collapse the blank lines that empty blocks leave behind; end with exactly one newline.
    lines: list[str] = []
    for line in text.rstrip().splitlines():
        line = line.rstrip()
        if line == "" and lines and lines[-1] == "":
            continue
        lines.append(line)
    return "\n".join(lines) + "\n"


def render_all(matrix: Matrix, templates: Path, locks: dict[str, dict[Platform, lock.Lock]],
               apt_locks: dict[str, dict[Platform, apt_lock.AptLock]] | None = None,
               base_locks: dict[str, dict[Platform, base_lock.BaseLock]] | None = None) -> dict[str, str]:
    """Every generated file, keyed by its path relative to images/ (``"<name>/Dockerfile"``);
    ``locks`` maps every image name to its locks by platform (:func:`builder.generate.lock.read_every`),
    ``apt_locks`` every root image's Debian package locks (:func:`builder.generate.apt_lock.read_every`),
    ``base_locks`` every base's locks (:func:`builder.generate.base_lock.read_every`)."""
    out: dict[str, str] = {}
    for spec in matrix.images():
        parent = locks[spec.parent] if spec.parent else None
        for name, text in render_image(matrix, spec, templates, locks[spec.name], parent,
                                       (apt_locks or {}).get(spec.name), _base_locks_of(matrix, spec, base_locks)).items():
            out[f"{spec.name}/{name}"] = text
    return out


def render_committed(matrix: Matrix, templates: Path, images: Path) -> dict[str, str]:
    """:func:`render_all` from the committed locks: each image's in ``images``, the bases' beside
    matrix.yaml. Raises ConfigError for a lock that cannot be read."""
    specs = matrix.images()
    return render_all(matrix, templates, lock.read_every(images, specs), apt_lock.read_every(images, specs),
                      base_lock.read_every(Path(matrix.path).resolve().parent, specs, matrix.data.bases))


def _base_locks_of(matrix: Matrix, spec: ImageSpec, base_locks: dict | None) -> dict | None:
    # The base locks of ``spec``'s tree: its root's base's, unless that root starts FROM a CUDA image.
    root = matrix.image(matrix.lineage(spec.name)[-1])
    return None if root.from_cuda_image else (base_locks or {}).get(root.base)


#: The words every file `builder render` writes carries near its top (see macros.j2's header).
GENERATED = "Generated by `builder render`"


def foreign_file(images: Path) -> Path | None:
    """The first file in ``images`` that `builder render` did not write (its first three lines
    lack :data:`GENERATED`, or for a lock :data:`builder.generate.lock.GENERATED`), or None: only a folder of our
    own may be replaced."""
    images = Path(images)
    if not images.is_dir():
        return images if images.exists() else None
    for p in sorted(images.rglob("*")):
        mark = lock.GENERATED if p.name.startswith(("requirements", "apt.", "base.")) and p.suffix == ".lock" else GENERATED
        if p.is_symlink() or (p.is_file() and mark not in _head(p)):
            return p
    return None


def _head(path: Path) -> str:
    try:
        with path.open("rb") as f:
            return b"".join(f.readline(400) for _ in range(3)).decode("utf-8", "replace")
    except OSError:
        return ""


def write_all(files: dict[str, str], bake_text: str, images: Path) -> Path:
    """Write ``files`` into ``images`` (:func:`write`) and the bake file beside it
    (:func:`_write_bake`), after checking that both places hold only what `builder render` wrote.
    Returns the bake file's path. Raises ConfigError, with nothing written, otherwise."""
    foreign = foreign_file(images)
    if foreign is not None:
        raise inputs.ConfigError([f"--images: {images} holds {foreign}, which `builder render` did not write; "
                                 "refusing to replace it"])
    _check_bake_owner(bake_path(images))
    write(files, images)
    return _write_bake(bake_text, images)


def _check_bake_owner(path: Path) -> None:
    if path.is_symlink() or (path.exists() and bake.NOTICE not in _head(path)):
        raise inputs.ConfigError([f"--images: {path} exists and was not written by `builder render`; refusing to "
                                 "replace it"])


def write(files: dict[str, str | bytes], images: Path) -> None:
    """Replace ``images`` with exactly ``files`` (text or bytes), atomically
    (:func:`builder.files.replace_folder`: a private temporary folder beside it, then two renames),
    so a failure leaves ``images`` exactly as it was; images no longer in the matrix disappear with
    the old folder. Raises OSError."""
    files_.replace_folder(Path(images), files, EXECUTABLE)


#: The bake file's name; it is written beside the images folder (bake resolves contexts from there).
BAKE_FILE = "docker-bake.json"


def bake_path(images: Path) -> Path:
    """Where the bake file of ``images`` lives: ``<images>/../docker-bake.json``."""
    return Path(images).parent / BAKE_FILE


def _write_bake(text: str, images: Path) -> Path:
    # The bake file beside ``images``, atomically (builder.files); its owner was checked.
    return files_.write_atomic(bake_path(images), text)


def check_bake(text: str, images: Path) -> list[str]:
    """``["stale: docker-bake.json"]`` or ``["missing: docker-bake.json"]`` when the bake file beside
    ``images`` differs from ``text``; empty when it is fresh."""
    path = bake_path(images)
    if not path.is_file():
        return [f"missing: {BAKE_FILE}"]
    return [] if path.read_bytes() == text.encode() else [f"stale: {BAKE_FILE}"]


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
        elif path.read_bytes() != _encoded(files[rel]) or _exec_bit(path) != (path.name in EXECUTABLE):
            problems.append(f"stale: images/{rel}")
    for rel in sorted(present - set(files)):
        problems.append(f"extra: images/{rel}")
    return problems


def _encoded(data: str | bytes) -> bytes:
    # Compared as bytes: a tampered file that is not UTF-8 is stale, not a UnicodeDecodeError.
    return data.encode() if isinstance(data, str) else data


def _exec_bit(path: Path) -> bool:
    return bool(path.stat().st_mode & stat.S_IXUSR)


@dataclass(frozen=True)
class Rendered:
    """What ``builder render`` makes of the matrix, in memory, for the folder ``images``: ``files``
    ({path under images/: text}, :func:`render_committed`) and the bake file's text ``bake``."""

    files: dict[str, str]
    bake: str
    images: Path

    def stale(self) -> list[str]:
        """What on disk differs from it (:func:`check`, then :func:`check_bake`); empty when images/
        and its bake file are fresh."""
        return check(self.files, self.images) + check_bake(self.bake, self.images)


def preflight(matrix: Matrix, templates: Path, images: Path, specs: Iterable[ImageSpec], stopped: str,
              layers: bool = True) -> Rendered:
    """The "is images/ fresh" preflight of ``builder render`` and of the commands that build: the
    locks of ``specs`` checked offline (:func:`builder.generate.python_resolver.verify`, the layer locks
    too with ``layers``; :func:`builder.generate.apt_lock.verify`), then the matrix rendered from the
    committed locks (:class:`Rendered`; :meth:`Rendered.stale` compares it with the disk). Raises
    ConfigError, whose line ends with ``stopped`` (what the caller did not do)."""
    specs = list(specs)
    python_resolver.verify(images, specs, layers=layers, stopped=stopped)
    apt_lock.verify(matrix, images, specs, stopped)
    return Rendered(render_committed(matrix, templates, images), bake.render(matrix, images.name), images)
