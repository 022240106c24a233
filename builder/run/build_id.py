"""Build ids: the sha256 of everything that decides one platform's build of an image and
its smoke test's verdict.

A build whose build id the registry already holds, published and tested, is not built, tested or
pushed again (:mod:`builder.run.steps.up_to_date`). The id covers, as Docker's Official Images' build
ids and AWS Deep Learning Containers' content hashes do (``scripts/ci/test_skip/hash_image_content.py``):

- the platform, and the platform the build stage runs on;
- the rendered build context (the Dockerfile and every file beside it, locks included) and the
  image's target in the committed bake file (its arguments, labels and platforms);
- a root image's base images for the platform and for the build stage (their local image ids); a
  child's parent's build ids for the same two platforms;
- the build arguments that reach the image (``SOURCE_DATE_EPOCH`` and the revision label);
- the builder's version and every Python file of the builder package (:func:`builder_digests`):
  any change to the builder builds every image again, as a new builder version does for Docker's
  Official Images;
- the matrix's runtime section (the server's port, the model mount the smoke tests use);
- every file of the test folders the image runs (:func:`builder.run.smoke.folders`), the files at
  the test root (``conftest.py``), and the test data and ``conftest.py`` beside the test root.

Each platform's id depends on that platform's inputs only, so a run narrowed to one platform (or
one job of a run split by platform) gives the same build as a full run. The id is the image's
label :func:`label`, in its configuration: one manifest and one small blob tell it, without pulling
a layer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import builder

#: Caches the test run leaves in a test folder: never an input.
_IGNORED = ("__pycache__", ".pytest_cache")


@dataclass(frozen=True)
class Inputs:
    """What one platform's build id is made of. File mappings are ``{path: sha256 hex}`` (paths
    relative to their folder, ``/``-separated); ``bases`` (a root image) and ``parent`` (a child:
    the parent's build ids) are ``{platform: id}`` for ``platform`` and ``build_platform``;
    ``bake_target`` is the image's target in the committed bake file, ``args`` the build arguments
    that reach the image, ``runtime`` the matrix's runtime section, ``compression`` its layers'
    (matrix.yaml's ``compression``)."""

    platform: str
    build_platform: str
    context: dict[str, str]
    bake_target: dict
    bases: dict[str, str]
    parent: dict[str, str]
    args: dict[str, str]
    builder_version: str
    builder: dict[str, str]
    runtime: dict
    tests: dict[str, str]
    compression: str = "gzip"


def compute(inputs: Inputs) -> str:
    """The build id of ``inputs``: ``sha256:<hex>`` of their canonical JSON (keys sorted, no
    whitespace), so the same inputs give the same id on any machine."""
    doc = json.dumps(asdict(inputs), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(doc.encode()).hexdigest()


def file_digest(path: Path) -> str:
    """The sha256 hex digest of the file at ``path``, read in 1 MiB blocks. Raises OSError."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def folder_digests(folder: Path, prefix: str = "") -> dict[str, str]:
    """``{prefix + relative path: sha256 hex}`` of every regular file under ``folder`` (symbolic
    links as the path they name, caches of :data:`_IGNORED` left out); ``{}`` when ``folder`` does
    not exist. Raises OSError for a file that cannot be read."""
    if not folder.is_dir():
        return {}
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part in _IGNORED for part in rel.parts) or path.is_dir():
            continue
        key = prefix + rel.as_posix()
        out[key] = ("link:" + str(path.readlink())) if path.is_symlink() else file_digest(path)
    return out


def builder_digests() -> dict[str, str]:
    """``{path: sha256 hex}`` of every file of the builder package but compiled bytecode
    (``.pyc``, ``.pyo``) and caches, paths relative to the package (computed once per process)."""
    if not _BUILDER:
        package = Path(builder.__file__).parent
        _BUILDER.update({k: v for k, v in folder_digests(package).items() if not k.endswith((".pyc", ".pyo"))})
    return dict(_BUILDER)


_BUILDER: dict[str, str] = {}


def suite_digests(tests_root: Path, folders: list[Path]) -> dict[str, str]:
    """``{path: sha256 hex}`` of the files at ``tests_root`` itself (``conftest.py``), of every file
    under ``folders`` (test folders inside ``tests_root``), paths relative to ``tests_root``, and of
    what beside ``tests_root`` the smoke tests read: ``../conftest.py`` and ``../data/`` (the
    models' training data)."""
    out = {p.name: file_digest(p) for p in sorted(tests_root.glob("*")) if p.is_file()}
    for folder in folders:
        out.update(folder_digests(folder, folder.relative_to(tests_root).as_posix() + "/"))
    beside = tests_root.parent
    if (beside / "conftest.py").is_file():
        out["../conftest.py"] = file_digest(beside / "conftest.py")
    out.update(folder_digests(beside / "data", "../data/"))
    return out


def label(label_prefix: str) -> str:
    """The image label that carries the build id: ``<label_prefix>.build-id``."""
    return f"{label_prefix}.build-id"


def version() -> str:
    """The builder's version (:data:`builder.__version__`)."""
    return builder.__version__
