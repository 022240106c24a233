"""Taggers: take a built image and read the versions really installed; the tag policy turns them
into tags.

A tagger is one small function of an image (jupyter/docker-stacks' style): it runs a command in a
throw-away container and returns what is really installed, not what the matrix hoped.
:func:`immutable_tag` is a pure function of those values and the image id, so one tag can never
name two different images. ``latest`` (the matrix's ``moving`` tags) is applied only after the
smoke test passed — the pipeline stage enforces that.
"""

from __future__ import annotations

import hashlib
import re
import string

import docker

from builder.matrix.expand import ImageSpec
from builder.matrix.schema import TagPolicy

# Docker's tag grammar: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
# (https://distribution.github.io/distribution/spec/api/ and docker/reference's regexp.go).
_TAG_BAD = re.compile(r"[^A-Za-z0-9_.-]")


def _python(client: docker.DockerClient, image: str, code: str) -> str:
    out = client.containers.run(image, entrypoint=["python3", "-c", code], remove=True, network_disabled=True)
    return out.decode().strip()


def framework_version(client: docker.DockerClient, image: str, spec: ImageSpec) -> str:
    """The installed version of the spec's package inside ``image`` (e.g. ``2.13.0+cpu``).

    Raises docker.errors.ContainerError when it is not installed.
    """
    return _python(client, image, f"import importlib.metadata as m; print(m.version({spec.package!r}))")


def os_name(client: docker.DockerClient, image: str) -> str:
    """The OS inside ``image`` as /etc/os-release names it (``PRETTY_NAME``, e.g. ``Debian GNU/Linux 12 (bookworm)``)."""
    return _python(client, image, "import platform; print(platform.freedesktop_os_release().get('PRETTY_NAME', ''))")


def python_version(client: docker.DockerClient, image: str) -> str:
    """The full Python version inside ``image`` (e.g. ``3.11.2``)."""
    return _python(client, image, "import platform; print(platform.python_version())")


def sanitize(tag: str) -> str:
    """``tag`` with every character Docker's tag grammar forbids replaced by ``-`` (``2.13.0+cpu`` ->
    ``2.13.0-cpu``), trimmed to 128 characters. Raises ValueError for an empty result."""
    out = _TAG_BAD.sub("-", tag).lstrip(".-")[:128]
    if not out:
        raise ValueError(f"{tag!r} gives an empty tag")
    return out


def immutable_tag(policy: TagPolicy, framework_version: str, python_version: str, image_id: str) -> str:
    """The immutable tag of an image: the policy's template filled with the real versions and the
    first 12 hex digits of ``image_id`` (``sha256:<hex>``), sanitized.

    Example: ``"{framework_version}-py{python_version}-{image_id}"`` with 1.9.1, 3.11.2,
    ``sha256:0123456789abcdef...`` -> ``1.9.1-py3.11.2-0123456789ab``. Raises KeyError for a field
    the template uses that is not one of framework_version, python_version, image_id.
    """
    short = image_id.split(":", 1)[-1][:12]
    return sanitize(policy.immutable.format(framework_version=framework_version,
                                            python_version=python_version, image_id=short))


def index_tag(policy: TagPolicy, framework_version: str, python_version: str, image_ids: list[str]) -> str:
    """The immutable tag of an image index: :func:`immutable_tag` with, for the image id, the sha256 of
    the platforms' image ids (``sha256:<hex>`` each, in the matrix's platform order, joined by spaces),
    so the tag names exactly these builds. Raises KeyError as :func:`immutable_tag`."""
    return immutable_tag(policy, framework_version, python_version, index_id(image_ids))


def index_id(image_ids: list[str]) -> str:
    """The combined id of an image index's builds: ``sha256:<hex>`` of their image ids
    (``sha256:<hex>`` each, in the matrix's platform order) joined by spaces."""
    return "sha256:" + hashlib.sha256(" ".join(image_ids).encode()).hexdigest()


def existing_immutable(policy: TagPolicy, tags: list[str], image_id: str) -> str | None:
    """An immutable tag among ``tags`` (tag names of the image's own repository) that the policy
    gave this very image before (it ends in the image id's 12 hex digits where the template puts
    them), or None. A rebuild that produced the same image id reuses it without running the
    taggers again: the versions they read cannot have changed inside an identical image."""
    short = image_id.split(":", 1)[-1][:12]
    pattern = ""
    for literal, fld, _, _ in string.Formatter().parse(policy.immutable):
        pattern += re.escape(_TAG_BAD.sub("-", literal))
        if fld == "image_id":
            pattern += re.escape(short)
        elif fld:
            pattern += r"[A-Za-z0-9_.-]+"
    return next((t for t in sorted(tags) if re.fullmatch(pattern, t)), None)
