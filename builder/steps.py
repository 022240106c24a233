"""The steps one image goes through in a run, each a function of the previous step's result:

``build`` (bake) -> :class:`Built` -> ``tag`` (the immutable tag) -> ``smoke_test`` ->
:class:`builder.smoke.TestResult` -> ``promote`` (``latest``) -> ``push``.

A step that fails raises :class:`StepFailed` with one line; :mod:`builder.pipeline` moves the image's
status (:class:`builder.report.Status`) and goes on with the other images. ``run`` is the
:class:`builder.pipeline.Pipeline` the image belongs to: its client, matrix, options and event lines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import docker
from rich.markup import escape

from builder import bake, build, children, lock, naming, publish, render, sbom, smoke, tag
from builder.expand import ImageSpec
from builder.report import ImageReport, Status


class StepFailed(Exception):
    """A step failed; the message is the one line the report and the event line show."""


@dataclass
class Built:
    """A built image: its id (``sha256:<hex>``) and the temporary tag bake gave it."""

    image_id: str
    temporary: str


def _stop_if_interrupted() -> None:
    if children.stopping():
        raise children.Interrupted("the run was interrupted")


def build_image(run, spec: ImageSpec, rep: ImageReport) -> Built:
    """Build ``spec`` through bake with a per-run override file (base or parent, wheelhouse,
    secrets). Raises StepFailed with the failing step's last line."""
    opt = run.opt
    target = bake.target_name(spec.name)
    args = {"WHEELHOUSE_IMAGE": run.wheelhouse}
    if spec.parent is None:
        args["BASE_IMAGE"] = run.base_refs[spec.name]
    else:
        parent = run.reports[spec.parent]
        args["PARENT_IMAGE"] = f"{parent.repository}:{parent.tags[0]}"
    labels = build.vcs_labels([opt.images_dir / a for a in run.lineage(spec)])
    temporary = f"build-{run.run_id}"
    override = opt.build_dir / "bake" / f"{target}.{run.run_id}.json"
    override.parent.mkdir(parents=True, exist_ok=True)
    run.say(spec.name, "building")
    with run.sources.secrets() as secrets, run.build_slot():
        override.write_text(json.dumps({"target": {target: {"args": args, "secret": secrets}}}, indent=2))
        try:
            result = build.bake(
                spec.name, target, [render.bake_path(opt.images_dir).resolve(), override.resolve()],
                opt.images_dir.resolve().parent,
                {"REGISTRY": run.registry, "TAG": temporary, "REVISION": labels["org.opencontainers.image.revision"],
                 "CREATED": labels["org.opencontainers.image.created"]},
                run.logs / f"{spec.name}.build.log", no_cache=opt.no_cache,
                on_step=lambda line: run.show(spec.name, escape(line)))
        finally:
            override.unlink(missing_ok=True)
    rep.build_seconds, rep.build_log = round(result.seconds, 1), str(result.log_path)
    rep.cached_steps, rep.steps = result.cached_steps, result.steps
    _stop_if_interrupted()
    if not result.ok:
        raise StepFailed(f"{result.error} (log {result.log_path})")
    return Built(result.image_id, temporary)


def tag_image(run, spec: ImageSpec, rep: ImageReport, built: Built) -> str:
    """Give the built image its immutable tag (taggers read the real versions; an identical image
    keeps the tag it had) and drop the temporary one. Returns the immutable tag."""
    client = run.client
    image = client.images.get(built.image_id)
    rep.image_id, rep.size_bytes = image.id, image.attrs["Size"]
    policy = run.matrix.data.tags
    own = naming.own_tags(image.tags, rep.repository)
    immutable = tag.existing_immutable(policy, own, image.id) or tag.immutable_tag(
        policy, tag.framework_version(client, image.id, spec), tag.python_version(client, image.id), image.id)
    image.tag(rep.repository, immutable)
    client.api.remove_image(f"{rep.repository}:{built.temporary}", noprune=True)  # only the temporary tag
    rep.tags = [immutable]
    rep.move(Status.BUILT)
    run.say(spec.name, f"built {rep.repository}:{immutable} in {rep.build_seconds:.0f} s "
                       f"({rep.cached_steps}/{rep.steps} steps cached, {rep.size_bytes / 1e6:.0f} MB)")
    return immutable


