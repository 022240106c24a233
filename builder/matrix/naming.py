"""Names: an image's name from its matrix cell, and the registry reference it is pushed under.

The one place that turns a matrix name into a registry reference (the pipeline, ``extend`` and
``serve`` all ask here).
"""

from __future__ import annotations

from packaging.version import Version


def image_name(framework: str, version: str, base: str, python: str, device: str,
               cuda: str | None = None, name_version: bool = True) -> str:
    """The image name of one matrix cell, after the Azure ML seeds' pattern.

    ``<framework>-<major.minor>-<os>-py<XY>-cpu-inference``, or for GPU cells
    ``<framework>-<major.minor>-<os>-py<XY>-cuda<cuda>-gpu-inference`` (``cuda`` as compat.yaml
    gives it: ``13.0``, or ``12`` when the wheels only name the major); the version part is left out
    when ``name_version`` is false (the minimal image). Example:
    ``image_name("sklearn", "1.9.1", "debian12", "3.11", "cpu")`` -> ``sklearn-1.9-debian12-py311-cpu-inference``.
    """
    py = Version(python).release
    parts = [framework]
    if name_version:
        release = Version(version).release
        parts.append(".".join(str(p) for p in (release + (0,))[:2]))
    parts += [base, f"py{py[0]}{py[1]}"]
    parts += [f"cuda{cuda}", "gpu"] if device == "gpu" else ["cpu"]
    parts.append("inference")
    return "-".join(parts)


def repository(registry: str, name: str) -> str:
    """The repository an image is tagged and pushed under: ``<registry>/<name>``, or ``name`` alone."""
    return f"{registry.rstrip('/')}/{name}" if registry else name


def own_tags(image_tags: list[str], repository: str) -> list[str]:
    """The tag names an image carries in ``repository`` (``image_tags`` as docker-py lists them:
    ``<repository>:<tag>``)."""
    return [t.rsplit(":", 1)[1] for t in image_tags if t.rsplit(":", 1)[0] == repository]


def reference(registry: str, name: str, tag: str = "latest") -> str:
    """``<registry>/<name>:<tag>``, or ``…@sha256:…`` when ``tag`` is a digest."""
    sep = "@" if ":" in tag else ":"
    return f"{repository(registry, name)}{sep}{tag}"
