"""Size gate step: an image that grew more than :data:`LIMIT` over its row in the committed
catalog (docs/images.json) fails ``size-gate``, as AWS Deep Learning Containers fail a build that
grows past 1.2x its baseline. The registry's moving tags never name it.

Two sizes are compared, each where it is first known: the uncompressed size once the image is built
(:func:`gate`, before its smoke test: no local ``latest``, nothing pushed, its children skipped),
and the compressed bytes the registry serves once its builds are pushed under their immutable tags
(:func:`gate_pushed`, before the registry's moving tags move; the local ``latest`` has moved and
the children have started by then, as after any passed smoke test). An image
without a catalog row, or a size the row does not give, passes. ``--accept-size`` passes every
image; the catalog written from the run's report then records the new sizes.
"""

from __future__ import annotations

from typing import Mapping

from builder.matrix.inputs import one_line
from builder.matrix.platform import Platform
from builder.run.context import RunContext
from builder.run.report import ImageReport, PlatformBuild
from builder.run.steps import StepFailed

#: The largest growth that passes: 10 % over the catalog's size.
LIMIT = 1.10
#: How many of the layers that grew most the refusal names.
SHOWN_LAYERS = 3


class SizeGateFailed(StepFailed):
    """An image grew past :data:`LIMIT`; the message says old -> new and the layers that grew most."""


def _mb(n: int) -> str:
    return f"{n / 1e6:.0f} MB"


def over(kind: str, old: int | None, new: int | None) -> str | None:
    """``"<kind> 422 MB -> 544 MB (+29 %)"`` when ``new`` is more than :data:`LIMIT` times ``old``
    (bytes), else None (also when either is unknown)."""
    if not old or new is None or new <= old * LIMIT:
        return None
    return f"{kind} {_mb(old)} -> {_mb(new)} (+{(new / old - 1) * 100:.0f} %)"


def layer_growth(new: list[dict], old: list[dict], shown: int = SHOWN_LAYERS) -> list[str]:
    """The ``shown`` layers of ``new`` that grew most against ``old`` (both ``docker history``
    entries, ``{"CreatedBy": str, "Size": bytes}``; a layer is matched by its command), as
    ``"+120 MB RUN …"``; without ``old``, the largest layers of ``new``."""
    before: dict[str, int] = {}
    for h in old:
        before[str(h.get("CreatedBy", ""))] = before.get(str(h.get("CreatedBy", "")), 0) + int(h.get("Size") or 0)
    grown = sorted(((int(h.get("Size") or 0) - before.get(str(h.get("CreatedBy", "")), 0), str(h.get("CreatedBy", "")))
                    for h in new), reverse=True)
    return [f"+{_mb(g)} {one_line(' '.join(cmd.split()))[:120] or '(a layer without a command: the base image)'}"
            for g, cmd in grown[:shown] if g > 0]


def _history(ctx: RunContext, ref: str) -> list[dict]:
    # docker history of ``ref`` (newest layer first), or [] when the Engine has no such image.
    try:
        return list(ctx.client.api.history(ref))
    except Exception:  # docker.errors.ImageNotFound / APIError: nothing to compare with
        return []


def _refusal(ctx: RunContext, rep: ImageReport, b: PlatformBuild, grew: str) -> str:
    # One platform's line: what grew and, from the layers' history, where.
    moving = ctx.policy(rep).local_moving(b.platform)
    old = _history(ctx, f"{rep.repository}:{moving[0]}") if moving else []
    layers = layer_growth(_history(ctx, f"{rep.repository}:{b.tag}"), old)
    return f"{b.platform}: {grew}" + (f"; grew most: {', '.join(layers)}" if layers else "")


def gate(ctx: RunContext, rep: ImageReport, baseline: Mapping[tuple[str, Platform], tuple[int | None, int | None]],
         builds: list[PlatformBuild] | None = None) -> None:
    """Refuse the built image ``rep`` when one of ``builds`` (None: every build ``rep`` records; a
    lane gives its own, not yet recorded) has an uncompressed size more than :data:`LIMIT` times
    ``baseline[(name, platform)][0]`` (bytes), unless ``--accept-size``. Raises SizeGateFailed."""
    if ctx.options.accept_size:
        return
    lines = []
    for b in rep.platforms if builds is None else builds:
        grew = over("uncompressed", baseline.get((rep.name, b.platform), (None, None))[0], b.uncompressed_bytes)
        if grew:
            lines.append(_refusal(ctx, rep, b, grew))
    if lines:
        raise SizeGateFailed("size gate: " + "; ".join(lines) + " (--accept-size accepts it)")


def gate_pushed(ctx: RunContext, rep: ImageReport,
                baseline: Mapping[tuple[str, Platform], tuple[int | None, int | None]]) -> None:
    """The same for each pushed build's compressed bytes against ``baseline[(name, platform)][1]``,
    before any moving tag moves. Raises SizeGateFailed."""
    if ctx.options.accept_size:
        return
    lines = [f"{b.platform}: {grew}" for b in rep.platforms
             if (grew := over("compressed", baseline.get((rep.name, b.platform), (None, None))[1], b.compressed_bytes))]
    if lines:
        raise SizeGateFailed("size gate: " + "; ".join(lines) + " (--accept-size accepts it)")
