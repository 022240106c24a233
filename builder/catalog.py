"""Catalog: takes run reports, locks and the built images, gives the table of published images
(Azure ML's documentation columns).

:func:`rows` reads three sources and nothing else: the run reports (``build/report.json``: status,
tags, digests, size, SBOM), the committed locks (key packages at their locked versions) and the
built images themselves (the taggers of :mod:`builder.run.taggers` read the framework and Python versions
inside the image, /etc/os-release gives the OS, the labels give CUDA/cuDNN/NCCL and the minimum NVIDIA
driver; a GPU image's smoke-test record gives its framework's CUDA targets and whether a GPU verified
it: "GPU-ready (CPU-verified)" until a GPU test passed). An image is listed
only when its run ended published, unchanged, up-to-date or tested. An up-to-date image (not built
by the run, :mod:`builder.run.steps.up_to_date`) keeps its row from the catalog written before
(:func:`previous_rows`) when the registry's digest is still the row's, so a run that changed nothing
pulls nothing to write its catalog. :func:`markdown` and :func:`write` give ``docs/images.md`` and
``docs/images.json``.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Annotated, Iterator, Literal

import docker
from packaging.utils import canonicalize_name
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from builder import files
from builder.engine import disk, images
from builder.engine.images import uncompressed_bytes
from builder.generate import lock
from builder.matrix import ImageSpec, Matrix, grammar
from builder.matrix.inputs import ConfigError
from builder.matrix.platform import Platform, oci_name
from builder.matrix.validation import pydantic_lines
from builder.run import report_file, taggers
from builder.run.report import (PASSED, Bytes, Count, Digest, GpuValue, ImageName, ImageReport, PlatformBuild,
                                 Status, Tag, Version)

#: The largest catalog JSON read back (bytes): the disk estimate's bound, for the same file.
MAX_CATALOG = disk.MAX_CATALOG

#: Report statuses whose image passed its smoke test.
LISTED = PASSED
#: Always shown among the key packages when installed (the serving stack).
SERVING = ("azureml-inference-server-http",)

#: One line of free text (a framework's title as the matrix gives it, the OS's PRETTY_NAME).
Text = Annotated[str, BeforeValidator(grammar.text)]
Reference = Annotated[str, BeforeValidator(grammar.docker_reference)]
Package = Annotated[str, BeforeValidator(grammar.distribution_name)]
IsoDate = Annotated[str, BeforeValidator(grammar.iso_date)]


class Row(BaseModel):
    """One catalog line, each value checked against the grammar it was made by, whether read from an
    image or back from an earlier catalog (:func:`previous_rows`). ``uncompressed_bytes``: the
    image's layers uncompressed, as an Engine stores them; ``compressed_bytes``: the layers the
    registry serves, what a pull downloads (None for an image not pushed); both at most
    :data:`builder.matrix.grammar.MAX_SIZE`. ``packages`` maps a key package to its installed
    (locked) version; ``digest`` is the registry's manifest digest (None for an image not pushed);
    ``signed``: the run signed it (:mod:`builder.run.steps.sign`); ``debian_index_date`` (UTC, ISO
    8601) and ``debian_security_pending`` (a count) the image's labels from its base lock: the date
    of the Debian indexes its packages were locked from, and how many security updates were pending
    then (:mod:`builder.generate.base_lock`; ``builder outdated`` tells today's). A GPU image's
    ``nccl`` and ``cuda_driver_min`` come from its labels (compat.yaml), ``cuda_arch`` (its
    framework's CUDA targets, where it says) and ``gpu_readiness`` from its smoke test's record
    (:data:`READINESS`)."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")
    name: ImageName
    framework: Text
    framework_version: Version
    device: Literal["cpu", "gpu"]
    python: Version
    os: Text
    cuda: Version | None
    cudnn: Version | None
    packages: dict[Package, Version]
    uncompressed_bytes: Bytes | None
    compressed_bytes: Bytes | None
    immutable_tag: Tag
    reference: Reference
    digest: Digest | None
    sbom_digest: Digest | None
    platform: Platform
    signed: bool = False
    debian_index_date: IsoDate | None = None
    debian_security_pending: Count | None = None
    nccl: Version | None = None
    cuda_driver_min: Version | None = None
    cuda_arch: GpuValue | None = None
    gpu_readiness: Literal["GPU-ready (CPU-verified)", "GPU-verified"] | None = None


#: A GPU image's readiness by where its smoke test verified it (the record's ``verified-on``): on a
#: machine without a GPU the loader checks (tests/by_image/gpu/test_gpu_ready.py) prove it ready;
#: only a passed GPU test (test_on_gpu.py) verifies it.
READINESS = {"cpu": "GPU-ready (CPU-verified)", "gpu": "GPU-verified"}


class CatalogFile(BaseModel):
    """``docs/images.json`` as :func:`write` writes it: ``{"images": [row, ...]}``."""

    model_config = ConfigDict(strict=True, extra="forbid")
    images: list[Row]


def read_reports(paths: list[Path], matrix: Matrix | None = None) -> dict[str, ImageReport]:
    """``{image name: report}`` over every report in ``paths`` (later ones win), validated by
    :func:`builder.run.report_file.read_all` (an image not in ``matrix`` is refused). Raises ConfigError
    for a report that is missing, not this tool's report or names an image the matrix lacks."""
    names = [s.name for s in matrix.images()] if matrix is not None else None
    return {name: entries[-1] for name, entries in report_file.read_all(paths, names).items()}


@contextlib.contextmanager
def _local_image(client: docker.DockerClient, ref: str) -> Iterator[docker.models.images.Image]:
    # The built image for the block: local when this machine holds it, else pulled from the
    # registry (EngineError, one line, when it cannot be) and removed after the block, so a run
    # that removed local copies the registry holds (builder.run.space.LocalCopyRemover) does not
    # get them all back at once here.
    try:
        local = client.images.get(ref)
    except docker.errors.ImageNotFound:
        local = None
    if local is not None:
        yield local
        return
    pulled = images.pull(client, ref)
    try:
        yield pulled
    finally:
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(ref)


def _row(matrix: Matrix, spec: ImageSpec, r: ImageReport, b: PlatformBuild, images_dir: Path,
         client: docker.DockerClient) -> Row:
    # One platform's row: versions read inside the image, key packages from its lock. ConfigError
    # (one line) when what the image holds (its os-release, its labels) breaks a row's grammar.
    prefix = matrix.data.project.label_prefix
    ref = f"{r.repository}:{b.tag}"
    with _local_image(client, ref) as image:
        labels = image.labels or {}
        versions = lock.read(images_dir, spec.name, b.platform).versions()
        names = [*SERVING, *(canonicalize_name(req.name) for req in spec.requirements)]
        packages = {n: versions[n] for n in dict.fromkeys(names) if n in versions and not n.startswith("nvidia-")}
        fields = dict(name=spec.name, framework=spec.framework_title,
                      framework_version=taggers.framework_version(client, ref, spec), device=spec.device,
                      python=taggers.python_version(client, ref), os=taggers.os_name(client, ref),
                      cuda=labels.get(f"{prefix}.cuda"), cudnn=labels.get(f"{prefix}.cudnn"), packages=packages,
                      uncompressed_bytes=b.uncompressed_bytes or uncompressed_bytes(client, ref),
                      compressed_bytes=b.compressed_bytes, immutable_tag=r.tags[0], reference=ref, digest=b.digest,
                      sbom_digest=b.sbom.digest if b.sbom else None,
                      platform=oci_name(image.attrs.get("Os", "linux"), image.attrs.get("Architecture", "amd64"),
                                        image.attrs.get("Variant")), signed=r.signature == "signed",
                      debian_index_date=_label(labels, f"{prefix}.debian-index-date", grammar.iso_date),
                      debian_security_pending=_count(labels.get(f"{prefix}.debian-security-pending")),
                      **_gpu_fields(spec, b, labels, prefix))
    try:
        return Row(**fields)
    except ValidationError as exc:
        raise ConfigError(pydantic_lines(f"image {ref}", exc, Row)[:1]) from None


def _gpu_fields(spec: ImageSpec, b: PlatformBuild, labels: dict, prefix: str) -> dict:
    # A GPU image's NCCL and driver floor (labels) and its CUDA targets and readiness (test record).
    if spec.device != "gpu":
        return {}
    gpu = b.test.gpu if b.test else {}
    return {"nccl": labels.get(f"{prefix}.nccl"), "cuda_driver_min": labels.get(f"{prefix}.cuda-driver-min"),
            "cuda_arch": gpu.get("arch"), "gpu_readiness": READINESS.get(gpu.get("verified-on", "cpu"))}


def rows(matrix: Matrix, reports: dict[str, ImageReport], images_dir: Path, client: docker.DockerClient,
         previous: dict[tuple[str, Platform], Row] | None = None) -> list[Row]:
    """One :class:`Row` per matrix image and platform whose report passed (:data:`LISTED`), in
    matrix order. ``immutable_tag`` is the image's (an index's, for several platforms) and
    ``digest`` the platform's own manifest. An up-to-date image's row is its row in ``previous``
    ({(name, platform): row}) when that row names the same digest, immutable tag and reference,
    and the matrix's framework title and device."""
    out, previous = [], previous or {}
    for spec in matrix.images():
        r = reports.get(spec.name)
        if r is None or r.status not in LISTED or not r.tags:
            continue
        for b in (b for p in spec.platforms if (b := r.built(p)) and b.tag):
            kept = previous.get((spec.name, b.platform))
            same = (b.digest, r.tags[0], f"{r.repository}:{b.tag}", spec.framework_title, spec.device)
            if r.status == Status.UP_TO_DATE and kept and (
                    kept.digest, kept.immutable_tag, kept.reference, kept.framework, kept.device) == same:
                out.append(kept)
            else:
                out.append(_row(matrix, spec, r, b, images_dir, client))
    return out


def previous_rows(paths: list[Path]) -> dict[tuple[str, Platform], Row]:
    """``{(name, platform): row}`` of the catalog JSON files at ``paths`` that exist (later ones win),
    each at most :data:`MAX_CATALOG` bytes and read back strictly as :class:`CatalogFile`: every
    value through the grammar it was made by (:class:`Row`), before any reaches the Markdown.
    Raises ConfigError (one line: the file, the key path, what was expected) for a file that is
    not such a catalog."""
    out: dict[tuple[str, Platform], Row] = {}
    for path in (p for p in paths if p.is_file()):
        with path.open("rb") as f:
            raw = f.read(MAX_CATALOG + 1)
        refusal = "not a catalog written by `builder catalog` (delete it: every row is read from its image)"
        if len(raw) > MAX_CATALOG:
            raise ConfigError([f"{path}: larger than {MAX_CATALOG} bytes; {refusal}"])
        try:
            found = CatalogFile.model_validate_json(raw)
        except ValidationError as exc:
            raise ConfigError([f"{pydantic_lines(str(path), exc, CatalogFile)[0]}; {refusal}"]) from None
        out.update({(r.name, r.platform): r for r in found.images})
    return out


def _label(labels: dict, key: str, check) -> str | None:
    # A label's value when it keeps its grammar, else None (an image's labels are its builder's to say).
    try:
        return check(labels[key]) if key in labels else None
    except ValueError:
        return None


def _count(value: object) -> int | None:
    # ASCII digits only (str.isdigit() takes "²"), at most grammar.MAX_COUNT.
    ok = isinstance(value, str) and re.fullmatch(r"[0-9]{1,7}", value) and int(value) <= grammar.MAX_COUNT
    return int(value) if ok else None


def _patched(r: Row) -> str:
    # "2026-12-05 / 0": the Debian index date and the security updates pending then, or "-".
    if r.debian_index_date is None:
        return "-"
    return f"{r.debian_index_date[:10]} / {'-' if r.debian_security_pending is None else r.debian_security_pending}"


def _mb(size: int | None) -> str:
    return f"{size / 1e6:.0f} MB" if size else "-"


#: ASCII punctuation a table cell keeps as it is; every other is backslash-escaped (CommonMark:
#: any ASCII punctuation may be, https://spec.commonmark.org/0.31.2/#backslash-escapes), so no
#: text can close the cell (``|``), open HTML (``<``), an entity, a link or emphasis.
_PLAIN = re.compile(r"([!-/:-@\[-`{-~])")
_KEPT = set(" .,-()/:+")


def cell(text: str) -> str:
    """``text`` (one line) as literal text in a Markdown table cell: ASCII punctuation other than
    ``.,-()/:+`` backslash-escaped."""
    return _PLAIN.sub(lambda m: m.group() if m.group() in _KEPT else "\\" + m.group(), text)


def markdown(rows_: list[Row]) -> str:
    """``docs/images.md``: a do-not-edit header and one table row per image."""
    lines = ["<!-- Generated by `builder catalog` from build reports, locks and the built images — do not edit. -->",
             "# Images", "",
             "Every image below passed its smoke test (a real model served through `score.py`). Versions are read "
             "inside the image; key packages are the image's own pins at their locked versions "
             "(`images/<name>/requirements.lock` has the whole set, with hashes). Each image has a CycloneDX SBOM "
             "beside it in the registry (tag `sha256-<digest>.sbom`). A signed image carries signed SBOM, SLSA "
             "provenance and smoke-test attestations; check one with "
             "`builder verify <registry>/<image>:<tag> --key cosign.pub` (or `cosign verify --key cosign.pub`).", "",
             "A GPU image is *GPU-ready (CPU-verified)* when, tested on a machine without a GPU, every CUDA library its "
             "framework loads resolves in it but the driver's (libcuda.so.1, libnvidia-ml.so.1: the NVIDIA Container "
             "Toolkit mounts them); *GPU-verified* once its GPU tests passed on a GPU. CUDA, cuDNN and NCCL are the "
             "versions of the libraries it loads; *NVIDIA driver* is the minimum driver for its CUDA major (NVIDIA's CUDA "
             "Toolkit release notes, \"CUDA Toolkit and Corresponding Driver Versions\"); under the readiness are the CUDA "
             "targets its framework was built for, where it says.", "",
             "| Image | Platform | Framework | Version | Device | Python | OS | CUDA / cuDNN / NCCL | NVIDIA driver | GPU readiness | Key packages | Size | Pulled | Debian indexes / security pending | Signed | Immutable tag |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows_:
        cuda = f"{r.cuda} / {r.cudnn or '-'} / {r.nccl or '-'}" if r.cuda else "-"
        driver = f">= {r.cuda_driver_min}" if r.cuda_driver_min else "-"
        ready = (r.gpu_readiness or "-") + (f"<br>`{r.cuda_arch}`" if r.cuda_arch else "")
        pkgs = ", ".join(f"{n} {v}" for n, v in r.packages.items())
        digest = f"<br>`{r.digest[:19]}`" if r.digest else ""
        lines.append(f"| `{r.name}` | {r.platform} | {cell(r.framework)} | {r.framework_version} | {r.device.upper()} | "
                     f"{r.python} | {cell(r.os)} | {cuda} | {driver} | {ready} | {pkgs} | {_mb(r.uncompressed_bytes)} | {_mb(r.compressed_bytes)} | "
                     f"{_patched(r)} | "
                     f"{'signed' if r.signed else 'unsigned'} | `{r.immutable_tag}`{digest} |")
    return "\n".join(lines) + "\n"


#: The words the catalog's Markdown carries in its first line; only such a file is replaced.
GENERATED = "Generated by `builder catalog`"


def write(rows_: list[Row], md: Path, js: Path) -> None:
    """Write the Markdown table to ``md`` and the same rows as JSON (``{"images": [...]}``) to ``js``.
    Raises ConfigError, writing nothing, when ``md`` exists without the catalog's notice or ``js``
    exists and is not a catalog's JSON (the tool never replaces a file it did not write)."""
    for path, ours in ((md, lambda t: GENERATED in t[:200]), (js, lambda t: t.lstrip().startswith('{\n  "images"'))):
        if path.is_symlink() or (path.exists() and not ours(path.read_text(errors="replace"))):
            raise ConfigError([f"{path} exists and was not written by `builder catalog`; refusing to replace it"])
    files.write_atomic(md, markdown(rows_))
    files.write_atomic(js, json.dumps({"images": [r.model_dump() for r in rows_]}, indent=2) + "\n")
