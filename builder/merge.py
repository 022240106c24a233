"""Stage 7b — merge: the jobs of a run split by platform join into image indexes.

In a run split by platform (``builder ci-matrix --by-platform``: one job per image tree and platform,
each on its platform's native runner), every job runs ``builder all --by-platform``: it builds,
smoke-tests and pushes each build of a multi-platform image under that platform's tags only
(``<tag>-<arch>``, ``latest-<arch>``). :func:`merge` then reads every job's report and, for each
image whose every matrix platform passed and was pushed, makes the index tag and ``latest`` one
image index of those manifests, as docker-stacks' merge-tags job does. An image with a platform
missing or failed gets neither: ``latest`` moves only when every platform passed. The result is one
report (``build/report.json``'s shape) that :mod:`builder.catalog` reads like a one-job run's.
"""

from __future__ import annotations

from typing import Callable

from builder import naming, publish, tag
from builder.compat import DEFAULT_PLATFORM
from builder.inputs import ConfigError, one_line, shown, text_block
from builder.matrix import Matrix

#: Report statuses of a job whose builds were pushed.
PUSHED = ("published", "unchanged")


def _problem(platforms: tuple[str, ...], entries: list[dict], found: dict[str, dict]) -> str | None:
    # Why an image cannot be merged, or None.
    missing = [p for p in platforms if p not in found]
    if missing:
        failed = [f"{e['status']}" + (f" ({e['error']})" if e.get("error") else "") for e in entries
                  if e["status"] not in PUSHED]
        return f"no pushed {', '.join(missing)} build in the reports" + (f": {'; '.join(failed)}" if failed else "")
    if len({f["repository"] for f in found.values()}) != 1:
        return f"the platforms were pushed to different repositories: {sorted({f['repository'] for f in found.values()})}"
    for key in ("framework_version", "python_version"):
        if len({f.get(key) for f in found.values()}) != 1:
            return f"the platforms' {key.replace('_', ' ')}s differ: {sorted(str(f.get(key)) for f in found.values())}"
    return None


def check_repositories(reports: dict[str, list[dict]], registry: str) -> None:
    """Refuse reports whose images would be pushed elsewhere than ``registry`` gives them
    (:func:`builder.naming.repository`): the push target comes from the command line, never from a
    report. Raises ConfigError (one line: the image, both repositories) before anything is pushed."""
    for name, entries in reports.items():
        expected = naming.repository(registry, name)
        for entry in entries:
            if entry.get("repository", "") != expected:
                raise ConfigError([f"--report: {name} names repository {shown(entry.get('repository', ''))}, "
                                   f"not {expected} (--registry {registry}); refusing to push anywhere else"])


def merge(matrix: Matrix, reports: dict[str, list[dict]], log: Callable[[str], None] = print) -> list[dict]:
    """Join the per-platform builds of ``reports`` (:func:`builder.report.read_entries`) into image indexes in the registry;
    return the merged report entries in matrix order.

    An image whose entries are not ``by_platform`` (published whole, with its ``latest``, by its job)
    is passed through. A merged entry is the linux/amd64 job's entry with every platform in
    ``platforms``, ``tags`` = [index tag (:func:`builder.tag.index_tag`), moving tags], the index's
    ``registry_digest`` and status published (unchanged when the registry already had it); one that
    cannot be merged has status publish-failed and the reason in ``error``. ``log`` gets one line
    per image. Raises nothing for a registry error: it is the entry's error."""
    out = []
    policy = matrix.data.tags
    for spec in matrix.images():
        entries = reports.get(spec.name)
        if not entries:
            continue
        if not any(e.get("by_platform") for e in entries):
            out.append(entries[-1])
            continue
        found = {p: {**facts, "repository": e["repository"]} for e in entries if e["status"] in PUSHED
                 for p, facts in e["platforms"].items() if facts.get("registry_digest")}
        first = next((e for e in entries if DEFAULT_PLATFORM in e["platforms"]), entries[0])
        merged = {**first, "platforms": {p: {k: v for k, v in f.items() if k != "repository"} for p, f in found.items()},
                  "by_platform": False}
        why = _problem(spec.platforms, entries, found)
        if why is None:
            one = found[spec.platforms[0]]
            tags = [tag.index_tag(policy, one["framework_version"], one["python_version"],
                                  [found[p]["image_id"] for p in spec.platforms]), *policy.moving]
            try:
                result = publish.push_index(one["repository"], tags, {p: found[p]["registry_digest"] for p in spec.platforms})
            except publish.PublishError as exc:
                why = str(exc)
            else:
                merged.update(repository=one["repository"], tags=tags, registry_digest=result.digest, error=None,
                              status="published" if result.pushed else "unchanged")
                log(f"{spec.name} {merged['status']} {one['repository']} {', '.join(tags)} @ {result.digest} "
                    f"({', '.join(spec.platforms)})")
        if why is not None:
            merged.update(status="publish-failed", error=text_block(f"not merged: {why}", 4096), registry_digest=None)
            log(one_line(f"{spec.name} publish-failed: not merged: {why}"))
        out.append(merged)
    return out
