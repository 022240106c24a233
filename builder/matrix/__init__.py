"""The matrix: ``matrix.yaml`` validated (:mod:`builder.matrix.schema`) against the compatibility
table (:mod:`builder.matrix.compat`) and expanded into image specs (:mod:`builder.matrix.expand`).

The matrix is the single source of image names, parents, build order, tags and test selection.
:func:`load` returns a :class:`Matrix`; :meth:`Matrix.images` gives the frozen :class:`ImageSpec`
cells in build order (parents first). Problems are :class:`MatrixError` lines.
"""

from __future__ import annotations

from pathlib import Path

from builder.matrix import compat
from builder.matrix.expand import ImageSpec, expand
from builder.matrix.inputs import ConfigError
from builder.matrix.schema import MatrixError, MatrixFile, load_file

__all__ = ["ImageSpec", "Matrix", "MatrixError", "MatrixFile", "load", "load_file"]


class Matrix:
    """A validated matrix file. ``path`` is kept for messages; ``data`` is the parsed model;
    ``compat`` the table it was checked against."""

    def __init__(self, path: Path, data: MatrixFile, table: compat.Compat):
        self.path = path
        self.data = data
        self.compat = table
        self._images = expand(path.name, data, table)

    def images(self) -> list[ImageSpec]:
        """All image cells in build order (every parent before its children)."""
        return list(self._images)

    def image(self, name: str) -> ImageSpec:
        """The cell called ``name``. Raises KeyError naming the known images."""
        for spec in self._images:
            if spec.name == name:
                return spec
        raise KeyError(f"no image {name!r} in {self.path.name} (see `builder list`)")

    def lineage(self, name: str) -> list[str]:
        """``name`` and its ancestors' names, from it up to the root image. Raises KeyError."""
        names = [name]
        while (spec := self.image(names[-1])).parent:
            names.append(spec.parent)
        return names

    def children(self, name: str) -> list[ImageSpec]:
        """Direct and indirect descendants of ``name``, in build order."""
        out: list[ImageSpec] = []
        names = {name}
        for spec in self._images:
            if spec.parent in names:
                out.append(spec)
                names.add(spec.name)
        return out


def load(path: Path, compat_path: Path | None = None) -> Matrix:
    """Read and validate a matrix file against the compatibility table (``compat_path``, by default
    compat.yaml beside the matrix) and expand it.

    Raises :class:`MatrixError` (one line per problem, each naming the file and key path) for
    everything :func:`builder.matrix.schema.load_file` rejects, unknown frameworks, bases or parents,
    parent cycles, duplicate image names and cells the table does not support.
    """
    path = Path(path)
    data = load_file(path)
    try:
        table = compat.load(Path(compat_path) if compat_path else path.parent / "compat.yaml")
    except ConfigError as exc:
        raise MatrixError(exc.lines) from None
    return Matrix(path, data, table)
