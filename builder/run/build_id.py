"""Build ids (issue 22): the sha256 of everything that decides an image and its smoke test's verdict.

An image whose build id the registry already holds, published and tested, is not built, tested or
pushed again (:mod:`builder.run.steps.current`). The id covers, as Docker's Official Images' build
ids and AWS Deep Learning Containers' content hashes do (``scripts/ci/test_skip/hash_image_content.py``):

- the rendered build context (the Dockerfile and every file beside it, locks included) and the
  image's target in the committed bake file (its arguments, labels and platforms);
- the base image of every platform (root images: the local base's image id) and the platform the
  build stage runs on;
- the parent's build id (a child);
- the build arguments that reach the image (``SOURCE_DATE_EPOCH`` and the revision label);
- the builder's version and the files of the builder that decide a smoke test's verdict
  (:data:`HARNESS`);
- every file of the test folders the image runs (:func:`builder.run.smoke.folders`) and the shared
  files at the test root (``conftest.py``).

The id is the image's label :func:`label` (in its configuration, so one manifest and one small
blob tell it, without pulling a layer).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import builder

#: The builder's files (under its package) that decide a smoke test's verdict: the test runner and
#: the scoring container's deployment it uses.
HARNESS = ("run/smoke.py", "extend/deploy.py", "matrix/platform.py")
#: Caches the test run leaves in a test folder: never an input.
_IGNORED = ("__pycache__", ".pytest_cache")


@dataclass(frozen=True)
class Inputs:
    """What one image's build id is made of. Every mapping is ``{name: sha256 hex}`` of files
    (paths relative to their folder, ``/``-separated) or ``{platform: image id}``; ``bake_target``
    is the image's target in the committed bake file, ``args`` the build arguments that reach the
    image, ``parent`` the parent's build id (None for a root image)."""

    context: dict[str, str]
    bake_target: dict
    bases: dict[str, str]
    build_platform: str
    parent: str | None
    args: dict[str, str]
    builder_version: str
    harness: dict[str, str]
    tests: dict[str, str]


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


def harness_digests() -> dict[str, str]:
    """``{path: sha256 hex}`` of the builder's :data:`HARNESS` files, paths relative to the package."""
    package = Path(builder.__file__).parent
    return {name: file_digest(package / name) for name in HARNESS}


def suite_digests(tests_root: Path, folders: list[Path]) -> dict[str, str]:
    """``{path: sha256 hex}`` of the files at ``tests_root`` itself (``conftest.py``) and of every
    file under ``folders`` (test folders inside ``tests_root``), paths relative to ``tests_root``."""
    out = {p.name: file_digest(p) for p in sorted(tests_root.glob("*")) if p.is_file()}
    for folder in folders:
        out.update(folder_digests(folder, folder.relative_to(tests_root).as_posix() + "/"))
    return out


def label(label_prefix: str) -> str:
    """The image label that carries the build id: ``<label_prefix>.build-id``."""
    return f"{label_prefix}.build-id"


def version() -> str:
    """The builder's version (:data:`builder.__version__`)."""
    return builder.__version__
