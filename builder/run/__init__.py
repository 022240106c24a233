"""Run: the images of a run, built, tagged, smoke-tested and published on a real Engine and registry.

Takes the matrix's image specs and the committed ``images/`` and ``docker-bake.json``; gives tagged
local images, pushed manifests and indexes with their SBOMs, and ``build/report.json``
(:mod:`.report`). :mod:`.pipeline` runs a stage: :mod:`.preparation` makes the one
:class:`.context.RunContext`, :mod:`.task_graph` and :mod:`.schedule` schedule each image's tasks
(:mod:`.tasks`), which run the steps one image goes through (:mod:`.steps`) that the stage's
:class:`.stages.Steps` names; :mod:`.merge` joins the jobs of a run split by platform.
"""
