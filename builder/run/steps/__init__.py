"""The steps one image goes through in a run, one module each, every one a function of the
:class:`builder.run.context.RunContext`, the image's spec and its report:

- :mod:`.build`: build every platform through bake -> ``{platform: Built}``;
- :mod:`.tag`: name the builds (the image's publish policy, :mod:`builder.run.policy`) -> tags on each;
- :mod:`.test`: smoke-test and make the SBOM of each build -> its ``test`` and ``sbom`` records;
- :mod:`.tag` again, ``promote``: the moving tags, once every platform passed;
- :mod:`.push`: push each build, its SBOM, and the index the policy asks for -> digests.

A step that fails raises :class:`StepFailed` with one line; :mod:`builder.run.pipeline` moves the image's
status (:class:`builder.run.report.Status`) and goes on with the other images.
"""

from __future__ import annotations

from dataclasses import dataclass

from builder.engine import children
from builder.matrix import ImageSpec
from builder.matrix.compat import DEFAULT_PLATFORM
from builder.matrix.platform import Platform
from builder.run.report import ImageReport


class StepFailed(Exception):
    """A step failed; the message is the one line the report and the event line show."""


@dataclass(frozen=True)
class Built:
    """A built image: its id (``sha256:<hex>``) and the temporary tag bake gave it."""

    image_id: str
    temporary: str


def stop_if_interrupted() -> None:
    """Raise :class:`builder.engine.children.Interrupted` once the run is being stopped."""
    if children.stopping():
        raise children.Interrupted("the run was interrupted")


def label(spec: ImageSpec, platform: str) -> str:
    """The name logs, SBOM files and messages use for one platform's build: ``<name>``, or
    ``<name>-arm64`` for another platform than linux/amd64."""
    return spec.name + Platform.parse(platform).suffix


def local_ref(rep: ImageReport, platform: str = DEFAULT_PLATFORM) -> str:
    """The local reference of the build of ``platform``: ``<repository>:<its own tag>``. Never
    changes ``rep`` (a child reads its parent's report while the parent's worker writes it).
    Raises StepFailed when the image has no tagged build for ``platform``."""
    found = rep.built(platform)
    if found is None or found.tag is None:
        raise StepFailed(f"{rep.name} has no tagged {platform} build")
    return f"{rep.repository}:{found.tag}"
