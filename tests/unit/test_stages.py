"""Which steps a stage runs is one value, made once from the stage's name (:class:`Steps`)."""

from __future__ import annotations

import dataclasses

import pytest

from builder.run.context import Options
from builder.run.report import Status
from builder.run.stages import Steps


@pytest.mark.parametrize("stage, build, test, publish, done", [
    ("build", True, False, False, Status.BUILT),
    ("test", True, True, False, Status.TESTED),
    ("publish", False, False, True, None),
    ("all", True, True, True, None),
])
def test_each_stage_runs_its_steps(stage, build, test, publish, done):
    steps = Steps.of(stage)
    assert (steps.build, steps.test, steps.publish, steps.done) == (build, test, publish, done)
    assert Options(stage=stage).steps == steps


def test_the_options_steps_follow_their_stage_and_are_not_an_argument():
    opts = Options(stage="build")
    assert dataclasses.replace(opts, stage="publish").steps == Steps.of("publish")
    with pytest.raises(TypeError):
        Options(stage="build", steps=Steps.of("all"))  # derived, never given
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.steps = Steps.of("all")


def test_a_name_that_is_not_a_stage_is_refused():
    with pytest.raises(ValueError, match="not a stage"):
        Steps.of("deploy")
    with pytest.raises(ValueError, match="not a stage"):
        Options(stage="merge")
