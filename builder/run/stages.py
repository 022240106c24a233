"""Which steps a stage runs, as one value: :class:`Steps`, made once from the stage's name
(:attr:`builder.run.context.Options.steps`) and read wherever the run branches on the stage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from builder.run.report import Status

#: A run's stage, by the command that runs it: ``builder build|test|publish|all``.
Stage = Literal["build", "test", "publish", "all"]


@dataclass(frozen=True)
class Steps:
    """The steps a stage runs. ``build``: the build ids and the up-to-date check, each platform's
    build and the builds' own tags (``builder build|test|all``); ``test``: each platform's size
    gate and smoke test, the SBOMs and the local moving tags (``builder test|all``); ``publish``:
    the push, signing included (``builder publish|all``: ``publish`` alone pushes the image a test
    run left tagged)."""

    build: bool
    test: bool
    publish: bool

    @classmethod
    def of(cls, stage: Stage) -> Steps:
        """The steps of ``stage``. Raises ValueError for a name that is not a :data:`Stage`."""
        try:
            return _OF[stage]
        except KeyError:
            raise ValueError(f"{stage!r} is not a stage (build, test, publish, all)") from None

    @property
    def done(self) -> Status | None:
        """The status an image ends the run in when its every step passed and the stage publishes
        nothing: built (``builder build``), tested (``builder test``); None when it publishes."""
        if self.publish:
            return None
        return Status.TESTED if self.test else Status.BUILT


_OF: dict[str, Steps] = {
    "build": Steps(build=True, test=False, publish=False),
    "test": Steps(build=True, test=True, publish=False),
    "publish": Steps(build=False, test=False, publish=True),
    "all": Steps(build=True, test=True, publish=True),
}
