"""Run: the images of a run, built, tagged, smoke-tested and published on a real Engine and registry.

Takes the matrix's image specs and the committed ``images/`` and ``docker-bake.json``; gives tagged
local images, pushed manifests and indexes with their SBOMs, and ``build/report.json``
(:mod:`.report`). :mod:`.pipeline` schedules the images and prepares the one
:class:`.context.RunContext`; :mod:`.steps` are the steps one image goes through; :mod:`.merge`
joins the jobs of a run split by platform.
"""
