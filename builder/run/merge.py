"""Merge: the jobs of a run split by platform join into image indexes.

In a run split by platform (``builder ci-matrix --by-platform``: one job per image tree and platform,
each on its platform's native runner), every job runs ``builder all --by-platform``: it builds,
smoke-tests and pushes each build of a multi-platform image under that platform's tags only
(:class:`builder.run.policy.PerPlatform`). :func:`merge` then reads every job's report and, for each
image whose every matrix platform passed and was pushed, makes the index tag and ``latest`` one
image index of those manifests, as docker-stacks' merge-tags job does: under the jobs' policy's
merged one (:meth:`builder.run.policy.PerPlatform.merged`, an index), whose ``latest`` moves when
:func:`builder.run.policy.latest_moves` says, as in a single run. An image with a platform missing
or failed gets neither: ``latest`` moves only when every platform passed. Each merged image is a new
record that enters tested and moves along the report's status machine. The result is one report of
the same shape (:class:`builder.run.report.RunReport`), which :mod:`builder.catalog` reads.
"""

from __future__ import annotations

from typing import Callable

from builder.engine.registry import Registry
from builder.matrix import ImageSpec, Matrix, naming
from builder.matrix.inputs import ConfigError, one_line, shown
from builder.matrix.platform import Platform
from builder.run import policy, publish
from builder.run.report import PUSHED, ImageReport, PlatformBuild, Status
from builder.sign import Signer, SignError, cosign


def _found(entries: list[ImageReport]) -> dict[Platform, tuple[str, PlatformBuild]]:
    # {platform: (repository, build)} over the entries whose builds were pushed.
    return {b.platform: (e.repository, b) for e in entries if e.status in PUSHED for b in e.platforms if b.digest}


def _problem(platforms: tuple[Platform, ...], entries: list[ImageReport], found: dict) -> str | None:
    # Why an image cannot be merged, or None.
    missing = [p for p in platforms if p not in found]
    if missing:
        failed = [f"{e.status}" + (f" ({e.error})" if e.error else "") for e in entries if e.status not in PUSHED]
        return f"no pushed {', '.join(map(str, missing))} build in the reports" + (f": {'; '.join(failed)}" if failed else "")
    if len({r for r, _ in found.values()}) != 1:
        return f"the platforms were pushed to different repositories: {sorted({r for r, _ in found.values()})}"
    for key in ("framework_version", "python_version"):
        if len({getattr(b, key) for _, b in found.values()}) != 1:
            return f"the platforms' {key.replace('_', ' ')}s differ: {sorted(str(getattr(b, key)) for _, b in found.values())}"
    return None


def check_repositories(reports: dict[str, list[ImageReport]], registry: str) -> None:
    """Refuse reports whose images would be pushed elsewhere than ``registry`` gives them
    (:func:`builder.matrix.naming.repository`): the push target comes from the command line, never from a
    report. Raises ConfigError (one line: the image, both repositories) before anything is pushed."""
    for name, entries in reports.items():
        expected = naming.repository(registry, name)
        for entry in entries:
            if entry.repository != expected:
                raise ConfigError([f"--report: {name} names repository {shown(entry.repository)}, "
                                   f"not {expected} (--registry {registry}); refusing to push anywhere else"])


