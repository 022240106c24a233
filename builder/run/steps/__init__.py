"""The steps one image goes through in a run, one module each. A step is a function of the
:class:`builder.run.context.RunContext`, the image's spec and its report, which it only reads; it
returns a value (most of them frozen dataclasses with a ``record`` method; the size gate and the
pulls return nothing). The image's tasks (:mod:`builder.run.tasks`) record each value on their own
copy of the report, and the scheduler's thread adopts the copy; only :func:`.tag.drop_run_tags`,
after the schedule, writes the run's reports itself:

- :mod:`.up_to_date`: each platform's build id; an image the registry already publishes is up to
  date -> :class:`builder.run.steps.up_to_date.UpToDate`;
- :mod:`.build`: build one platform through bake -> :class:`builder.run.steps.build.Build`, named
  by its run tag (:func:`run_tag`);
- :mod:`.size` and :mod:`.test`: the size gate and the smoke test of that platform's build
  (-> :class:`builder.run.steps.test.Tested`; a lane returns both as :class:`builder.run.tasks.Lane`);
- :mod:`.tag`: once every platform passed, name the builds (the image's publish policy,
  :mod:`builder.run.policy`) -> :class:`builder.run.steps.tag.Named`; the SBOM of each (:mod:`.test`
  -> :class:`builder.run.report.SbomRecord`); ``promote``: the moving tags;
- :mod:`.sign`: attest and sign a pushed build or index -> :class:`builder.run.steps.sign.Signed`;
- :mod:`.push`: push each build, its SBOM, and the index the policy asks for ->
  :class:`builder.run.steps.push.Pushed`; for ``builder publish``, the image a test run left ->
  :class:`builder.run.steps.push.TestedImage`.

A step that fails raises :class:`StepFailed` with one line; :mod:`builder.run.tasks` moves the image's
status (:class:`builder.run.report.Status`) and goes on with the other images.
"""

from __future__ import annotations

from dataclasses import dataclass

from builder.engine import children
from builder.matrix import ImageSpec
from builder.matrix.platform import DEFAULT, Platform
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


def label(spec: ImageSpec, platform: Platform) -> str:
    """The name logs, SBOM files and messages use for one platform's build: ``<name>``, or
    ``<name>-arm64`` for another platform than linux/amd64."""
    return spec.name + platform.suffix


def run_tag(run_id: str, platform: Platform) -> str:
    """The tag a build of ``platform`` carries in its image's repository from its build until the run
    ends (:func:`builder.run.steps.tag.drop_run_tags`): ``build-<run id>``, plus ``-<arch>`` for
    another platform than linux/amd64. Its smoke test, its children's builds of that platform and
    the size gate name it by this tag before the image's own tags exist (an image index's immutable
    tag needs every platform's image id, :class:`builder.run.policy.Index`)."""
    return f"build-{run_id}{platform.suffix}"


def local_ref(rep: ImageReport, platform: Platform = DEFAULT) -> str:
    """The local reference of the build of ``platform``: ``<repository>:<its own tag>``. Never
    changes ``rep``. Raises StepFailed when the image has no tagged build for ``platform``."""
    found = rep.built(platform)
    if found is None or found.tag is None:
        raise StepFailed(f"{rep.name} has no tagged {platform} build")
    return f"{rep.repository}:{found.tag}"
