"""Stage 2 — plan: the build order of the images (parents before children).

Pure functions over a ``{node: [dependencies]}`` mapping, built on :mod:`graphlib` from the
standard library; the matrix stage uses them both to reject parent cycles and to order images.
"""

from __future__ import annotations

import graphlib


def build_order(deps: dict[str, list[str]]) -> list[str]:
    """Nodes in an order where every dependency comes first; ties keep ``deps``' own order.

    Raises graphlib.CycleError on a cycle (the matrix stage reports cycles before calling this).
    """
    sorter = graphlib.TopologicalSorter({n: d for n, d in deps.items()})
    sorter.prepare()
    position = {n: i for i, n in enumerate(deps)}
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=lambda n: position.get(n, len(position)))
        order.extend(ready)
        sorter.done(*ready)
    return order


def find_cycle(deps: dict[str, list[str]]) -> list[str] | None:
    """One dependency cycle as a list of nodes (first node repeated at the end), or None."""
    try:
        graphlib.TopologicalSorter(deps).prepare()
    except graphlib.CycleError as exc:
        cycle = list(reversed(exc.args[1]))
        return cycle
    return None
