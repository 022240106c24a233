"""SBOM: takes a tested image, gives its CycloneDX JSON SBOM, and pushes it beside the image.

:func:`generate` runs PyPI's ``cyclonedx-bom`` (``python -m cyclonedx_py environment``,
https://cyclonedx-bom-tool.readthedocs.io/) inside a throw-away container of the image, against the
image's virtual environment: the tool is installed by uv for the image's Python into
``build/sbom-tool/py<X.Y>`` and bind-mounted read-only, so it never enters the image. The Debian
packages come from the image's ``/var/lib/dpkg/status`` (parsed by ``python-debian``) as components
with ``pkg:deb`` package URLs (https://github.com/package-url/purl-spec). The merged document is
validated against the CycloneDX 1.6 JSON schema (cyclonedx-python-lib) and written to
``build/sbom/<name>.cdx.json``.

:func:`push` stores it in the registry with PyPI's ``oras`` as an OCI artifact whose manifest names
the image manifest as its ``subject`` (OCI distribution spec 1.1, referrers) and is tagged
``sha256-<image digest hex>.sbom`` (cosign's convention), for registries without the referrers API.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import docker
from debian.deb822 import Deb822
from packageurl import PackageURL

from builder import files
from builder.engine.registry import Registry, RegistryError
from builder.engine.sources import Sources
from builder.generate.locking import uv_environment
from builder.matrix.platform import DEFAULT, Platform

MEDIA_TYPE = "application/vnd.cyclonedx+json"
SPEC_VERSION = "1.6"
_tool_locks: dict[str, threading.Lock] = {}
_tool_locks_guard = threading.Lock()


class SbomError(RuntimeError):
    """The SBOM could not be made, validated or pushed; the message says which step and why."""


def tool_version() -> str:
    """The ``cyclonedx-bom`` version this builder runs with (the containers get the same one)."""
    return importlib.metadata.version("cyclonedx-bom")


def tool(build_dir: Path, python: str, sources: Sources, platform: str = DEFAULT.name) -> Path:
    """``build/sbom-tool/py<python>-<version>[-<arch>]``: cyclonedx-bom installed by uv (wheels
    only) for ``python`` on ``platform``, made once per version. Raises SbomError with uv's last
    lines when it cannot be made."""
    version = tool_version()
    pf = Platform.parse(platform)
    target = Path(build_dir).resolve() / "sbom-tool" / f"py{python}-{version}{pf.suffix}"
    with _tool_locks_guard:
        guard = _tool_locks.setdefault(str(target), threading.Lock())
    with guard:
        if (target / ".complete").is_file():
            return target
        files.make_folder(target.parent)
        tmp = Path(tempfile.mkdtemp(prefix=".sbom-tool-", dir=target.parent))
        r = subprocess.run([sys.executable, "-m", "uv", "pip", "install", "--quiet", "--no-config", "--only-binary", ":all:",
                            "--python-version", python, "--python-platform", pf.uv_triple,
                            "--target", str(tmp), f"cyclonedx-bom=={version}"],
                           env=uv_environment(sources), capture_output=True, text=True)
        if r.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise SbomError(f"cannot install cyclonedx-bom {version} for Python {python}: "
                            + " ".join(r.stderr.split()[-40:]))
        files.write_atomic(tmp / ".complete", version + "\n")
        os.chmod(tmp, 0o755)
        tmp.rename(target)
    return target


#: Runs in the image: the tool's folder first on sys.path, then cyclonedx-py's own entry point.
_RUN = ("import runpy, sys; sys.path.insert(0, '/opt/sbom-tool'); "
        "sys.argv = ['cyclonedx-py', 'environment', '--output-reproducible', '--of', 'JSON', '--sv', '{sv}', "
        "'--mc-type', 'application', '-o', '/out/python.cdx.json', '{python}']; "
        "runpy.run_module('cyclonedx_py', run_name='__main__')")


def _python_bom(client: docker.DockerClient, image: str, venv: str, tool_dir: Path) -> dict:
    # cyclonedx-py over the image's venv, in a container without network, as the image's own user.
    with tempfile.TemporaryDirectory(prefix="builder-sbom-") as out:
        os.chmod(out, 0o777)
        code = _RUN.format(sv=SPEC_VERSION, python=f"{venv}/bin/python")
        try:
            client.containers.run(image, entrypoint=["python3", "-I", "-c", code], remove=True, network_disabled=True,
                                  volumes={str(tool_dir): {"bind": "/opt/sbom-tool", "mode": "ro"},
                                           out: {"bind": "/out", "mode": "rw"}})
        except docker.errors.ContainerError as exc:
            raise SbomError(f"cyclonedx-py failed in {image}: {(exc.stderr or b'').decode(errors='replace')[-400:]}") from None
        return json.loads((Path(out) / "python.cdx.json").read_text())


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


#: Prints the image's OS (``<ID>-<VERSION_ID>`` of /etc/os-release) and its dpkg status, as JSON.
_SYSTEM = ("import json, platform; os = platform.freedesktop_os_release(); "
           "print(json.dumps({'distro': os['ID'] + '-' + os.get('VERSION_ID', ''), "
           "'status': open('/var/lib/dpkg/status', encoding='utf-8').read()}))")


def generate(client: docker.DockerClient, image: str, name: str, venv: str, python: str, out: Path,
             build_dir: Path, sources: Sources, platform: str = DEFAULT.name) -> dict:
    """Make, validate and write the SBOM of ``image`` (a reference the Engine knows) to ``out``.

    The main component is the image (``type: container``, ``name``, its tag as version, its id as
    hash, its labels as properties); components are the venv's distributions (cyclonedx-py in the
    image, ``python`` being its X.Y) and the Debian packages of its dpkg status (purl ``distro`` from
    its /etc/os-release, e.g. ``debian-12``), for the image's ``platform`` (another than linux/amd64
    runs under QEMU). Returns ``{"path", "components"}``. Raises SbomError.
    """
    bom = _python_bom(client, image, venv, tool(build_dir, python, sources, platform))
    try:
        system = json.loads(client.containers.run(image, entrypoint=["python3", "-I", "-c", _SYSTEM], remove=True,
                                                  network_disabled=True))
    except docker.errors.ContainerError as exc:
        raise SbomError(f"cannot read /etc/os-release and /var/lib/dpkg/status from {image}: {exc}") from None
    bom.setdefault("components", []).extend(debian_components(system["status"], system["distro"],
                                                              Platform.parse(platform).arch))
    labels = client.images.get(image).labels or {}
    image_id = client.images.get(image).id
    bom.setdefault("metadata", {})["component"] = {
        "type": "container", "bom-ref": image_id, "name": name, "version": image.rsplit(":", 1)[-1],
        "hashes": [{"alg": "SHA-256", "content": image_id.split(":", 1)[-1]}],
        "properties": [{"name": k, "value": v} for k, v in sorted(labels.items())]}
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


def _validate(bom: dict) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.from_version(SPEC_VERSION)).validate_str(json.dumps(bom))
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