def smoke_test(run, spec: ImageSpec, rep: ImageReport, immutable: str) -> smoke.TestResult:
    """Run the image's smoke tests (at most ``test_jobs`` at once). Raises StepFailed, with the
    scoring containers' log tails kept in the report, when they fail."""
    with run.test_slot():
        run.say(spec.name, "smoke testing")
        t = smoke.run(spec, run.matrix.data.runtime, lock.read(run.opt.images_dir, spec.name),
                      f"{rep.repository}:{immutable}", run.opt.tests_root, run.logs)
    rep.test_seconds, rep.test_outcome, rep.test_log = round(t.seconds, 1), t.summary, str(t.log_path)
    rep.container_logs = [str(p) for p in t.container_logs]
    rep.seconds_to_healthy = t.seconds_to_healthy
    _stop_if_interrupted()
    if not t.ok:
        rep.container_log_tail = t.log_tail()
        raise StepFailed(f"{t.summary} (log {t.log_path})")
    return t


def make_sbom(run, spec: ImageSpec, rep: ImageReport, immutable: str) -> None:
    """Write the tested image's SBOM to ``build/sbom/<name>.cdx.json`` (:func:`builder.sbom.generate`).
    Raises StepFailed: an image without its SBOM gets no ``latest``."""
    _stop_if_interrupted()
    out = run.opt.build_dir / "sbom" / f"{spec.name}.cdx.json"
    try:
        made = sbom.generate(run.client, f"{rep.repository}:{immutable}", spec.name, run.matrix.data.runtime.venv,
                             spec.python, out, run.opt.build_dir, run.sources)
    except sbom.SbomError as exc:
        raise StepFailed(f"SBOM: {exc}") from None
    rep.sbom, rep.sbom_components = made["path"], made["components"]
    run.say(spec.name, f"SBOM {out} ({made['components']} components)")


def promote(run, rep: ImageReport, tested: smoke.TestResult) -> list[str]:
    """Give an image whose smoke test passed the moving tags (``latest``); returns all its tags."""
    image = run.client.images.get(rep.image_id)
    for moving in run.matrix.data.tags.moving:
        image.tag(rep.repository, moving)
        rep.tags.append(moving)
    rep.move(Status.TESTED)
    run.say(rep.name, f"[green]smoke test passed[/green] ({escape(tested.summary)}); tagged {', '.join(rep.tags)}")
    return rep.tags


def push(run, rep: ImageReport, tags: list[str]) -> publish.PublishResult:
    """Push ``tags`` (immutable first, moving last) and read the digest back."""
    _stop_if_interrupted()
    run.say(rep.name, "pushing")
    result = publish.push(run.client, rep.repository, tags)
    rep.registry_digest = result.digest
    if rep.sbom:
        try:
            rep.sbom_digest = sbom.push(run.client, rep.repository, result.digest, Path(rep.sbom))
        except sbom.SbomError as exc:
            raise StepFailed(f"SBOM push: {exc}") from None
    rep.move(Status.PUBLISHED if result.pushed else Status.UNCHANGED)
    run.say(rep.name, f"[green]{rep.status}[/green] {rep.repository} {', '.join(tags)} @ {result.digest}")
    return result


def tested_image(run, spec: ImageSpec, rep: ImageReport) -> list[str] | None:
    """For ``builder publish``: the tags of the image already tested and tagged ``latest`` (its
    newest immutable tag and the moving ones), or None (status skipped) when there is none."""
    moving = run.matrix.data.tags.moving
    try:
        image = run.client.images.get(f"{rep.repository}:{moving[0]}")
    except docker.errors.ImageNotFound:
        rep.move(Status.SKIPPED, f"no tested image {rep.repository}:{moving[0]} (run `builder test`)")
        run.say(spec.name, f"[yellow]skipped[/yellow]: {escape(rep.error)}")
        return None
    rep.image_id, rep.size_bytes = image.id, image.attrs["Size"]
    own = naming.own_tags(image.tags, rep.repository)
    rep.tags = sorted((t for t in own if t not in moving), reverse=True)[:1] + list(moving)
    made = sbom.made_for(run.opt.build_dir / "sbom" / f"{spec.name}.cdx.json", image.id)
    if made is None:  # the test run's SBOM is gone or describes another image: make it again
        make_sbom(run, spec, rep, rep.tags[0])
    else:
        rep.sbom, rep.sbom_components = made["path"], made["components"]
    rep.move(Status.TESTED)
    return rep.tags
