"""Base images: the bootstrap tag follows the recipe."""

from builder.engine import bases
from builder.matrix.schema import Base


def _base(**bootstrap):
    return Base(title="t", python="3.11", pull="debian:bookworm-slim", bootstrap={"suite": "bookworm", **bootstrap})


def test_a_changed_recipe_names_a_new_base():
    a, b = bases.bootstrap_ref("debian12", _base()), bases.bootstrap_ref("debian12", _base(variant="buildd"))
    assert a.startswith("builder-base/debian12:") and a != b
    assert a == bases.bootstrap_ref("debian12", _base())
