"""SBOM: takes a tested image, gives its CycloneDX JSON SBOM, and pushes it beside the image.

:func:`generate` reads the image's files without starting it (a created container's archive,
``GET /containers/{id}/archive``), so nothing runs under emulation for another platform's image:
the ``*.dist-info`` folders of the image's virtual environment (the form every wheel installs;
uv writes no ``.egg-info``), ``/etc/os-release`` and
``/var/lib/dpkg/status``. PyPI's ``cyclonedx-bom`` (https://cyclonedx-bom-tool.readthedocs.io/),
the builder's own, runs natively over those distributions: its ``environment`` command with ``-S``
takes the path of an interpreter started without ``site``, which is the extracted folder
(``PYTHONPATH``) and the standard library only. The Debian packages of the dpkg status (parsed by
``python-debian``) are components with ``pkg:deb`` package URLs
(https://github.com/package-url/purl-spec). The merged document is validated against the CycloneDX
1.6 JSON schema (cyclonedx-python-lib's, :mod:`builder.run.sbom_schema`) and written to
``build/sbom/<name>.cdx.json``.

:func:`push` stores it in the registry with PyPI's ``oras`` as an OCI artifact whose manifest names
the image manifest as its ``subject`` (OCI distribution spec 1.1, referrers) and is tagged
``sha256-<image digest hex>.sbom`` (cosign's convention), for registries without the referrers API.
The image's main component records, as properties, the versions the taggers read in the build
(:func:`version_properties`); a later run that finds the build published reads the SBOM back
(:func:`fetch`) and, with it, those versions (:func:`installed_versions`), without pulling a layer.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import docker
from debian.deb822 import Deb822
from packageurl import PackageURL

from builder import files
from builder.engine import images
from builder.engine.registry import Registry, RegistryError
from builder.matrix import grammar
from builder.matrix.platform import DEFAULT, Platform
from builder.run import sbom_schema

MEDIA_TYPE = "application/vnd.cyclonedx+json"
SPEC_VERSION = "1.6"
#: The largest SBOM read back from the registry (bytes).
MAX_SBOM = 64 << 20


class SbomError(RuntimeError):
    """The SBOM could not be made, validated or pushed; the message says which step and why."""


def tool_version() -> str:
    """The ``cyclonedx-bom`` version this builder runs with."""
    return importlib.metadata.version("cyclonedx-bom")


#: The distributions' metadata of a site-packages folder: ``site-packages/<name>.dist-info/<file>``.
_DIST_INFO = re.compile(r"^site-packages/[^/]+\.dist-info/[^/]+$")


@contextlib.contextmanager
def created(client: docker.DockerClient, image: str) -> Iterator[docker.models.containers.Container]:
    """A container of ``image`` that is created, never started (its files only), removed after the block."""
    container = client.containers.create(image, entrypoint=["/nonexistent"], network_disabled=True)
    try:
        yield container
    finally:
        container.remove(v=True, force=True)


def copy_out(container, path: str, wanted: Callable[[str], bool], dest: Path) -> list[str]:
    """Copy the regular files of ``path`` (a file or a folder) in ``container`` whose archive name
    (``<last part of path>[/<inner path>]``) ``wanted`` accepts into ``dest`` (made); returns their
    names. Names are checked by tarfile's ``data`` filter (no absolute path, no ``..``, no link out
    of ``dest``). Raises SbomError when the container has no ``path``."""
    try:
        chunks, _ = container.get_archive(path, chunk_size=images.CHUNK)
    except docker.errors.NotFound:
        raise SbomError(f"the image has no {path}") from None
    files.make_folder(dest)
    names = []
    with tarfile.open(fileobj=images.reader(chunks), mode="r|") as tar:
        for member in tar:
            if member.isfile() and wanted(member.name):
                tar.extract(member, dest, filter="data")
                names.append(member.name)
    return names


def _python_bom(container, image: str, venv: str, python: str) -> dict:
    # cyclonedx-py, natively, over the dist-info folders of the image's venv (module doc).
    with tempfile.TemporaryDirectory(prefix="builder-sbom-") as tmp:
        found = copy_out(container, f"{venv}/lib/python{python}/site-packages", _DIST_INFO.match, Path(tmp))
        if not any(name.endswith("/METADATA") for name in found):
            raise SbomError(f"{image} has no distribution in {venv}/lib/python{python}/site-packages")
        out = Path(tmp) / "python.cdx.json"
        r = subprocess.run([sys.executable, "-I", "-m", "cyclonedx_py", "environment", "-S", "--output-reproducible",
                            "--of", "JSON", "--sv", SPEC_VERSION, "--mc-type", "application", "-o", str(out),
                            sys.executable], env={**os.environ, "PYTHONPATH": str(Path(tmp) / "site-packages")},
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise SbomError(f"cyclonedx-py failed over {image}'s distributions: {r.stderr.strip()[-400:]}")
        return json.loads(out.read_text())


def _system(container, image: str) -> tuple[str, str]:
    # ``(distro, dpkg status text)``: ``<ID>-<VERSION_ID>`` of the image's os-release
    # (https://www.freedesktop.org/software/systemd/man/latest/os-release.html: /etc/os-release, else
    # /usr/lib/os-release; Debian's is a link to the latter) and its /var/lib/dpkg/status.
    with tempfile.TemporaryDirectory(prefix="builder-sbom-") as tmp:
        found = copy_out(container, "/var/lib/dpkg/status", "status".__eq__, Path(tmp))
        for path in ("/etc/os-release", "/usr/lib/os-release"):
            if "os-release" not in found:
                with contextlib.suppress(SbomError):  # no such file: the next one
                    found += copy_out(container, path, "os-release".__eq__, Path(tmp))
        if found != ["status", "os-release"]:
            raise SbomError(f"{image} has no regular /var/lib/dpkg/status or os-release")
        fields = os_release((Path(tmp) / "os-release").read_text(errors="replace"))
        return f"{fields.get('ID', '')}-{fields.get('VERSION_ID', '')}", (Path(tmp) / "status").read_text(errors="replace")


def os_release(text: str) -> dict[str, str]:
    """The ``KEY=value`` assignments of an os-release file, values unquoted as a shell would
    (https://www.freedesktop.org/software/systemd/man/latest/os-release.html); other lines are skipped."""
    out = {}
    for line in text.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        if len(words) == 1 and re.fullmatch(r"[A-Z][A-Z0-9_]*=.*", words[0], re.S):
            key, _, value = words[0].partition("=")
            out[key] = value
    return out


def debian_components(status: str, distro: str, arch: str = DEFAULT.arch) -> list[dict]:
    """CycloneDX components (``type: library``, a ``pkg:deb/debian/<name>@<version>`` purl with
    ``arch`` and ``distro``) for every package dpkg's ``status`` text marks installed."""
    out = []
    for para in Deb822.iter_paragraphs(status.splitlines(keepends=True)):
        if para.get("Status", "").split()[-1:] != ["installed"]:
            continue
        name, version = para["Package"], para["Version"]
        pkg_arch = para.get("Architecture", arch)
        purl = PackageURL("deb", "debian", name, version, {"arch": pkg_arch, "distro": distro}).to_string()
        out.append({"type": "library", "bom-ref": purl, "name": name, "version": version, "purl": purl,
                    **({"supplier": {"name": para["Maintainer"]}} if para.get("Maintainer") else {})})
    return out


def generate(client: docker.DockerClient, image: str, name: str, venv: str, python: str, out: Path,
             platform: Platform = DEFAULT, properties: dict[str, str] | None = None) -> dict:
    """Make, validate and write the SBOM of ``image`` (a reference the Engine knows) to ``out``.

    The main component is the image (``type: container``, ``name``, its tag as version, its id as
    hash, its labels and ``properties`` as properties); components are the distributions of its venv (``python`` being
    its X.Y) and the Debian packages of its dpkg status (purl ``distro`` from its os-release, e.g.
    ``debian-12``; ``arch`` from ``platform``), all read from its files, natively (module doc).
    Returns ``{"path", "components"}``. Raises SbomError.
    """
    with created(client, image) as container:
        bom = _python_bom(container, image, venv, python)
        distro, status = _system(container, image)
    bom.setdefault("components", []).extend(debian_components(status, distro, platform.arch))
    labels = client.images.get(image).labels or {}
    image_id = client.images.get(image).id
    bom.setdefault("metadata", {})["component"] = {
        "type": "container", "bom-ref": image_id, "name": name, "version": image.rsplit(":", 1)[-1],
        "hashes": [{"alg": "SHA-256", "content": image_id.split(":", 1)[-1]}],
        "properties": [{"name": k, "value": v} for k, v in sorted({**labels, **(properties or {})}.items())]}
    _validate(bom)
    files.write_atomic(out, json.dumps(bom, indent=2) + "\n")
    return {"path": str(out), "components": len(bom["components"])}


def made_for(path: Path, image_id: str) -> dict | None:
    """``{"path", "components"}`` of the SBOM at ``path`` when it describes the image ``image_id``
    (its main component's bom-ref), else None."""
    try:
        bom = json.loads(Path(path).read_text())
        if bom["metadata"]["component"]["bom-ref"] == image_id:
            return {"path": str(path), "components": len(bom.get("components", []))}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def version_properties(prefix: str, framework: str | None, python: str | None) -> dict[str, str]:
    """The SBOM properties that record the versions the taggers read in a build
    (:mod:`builder.run.taggers`): ``<prefix>.installed.framework-version`` and
    ``<prefix>.installed.python-version`` (``prefix``: the matrix's label prefix), for those known.
    A run that finds the build published reads them back (:func:`installed_versions`)."""
    found = {"framework-version": framework, "python-version": python}
    return {f"{prefix}.installed.{k}": v for k, v in found.items() if v is not None}


def installed_versions(prefix: str, properties: dict[str, str]) -> tuple[str, str] | None:
    """``(framework version, Python version)`` from an SBOM's :func:`version_properties`, each
    passing the PEP 440 grammar (:func:`builder.matrix.grammar.version`); None when one is missing
    or fails it."""
    try:
        return tuple(grammar.version(properties.get(f"{prefix}.installed.{k}"))  # type: ignore[return-value]
                     for k in ("framework-version", "python-version"))
    except ValueError:
        return None


def fetch(registry: Registry, repository: str, digest: str, image_id: str, out: Path) -> dict | None:
    """The SBOM the registry holds beside the image manifest ``digest`` (:func:`push`), when it
    describes the image ``image_id`` (its main component's bom-ref) and validates against CycloneDX
    (read as hostile input, at most :data:`MAX_SBOM` bytes): written to ``out``, and returned as
    ``{"path", "components", "digest", "properties": {name: value}}`` (``digest``: the artifact's
    manifest; ``properties``: the main component's). None when the registry has none or it
    describes another image. Raises SbomError."""
    try:
        found = registry.artifact_json(repository, referrer_tag(digest), MAX_SBOM, "SBOM")
    except RegistryError as exc:
        raise SbomError(f"cannot read the SBOM of {repository}@{digest}: {exc}") from None
    artifact, bom = found if found is not None else (None, None)
    main = bom.get("metadata", {}).get("component") if bom is not None and isinstance(bom.get("metadata"), dict) else None
    if not isinstance(main, dict) or main.get("bom-ref") != image_id:
        return None
    _validate(bom)
    files.write_atomic(out, json.dumps(bom, indent=2) + "\n")
    properties = {p["name"]: p["value"] for p in main.get("properties", []) if isinstance(p, dict)
                  and isinstance(p.get("name"), str) and isinstance(p.get("value"), str)}
    return {"path": str(out), "components": len(bom.get("components", [])), "digest": artifact, "properties": properties}


def _validate(bom: dict) -> None:
    error = sbom_schema.first_error(bom, SPEC_VERSION)
    if error is not None:
        raise SbomError(f"the SBOM does not validate against CycloneDX {SPEC_VERSION}: {error}")


def referrer_tag(digest: str) -> str:
    """The tag an SBOM of the image manifest ``digest`` is pushed under: ``sha256-<hex>.sbom``."""
    algorithm, _, hex_ = digest.partition(":")
    return f"{algorithm}-{hex_}.sbom"


def push(registry: Registry, repository: str, digest: str, path: Path) -> str:
    """Push the SBOM at ``path`` as an OCI artifact (media type :data:`MEDIA_TYPE`) whose ``subject``
    is the manifest ``digest`` of ``repository``, tagged :func:`referrer_tag`
    (:meth:`builder.engine.registry.Registry.push_artifact`). Returns the artifact's manifest digest.
    Raises SbomError."""
    try:
        return registry.push_artifact(repository, referrer_tag(digest), path, MEDIA_TYPE, digest)
    except RegistryError as exc:
        raise SbomError(f"cannot push the SBOM of {repository}@{digest}: {exc}") from None
