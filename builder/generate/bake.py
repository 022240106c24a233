"""The bake file: takes the image specs, gives the matrix as a ``docker buildx bake`` definition (``docker-bake.json``).

Pure and offline, like :mod:`builder.generate.render`, and committed beside ``images/``. One target per image
(context, Dockerfile, args, tags, VCS labels), groups per framework, per device, per level of the
image tree and ``default``. See https://docs.docker.com/build/bake/reference/ for the format.

Parents and children. Bake can hand a target's result to another target as a named context
(``contexts = {parent = "target:…"}``), but that needs the Dockerfile frontend's named-context
capability (dockerfile 1.4, BuildKit 0.10); the BuildKit inside Docker Engine 20.10 refuses it
("unsupported frontend capability moby.buildkit.frontend.contexts", measured). So a child's
``PARENT_IMAGE`` names the parent's tag, and the tree is built one level at a time, parents first:
the ``level0``, ``level1``, … groups (``builder`` schedules each image as soon as its parent passed).

Platforms. Each target lists its image's ``platforms``. A multi-platform build in one bake run
needs a builder that can export an image index (the ``docker-container`` driver, pushing); on the
``docker`` driver of Engine 20.10, ``builder`` runs one platform at a time (``--set
<target>.platform=...``), loads each, and makes the index when it publishes.

Variables (environment variables of the same name override them):

- ``REGISTRY``: ``host[:port][/namespace]`` prefix of every tag; empty for bare names.
- ``TAG``: the tag every target gets, and the one children's ``PARENT_IMAGE`` names.
- ``REVISION``, ``CREATED``: the ``org.opencontainers.image.revision`` / ``.created`` labels.
- ``WHEELHOUSE_IMAGE``: an image holding a wheelhouse (default ``scratch``: none).
"""

from __future__ import annotations

import json
import re

from builder.matrix import ImageSpec, Matrix

#: bake's grammar for target and group names (buildx bake: 'only "[a-zA-Z0-9_-]+" are allowed').
NAME = re.compile(r"^[a-zA-Z0-9_-]+$")

#: The do-not-edit notice, the bake file's top-level ``_generated`` key (JSON has no comments).
NOTICE = "by `builder render` from matrix.yaml — do not edit; run `builder render`"

VARIABLES = {
    "REGISTRY": "",
    "TAG": "latest",
    "REVISION": "unknown",
    "CREATED": "1970-01-01T00:00:00Z",
    "WHEELHOUSE_IMAGE": "scratch",
}


def target_name(image: str) -> str:
    """The bake target of an image: its name with ``.`` (not allowed in bake names) turned into ``_``.

    ``sklearn-1.9-debian12-py311-cpu-inference`` -> ``sklearn-1_9-debian12-py311-cpu-inference``.
    Raises ValueError for a name that is still outside bake's grammar.
    """
    out = image.replace(".", "_")
    if not NAME.match(out):
        raise ValueError(f"image name {image!r} gives no valid bake target name")
    return out


def image_ref(name: str) -> str:
    """The bake expression of an image's reference: ``<REGISTRY>/<name>:<TAG>`` (no ``/`` when empty)."""
    return '${REGISTRY == "" ? "" : "${REGISTRY}/"}' + name + ":${TAG}"


def levels(specs: list[ImageSpec]) -> dict[str, int]:
    """Depth of each image in the tree: 0 for an image built FROM its base, parent's depth + 1 otherwise.
    ``specs`` must be in build order (parents first)."""
    depth: dict[str, int] = {}
    for s in specs:
        depth[s.name] = depth[s.parent] + 1 if s.parent else 0
    return depth


def bake_file(matrix: Matrix, images_dir: str = "images") -> dict:
    """The bake definition as a JSON-ready dict: ``{"variable": …, "group": …, "target": …}``.

    ``images_dir`` is the build contexts' folder relative to where bake runs (the repository root).
    """
    specs = matrix.images()
    depth = levels(specs)
    targets: dict[str, dict] = {}
    groups: dict[str, list[str]] = {}
    for s in specs:
        t = target_name(s.name)
        args = {"WHEELHOUSE_IMAGE": "${WHEELHOUSE_IMAGE}"}
        if s.parent:
            args["PARENT_IMAGE"] = image_ref(s.parent)
        else:
            args["BASE_IMAGE"] = s.base_image
        targets[t] = {
            "context": f"{images_dir}/{s.name}",
            "dockerfile": "Dockerfile",
            "args": args,
            "labels": {"org.opencontainers.image.revision": "${REVISION}",
                       "org.opencontainers.image.created": "${CREATED}"},
            "tags": [image_ref(s.name)],
            "platforms": list(s.platforms),
        }
        for group in (s.framework, s.device, f"level{depth[s.name]}", "default"):
            groups.setdefault(group, []).append(t)
    return {
        "variable": {k: {"default": v} for k, v in VARIABLES.items()},
        "group": {g: {"targets": ts} for g, ts in sorted(groups.items())},
        "target": targets,
    }


def render(matrix: Matrix, images_dir: str = "images") -> str:
    """``docker-bake.json``'s text: :func:`bake_file` as indented JSON with a trailing newline. JSON
    has no comments, so the do-not-edit notice is a top-level ``_generated`` key, which bake ignores."""
    data = {"_generated": NOTICE,
            **bake_file(matrix, images_dir)}
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
