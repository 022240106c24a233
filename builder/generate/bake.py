"""The bake file: takes the image specs, gives the matrix as a ``docker buildx bake`` definition (``docker-bake.json``).

Pure and offline, like :mod:`builder.generate.render`, and committed beside ``images/``. One target per image
(context, Dockerfile, the parent's target as a named context, args, tags, VCS labels), groups per
framework, per device and ``default``. See https://docs.docker.com/build/bake/reference/ for the format.

Parents and children. A child's Dockerfile starts ``FROM parent``, a named build context
(https://docs.docker.com/build/bake/contexts/): its target has ``contexts = {parent =
"target:<parent's target>"}``, so ``docker buildx bake -f docker-bake.json default`` builds the whole
tree in one invocation, each parent before its children, on any builder (BuildKit >= 0.10, Docker
Engine >= 23; the builder needs >= 26). ``builder`` itself runs one bake per image and platform, so
that a child's build of a platform starts only after its parent's build of that platform passed its
smoke test: its override file sets the ``parent`` context to ``docker-image://`` the parent's
tested build, and the parent's target is not built again.

Platforms. Each target lists its image's ``platforms``; a child may list fewer than its parent.

Variables (environment variables of the same name override them):

- ``REGISTRY``: ``host[:port][/namespace]`` prefix of every tag; empty for bare names.
- ``TAG``: the tag every target gets.
- ``REVISION``, ``CREATED``: the ``org.opencontainers.image.revision`` / ``.created`` labels.
- ``WHEELHOUSE_IMAGE``: an image holding a wheelhouse (default ``scratch``: none).
"""

from __future__ import annotations

import json
import re

from builder.matrix import Matrix

#: The named build context a child's Dockerfile starts FROM.
PARENT_CONTEXT = "parent"

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


def bake_file(matrix: Matrix, images_dir: str = "images") -> dict:
    """The bake definition as a JSON-ready dict: ``{"variable": …, "group": …, "target": …}``: one
    target per image, a child's with its parent's target as its ``parent`` context; groups per
    framework, per device and ``default``.

    ``images_dir`` is the build contexts' folder relative to where bake runs (the repository root).
    """
    specs = matrix.images()
    targets: dict[str, dict] = {}
    groups: dict[str, list[str]] = {}
    for s in specs:
        t = target_name(s.name)
        args = {"WHEELHOUSE_IMAGE": "${WHEELHOUSE_IMAGE}"}
        if s.parent is None:
            args["BASE_IMAGE"] = s.base_image
        targets[t] = {
            "context": f"{images_dir}/{s.name}",
            "dockerfile": "Dockerfile",
            **({"contexts": {PARENT_CONTEXT: f"target:{target_name(s.parent)}"}} if s.parent else {}),
            "args": args,
            "labels": {"org.opencontainers.image.revision": "${REVISION}",
                       "org.opencontainers.image.created": "${CREATED}"},
            "tags": [image_ref(s.name)],
            "platforms": [p.name for p in s.platforms],
        }
        for group in (s.framework, s.device, "default"):
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