def _index(merged_as: policy.Manifest, spec: ImageSpec, found: dict, registry: Registry, merged: ImageReport,
           signer: Signer | None) -> None:
    # Make the index of every platform's build under its immutable tag (``merged_as``'s name for
    # them), sign it (with a signer), then give it the moving tags when
    # :func:`builder.run.policy.latest_moves` says, and record it on ``merged``, published or
    # unchanged; raises PublishError or SignError.
    builds = {p: found[p][1] for p in spec.platforms}
    versions = {p: (b.framework_version, b.python_version) for p, b in builds.items()}
    (immutable,), _ = merged_as.build_tags({p: b.image_id for p, b in builds.items()}, versions.__getitem__,
                                           lambda platform: None)
    merged.repository, merged.tags = found[spec.platforms[0]][0], [immutable, *merged_as.tags.moving]
    if signer is not None:  # an index is signed only over builds its jobs signed with the same key
        for b in builds.values():
            if not signer.signed(cosign.by_digest(merged.repository, b.digest)):
                raise SignError(f"the {b.platform} build {b.digest} is not signed with this key: run the jobs "
                                "with the same --signing-key")
    merged.digest, pushed = merged_as.publish_image(registry, merged, merged_as.fixed_tags(merged))
    index = cosign.by_digest(merged.repository, merged.digest)
    if signer is not None and not signer.signed(index):  # signed by an earlier merge: nothing to upload
        signer.sign(index)
        pushed = True
    moves = policy.latest_moves(merged_as, merged, spec.platforms)
    if moves is None:
        raise publish.PublishError(f"{merged.repository}: the moving tags do not move: the image is {merged.status}")
    moved = merged_as.move_image(registry, merged, moves.image)
    merged.error, merged.signature = None, "signed" if signer is not None else "unsigned"
    merged.move(Status.PUBLISHED if pushed or moved else Status.UNCHANGED)


def _record(first: ImageReport, merged_as: policy.Manifest, spec: ImageSpec, found: dict) -> ImageReport:
    # The merge's record of the image: a new record made from ``first`` (the report of the job that
    # built the matrix's first platform), under ``merged_as``, with every pushed build. It enters
    # tested, as the image of ``builder publish`` does: its jobs tested their builds.
    merged = first.model_copy(update={"publish": merged_as.name, "status": Status.PLANNED, "digest": None,
                                      "platforms": [found[p][1] for p in spec.platforms if p in found]})
    merged.move(Status.TESTED)
    return merged


def merge_one(matrix: Matrix, spec: ImageSpec, entries: list[ImageReport], registry: Registry,
              log: Callable[[str], None], signer: Signer | None = None) -> ImageReport:
    """The merged report of one image from its jobs' ``entries`` (see :func:`merge`)."""
    policies = policy.table(matrix.data.tags)
    merged_as = next(filter(None, (policies[e.publish].merged() for e in entries)), None)
    if merged_as is None:
        return entries[-1]
    found = _found(entries)
    first = next((e for e in entries if e.built(spec.platforms[0])), entries[0])
    why = _problem(spec.platforms, entries, found)
    if why is None:
        try:
            merged = _record(first, merged_as, spec, found)
            _index(merged_as, spec, found, registry, merged, signer)
            log(f"{spec.name} {merged.status} {merged.repository} {', '.join(merged.tags)} @ {merged.digest} "
                f"({', '.join(map(str, spec.platforms))})")
            return merged
        except (publish.PublishError, SignError, ValueError) as exc:
            why = str(exc)
    merged = _record(first, merged_as, spec, found)  # what the failed attempt recorded is dropped
    merged.fail(f"not merged: {why}")
    log(one_line(f"{spec.name} publish-failed: not merged: {why}"))
    return merged


def merge(matrix: Matrix, reports: dict[str, list[ImageReport]], registry: Registry,
          log: Callable[[str], None] = print, signer: Signer | None = None) -> list[ImageReport]:
    """Join the per-platform builds of ``reports`` (:func:`builder.run.report_file.read_all`) into image
    indexes in ``registry``; return the merged reports in matrix order.

    An image none of whose reports is per-platform (published whole, with its ``latest``, by its
    job) is passed through. A merged report has ``publish`` index, every platform's build,
    ``tags`` = [index tag (:func:`builder.run.taggers.index_tag`), moving tags], the index's ``digest`` and
    status published (unchanged when the registry already had it); one that cannot be merged has
    status publish-failed and the reason in ``error``. With a ``signer`` the index is signed, by
    digest, before the moving tags name it. ``log`` gets one line per image. Raises nothing for a
    registry or signing error: it is the image's error."""
    return [merge_one(matrix, spec, reports[spec.name], registry, log, signer)
            for spec in matrix.images() if reports.get(spec.name)]
