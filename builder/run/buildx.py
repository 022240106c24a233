"""Build: takes a rendered build context, gives one image built through BuildKit, with
``docker buildx bake`` (matrix images) or ``docker buildx build`` (extensions).

The buildx CLI runs in a subprocess (provisioned by :func:`builder.engine.plugins.ensure_buildx`): its
``--progress=plain`` output goes to the image's log file, and the result is read from its
``--metadata-file`` (``containerimage.digest``: the image id on the ``docker`` driver, which is the
manifest's digest on the containerd image store and the config's on the classic store; the config's
digest names no image on the containerd store), not from the log. One bake invocation builds one target, so a failing image never cancels the others (bake
cancels every target of an invocation when one fails, measured); the pipeline runs several at once.
Package sources reach builds as BuildKit secrets (see :mod:`builder.engine.sources`).

No default attestations: buildx adds a provenance attestation to every image it stores on the
containerd image store (https://docs.docker.com/build/metadata/attestations/#creating-attestations),
which turns the image into an index with an ``unknown/unknown`` entry, records build times and
machine details (so no two builds' digests match), and would be pushed unsigned. With
``BUILDX_NO_DEFAULT_ATTESTATIONS=1`` (:data:`builder.engine.plugins.BUILDX_ENV`) each build is one
image manifest, the same on either image store.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import docker

from builder import files
from builder.engine import children, export, plugins

# A step line of buildx's plain progress: "#12 [stage-1 3/6] RUN ..." and "#12 CACHED".
_STEP = re.compile(r"^#(\d+) \[(?!internal\])[^\]]*\d+/\d+\] ")
_CACHED = re.compile(r"^#(\d+) CACHED$")
_OUTPUT = re.compile(r"^#(\d+) \d+\.\d+ (.*\S)")
_VERTEX_ERROR = re.compile(r"^#(\d+) ERROR: (.*)$")
_ERROR = re.compile(r"^ERROR: (.*)$")


@dataclass
class BuildResult:
    """Outcome of one build. ``seconds`` is wall time; ``image_id`` is ``sha256:<hex>`` or None;
    ``steps``/``cached_steps`` count the Dockerfile steps BuildKit ran or took from its cache."""

    name: str
    ok: bool
    image_id: str | None
    seconds: float
    log_path: Path
    error: str | None = None
    cached_steps: int = 0
    steps: int = 0


def vcs_source(paths: list[Path], repo: Path = Path(".")) -> tuple[str, int]:
    """``(revision, epoch)``: the newest commit that touched any of ``paths`` (the image's and its
    ancestors' build contexts) and its commit time (seconds since the Unix epoch), so both change
    only when the image's inputs do: the image's ``SOURCE_DATE_EPOCH``
    (https://reproducible-builds.org/docs/source-date-epoch/). Outside a git checkout:
    ``unknown`` and ``$SOURCE_DATE_EPOCH``, else 0."""
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%H %ct", "--", *map(str, paths)], cwd=repo,
                             capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        out = []
    return (out[0], int(out[1])) if len(out) == 2 else ("unknown", int(os.environ.get("SOURCE_DATE_EPOCH", "0")))


def rfc3339(epoch: int) -> str:
    """``epoch`` (seconds since the Unix epoch) as RFC 3339 in UTC: ``2026-12-01T18:29:12Z``."""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def vcs_labels(paths: list[Path], repo: Path = Path(".")) -> dict[str, str]:
    """``org.opencontainers.image.revision`` and ``.created`` (RFC 3339, UTC) of :func:`vcs_source`."""
    revision, epoch = vcs_source(paths, repo)
    return {"org.opencontainers.image.revision": revision, "org.opencontainers.image.created": rfc3339(epoch)}


def bake(name: str, target: str, bake_files: list[Path], cwd: Path, variables: dict[str, str],
         log_path: Path, no_cache: bool = False, on_step: Callable[[str], None] = lambda line: None,
         load_into: docker.DockerClient | None = None, reads: Sequence[Path] = ()) -> BuildResult:
    """Build one bake ``target`` of ``bake_files`` (later files override earlier ones) from ``cwd``;
    with ``load_into``, the target's output is :func:`builder.engine.export.output` on the
    containerd store, streamed into that Engine (:func:`builder.engine.export.run`).

    ``variables`` set the bake file's variables (REGISTRY, TAG, REVISION, …) through the
    environment of this invocation only. ``name`` is the image's name in the matrix. ``on_step``
    gets each step line as BuildKit starts it (the live progress line). ``reads`` are the files
    outside ``cwd`` the bake files name (the secrets' ``src``): each is granted with
    ``--allow=fs.read=PATH`` where buildx takes it (:func:`builder.engine.plugins.bake_takes_allow`).
    Never raises for a failed build: the result has ``ok=False`` and ``error`` (the last error line).
    """
    cmd = ["docker", "buildx", "bake", "--progress=plain", *(a for f in bake_files for a in ("-f", str(f)))]
    if reads and plugins.bake_takes_allow():
        cmd += [f"--allow=fs.read={path}" for path in reads]
    if no_cache:
        cmd.append("--no-cache")
    return _run(name, target, cmd, cwd, {**os.environ, **variables}, log_path, on_step, load_into)


def build(name: str, context: Path, tag: str, build_args: dict[str, str], secrets: list[str],
          log_path: Path, no_cache: bool = False) -> BuildResult:
    """``docker buildx build`` of ``context`` (a folder with a Dockerfile), tagged ``tag`` and loaded
    into the Engine. ``secrets`` are BuildKit secret specifications (``id=…,src=…``). Never raises
    for a failed build (see :func:`bake`)."""
    cmd = ["docker", "buildx", "build", "--progress=plain", "--load", "-t", tag]
    cmd += [a for k, v in build_args.items() for a in ("--build-arg", f"{k}={v}")]
    cmd += [a for s in secrets for a in ("--secret", s)]
    if no_cache:
        cmd.append("--no-cache")
    return _run(name, None, [*cmd, str(context)], Path.cwd(), dict(os.environ), log_path, lambda line: None)


class _Progress:
    """Reads buildx's plain progress line by line: the steps it started, those it took from its
    cache, each step's last output line, and the errors (the failing step's last line first)."""

    def __init__(self, on_step: Callable[[str], None]):
        self.on_step = on_step
        self.steps: set[str] = set()
        self.cached: set[str] = set()
        self.last_output: dict[str, str] = {}
        self.errors: list[str] = []

    def feed(self, line: str) -> None:
        step, hit, out = _STEP.match(line), _CACHED.match(line), _OUTPUT.match(line)
        failed, error = _VERTEX_ERROR.match(line), _ERROR.match(line)
        if step and step.group(1) not in self.steps:
            self.steps.add(step.group(1))
            self.on_step(line.split(" ", 1)[1][:100])
        elif hit:
            self.cached.add(hit.group(1))
        elif out:
            self.last_output[out.group(1)] = out.group(2).strip()
        elif failed:
            self.errors.append(_step_error(failed.group(2), self.last_output.get(failed.group(1))))
        elif error and not self.errors:
            self.errors.append(error.group(1).strip())


def _run(name: str, target: str | None, cmd: list[str], cwd: Path, env: dict[str, str], log_path: Path,
         on_step: Callable[[str], None], load_into: docker.DockerClient | None = None) -> BuildResult:
    env = {**env, **plugins.BUILDX_ENV}
    files.make_folder(log_path.parent)
    start = time.monotonic()
    progress = _Progress(on_step)
    with tempfile.TemporaryDirectory(prefix="builder-metadata-") as tmp:
        metadata = Path(tmp) / "metadata.json"
        full = [*cmd, "--metadata-file", str(metadata)] + ([target] if target else [])
        with io.TextIOWrapper(files.open_log(log_path), encoding="utf-8", errors="replace") as log:
            log.write("$ " + " ".join(full) + "\n")
            log.flush()

            def feed(line: str) -> None:
                log.write(line + "\n")
                progress.feed(line)
            exported = export.run(full, cwd, env, feed, load_into)
            if exported.start_error:
                return BuildResult(name, False, None, 0.0, log_path, f"cannot run docker buildx: {exported.start_error}")
        data = json.loads(metadata.read_text()) if metadata.is_file() and metadata.stat().st_size else {}
    result = data.get(target, {}) if target else data
    image_id = result.get("containerimage.digest")  # the image id on either store (module doc)
    error = None
    if exported.code != 0:
        error = "interrupted" if children.stopping() else (
            progress.errors[-1] if progress.errors else f"docker buildx exited with code {exported.code}")
    elif exported.load_error:
        error = f"docker load refused the build: {exported.load_error}"
    elif not image_id:
        error = "docker buildx reported no image id in its metadata file"
    return BuildResult(name, error is None, image_id if error is None else None, time.monotonic() - start, log_path,
                       error, len(progress.cached & progress.steps), len(progress.steps))


def _step_error(message: str, last_output: str | None) -> str:
    # "executor failed running [<whole command>]: exit code: 1" -> "exit code 1: <the step's last line>"
    code = re.search(r"exit code: (\d+)", message)
    head = f"a build step exited with code {code.group(1)}" if code else message[:200]
    return f"{head}: {last_output[:300]}" if last_output else head
