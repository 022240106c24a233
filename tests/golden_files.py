"""What each golden file under tests/golden/ holds, made by the builder's own code.

The unit tests compare against the committed files and never write them; ``python
tests/update_golden.py`` (``make golden``) rewrites them from these same functions, for a change
to the templates or the renderers that is meant (review the diff before committing it).
"""

from __future__ import annotations

from pathlib import Path

from repo import GOLDEN_SMALL, ROOT

from builder import extend, matrix
from builder.generate import apt_lock, bake, lock, render

#: The small matrix's rendered images/ (its committed locks live there too, made by `builder lock`).
SMALL = GOLDEN_SMALL
#: The small matrix's bake file.
SMALL_BAKE = ROOT / "tests" / "golden" / "small-docker-bake.json"
#: One Dockerfile per examples/ recipe, as `builder extend` renders it.
EXTEND = ROOT / "tests" / "golden" / "extend"
EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if p.is_dir())
#: What a failing comparison tells the reader to run when the change is meant.
UPDATE = "if the change is meant, run `python tests/update_golden.py` (make golden) and review the diff"
#: The registry the extend examples' golden Dockerfiles name.
EXTEND_REGISTRY = "127.0.0.1:5000"


def small_matrix() -> matrix.Matrix:
    return matrix.load(ROOT / "tests" / "fixtures" / "matrix-small.yaml")


def small_locks(m: matrix.Matrix, images: Path = SMALL) -> dict:
    """The small matrix's committed locks (``images`` defaults to the golden folder)."""
    return lock.read_every(images, m.images())


def rendered_small() -> dict[str, str | bytes]:
    """``{path under images/: content}``: what `builder render` makes of the small matrix."""
    m = small_matrix()
    return render.render_all(m, ROOT / "templates", small_locks(m), apt_lock.read_every(SMALL, m.images()))


def committed_small() -> dict[str, str]:
    """The committed golden files of the small matrix, keyed like :func:`rendered_small`."""
    return {p.relative_to(SMALL).as_posix(): p.read_text() for p in SMALL.rglob("*") if p.is_file()}


def bake_small() -> str:
    """The bake file of the small matrix."""
    return bake.render(small_matrix())


def example_config(example: Path) -> Path:
    return next(p for p in example.iterdir() if p.name in ("extend.yml", "inference-config.json"))


def extend_dockerfile(example: Path, m: matrix.Matrix | None = None) -> str:
    """The Dockerfile `builder extend` renders for an examples/ recipe, against the project's matrix."""
    m = m or matrix.load(ROOT / "matrix.yaml")
    return extend.prepare(example_config(example), m, EXTEND_REGISTRY).dockerfile


def extend_golden(example: Path) -> Path:
    return EXTEND / f"{example.name}.Dockerfile"
