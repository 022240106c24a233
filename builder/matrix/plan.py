"""Plan: takes image names and parents, gives the build order (parents before children), a
selection with its ancestors, and the jobs of a CI matrix.

Pure functions over a ``{node: [dependencies]}`` mapping, built on :mod:`graphlib` from the
standard library; the matrix stage uses them both to reject parent cycles and to order images.
"""

from __future__ import annotations

import fnmatch
import graphlib

from builder.matrix.platform import PLATFORMS, Platform


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


def tree_groups(parents: dict[str, str | None]) -> dict[str, list[str]]:
    """The images grouped by the root of their tree: ``{root: [root, descendants...]}``.

    ``parents`` maps each image to its parent (None for a root) in build order, as
    :meth:`builder.matrix.Matrix.images` gives them; each group keeps that order, so a job that
    builds one group builds parents first. Raises KeyError for a parent missing from ``parents``.
    """
    root_of: dict[str, str] = {}
    groups: dict[str, list[str]] = {}
    for name, parent in parents.items():
        root_of[name] = name if parent is None else root_of[parent]
        groups.setdefault(root_of[name], []).append(name)
    return groups


def ci_matrix(parents: dict[str, str | None], platforms: dict[str, tuple[Platform, ...]] | None = None) -> dict:
    """A GitHub Actions ``strategy.matrix`` (https://docs.github.com/en/actions/using-jobs/using-a-matrix-for-your-jobs):
    ``{"include": [{"root": <root image>, "images": "<space-separated names, parents first>"}, ...]}``,
    one job per image tree, as docker-library's bashbrew generate script splits its builds.

    With ``platforms`` (``{image: its platforms}``) the jobs are split by platform as well: one per
    image tree and platform, holding the tree's images built for that platform, each entry with
    ``platform`` (``linux/arm64``), ``arch`` (``arm64``) and ``runner`` (:attr:`Platform.runner`: a
    native arm64 runner builds and smoke-tests linux/arm64 without emulation, docker-stacks' way), in
    :data:`builder.matrix.platform.PLATFORMS` order."""
    include = []
    for root, names in tree_groups(parents).items():
        if platforms is None:
            include.append({"root": root, "images": " ".join(names)})
            continue
        for pf in sorted({p for n in names for p in platforms[n]}, key=list(PLATFORMS.values()).index):
            include.append({"root": root, "platform": pf.name, "arch": pf.arch, "runner": pf.runner,
                            "images": " ".join(n for n in names if pf in platforms[n])})
    return {"include": include}


def select(matrix, patterns: list[str]) -> list:
    """The images (``ImageSpec``) of ``matrix`` whose names match any glob in ``patterns``, plus their
    ancestors, in build order.

    Raises ValueError naming a pattern that matches nothing.
    """
    specs = matrix.images()
    if not patterns:
        return specs
    chosen: set[str] = set()
    for pattern in patterns:
        hits = [s.name for s in specs if fnmatch.fnmatchcase(s.name, pattern)]
        if not hits:
            raise ValueError(f"--select {pattern!r} matches no image (see `builder list`)")
        chosen.update(hits)
    by_name = {s.name: s for s in specs}
    for name in list(chosen):
        parent = by_name[name].parent
        while parent:
            chosen.add(parent)
            parent = by_name[parent].parent
    return [s for s in specs if s.name in chosen]
