"""Build an extension (:mod:`builder.extend`) on the Engine: make its base present, read what the base
holds, and build the written context through BuildKit."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import docker

from builder import engine
from builder.engine import images, plugins
from builder.engine.sources import Sources, wheelhouse_image
from builder.extend import Base, default_name, lock_requirements, prepare, write
from builder.matrix import Matrix
from builder.run import buildx


@dataclass
class Built:
    """What ``extend --build`` did: the base it used (``base``) and the build's result."""

    base: str
    result: buildx.BuildResult


def build_image(config_path: Path, matrix: Matrix, registry: str, template: Path | None, image_tag: str, out: Path,
                build_dir: Path, allow_outside: list[Path] = (), pinned: str | None = None) -> Built:
    """Prepare with what the base really holds (pulled with the config's credentials when missing),
    write the context to ``out`` and build it through BuildKit as ``image_tag``; the build log is
    ``build_dir``/logs/extend-<name>.build.log (``build_dir``: the build folder, also the Engine's
    and buildx's state); ``pinned``: the verified base digest to build FROM (see :func:`prepare`).
    Raises ExtendError for bad input (nothing written or built), EngineError when the base can be
    neither found nor pulled; a failed build is in the result."""
    client = engine.client(build_dir)
    ext = prepare(config_path, matrix, registry, template, allow_outside=allow_outside, pinned=pinned)
    auth = ext.config.base_image_registry.credentials() if ext.config.base_image_registry else None
    python, device = inspect_base(client, ext.base, auth, matrix.data.project.label_prefix)
    ext = prepare(config_path, matrix, registry, template, image_python=python, image_device=device,
                  allow_outside=allow_outside, pinned=pinned)
    sources = Sources.from_env()
    lock_requirements(ext, Path(matrix.path).resolve().parent / "images", sources, python)
    write(ext, out)
    plugins.ensure_buildx(build_dir)
    with sources.secrets() as secrets:
        result = buildx.build(image_tag, out, image_tag,
                                 {"WHEELHOUSE_IMAGE": wheelhouse_image(client, sources.wheelhouse)}, secrets,
                                 build_dir / "logs" / f"extend-{default_name(config_path)}.build.log")
    return Built(ext.base.ref, result)


def inspect_base(client, base: Base, auth: dict | None, label_prefix: str) -> tuple[str, str | None]:
    """Make the base image present (pulling it, with ``auth`` only for that pull, when missing) and
    read what it holds: ``(python version, or "" when it has no python3; device label or None)``.

    Raises EngineError (:func:`builder.engine.images.pull`: exit 1) when the image can be neither
    found nor pulled; the Engine's message names the reference, never the credentials.
    """
    try:
        image = client.images.get(base.ref)
    except docker.errors.ImageNotFound:
        image = images.pull(client, base.ref, auth)
    container = client.containers.create(image.id, entrypoint=["python3", "-c",
                                         "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                                         network_disabled=True)
    try:
        container.start()
        ok = container.wait(timeout=120)["StatusCode"] == 0
        python = container.logs(stderr=False).decode().strip() if ok else None
    except docker.errors.APIError:  # no python3 executable at all: the container never starts
        python = None
    finally:
        container.remove(force=True)
    return python or "", (image.labels or {}).get(f"{label_prefix}.device")
