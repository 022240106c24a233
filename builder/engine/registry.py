"""The one registry client: manifest digests, manifests, image indexes and artifacts, through oras-py's
:class:`oras.provider.Registry` (its sessions and Basic/Bearer auth), per the OCI distribution spec
(https://github.com/opencontainers/distribution-spec/blob/main/spec.md).

Three jobs stay with the tools made for them: the Engine pushes an image's layers (docker-py,
:func:`builder.run.publish.push`), ``docker buildx imagetools create`` makes an image index of pushed
manifests (:func:`make_index`), and cosign stores and reads signatures and attestations
(:mod:`builder.sign.cosign`). Credentials are read once
(:meth:`Credentials.from_env`) and handed to the client and the Engine's pushes; without them both,
and imagetools, use what ``docker login`` stored.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import subprocess
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import requests

from builder.matrix import grammar
from builder.matrix.platform import oci_name

#: What a manifest request accepts: OCI and Docker manifests and indexes.
MANIFEST_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.list.v2+json",
                  "application/vnd.docker.distribution.manifest.v2+json")


#: The largest manifest or index read (bytes): distribution's own limit.
MAX_MANIFEST = 4 << 20


#: The annotation BuildKit gives an attestation manifest in an image index
#: (https://github.com/moby/buildkit/blob/master/docs/attestations/attestation-storage.md).
REFERENCE_TYPE = "vnd.docker.reference.type"


#: An OCI image index's media type: what the referrers API answers with.
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"


def referrers_answer(status: int, content_type: str) -> bool:
    """True for an answer of the referrers API that says the registry serves it: HTTP 200 with an
    OCI image index (``Content-Type``, parameters ignored). A 404, or a 200 of another type (a
    registry that answers every route with a page), says it does not."""
    return status == 200 and content_type.split(";")[0].strip().lower() == INDEX_TYPE


def _passes(check, value: str) -> bool:
    # True when ``check`` (a grammar function of builder.matrix.grammar) accepts ``value``.
    try:
        check(value)
    except ValueError:
        return False
    return True


class RegistryError(RuntimeError):
    """The registry could not be asked, refused, or answered something else than the spec says."""


@dataclass(frozen=True)
class Credentials:
    """The registry user and password (``REGISTRY_USERNAME``/``REGISTRY_PASSWORD``), or none: then
    the Engine's own configuration (``docker login``) applies to pushes. Never logged."""

    username: str | None = None
    password: str | None = None

    @classmethod
    def from_env(cls) -> Credentials:
        """Read once, at the start of a command."""
        user, password = os.environ.get("REGISTRY_USERNAME"), os.environ.get("REGISTRY_PASSWORD")
        return cls(user, password) if user and password else cls()

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r})"

    def docker_auth(self) -> dict | None:
        """docker-py's ``auth_config``, or None."""
        return {"username": self.username, "password": self.password} if self.username else None


def host_of(repository: str) -> str:
    """The registry host (``host[:port]``) of a repository (``host[:port]/path``)."""
    return repository.split("/", 1)[0]


def insecure(host: str) -> bool:
    """True for a loopback registry, spoken to over plain HTTP, as the Docker Engine allows by default."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def api_root(host: str) -> str:
    """The distribution API's base route of ``host``: ``http://<host>/v2/`` for a loopback registry
    (:func:`insecure`), else ``https://<host>/v2/``."""
    return f"{'http' if insecure(host) else 'https'}://{host}/v2/"


def answers(host: str, timeout: float = 3.0) -> bool:
    """True when ``host`` answers the API version check ``GET /v2/`` with 200, or 401 when it wants
    credentials (https://distribution.github.io/distribution/spec/api/#api-version-check)."""
    try:
        r = requests.get(api_root(host), timeout=timeout)
    except requests.RequestException:
        return False
    return r.status_code in (200, 401)


class Registry:
    """A client of the registry at ``host``, authenticating with ``credentials``, or else with what
    ``docker login`` stored for it (the Docker config the Engine's pushes use), the way its
    ``GET /v2/`` challenge asks (Basic, or Bearer tokens: Docker Hub, GHCR, ACR). oras-py's token
    backend alone fails on a Basic-auth registry, so the backend follows the challenge. oras-py
    keeps one session and one Bearer token per client, and a token's scope is one repository
    (https://distribution.github.io/distribution/spec/auth/scope/), so each thread gets a client
    of its own per repository."""

    def __init__(self, host: str, credentials: Credentials = Credentials()):
        self.host, self.credentials = host, credentials
        self._clients: dict[tuple[int, str], object] = {}
        self._lock = threading.Lock()

    def _client(self, repository: str):
        key = (threading.get_ident(), repository)
        with self._lock:
            found = self._clients.get(key)
        if found is None:
            found = self._new_client(repository)
            with self._lock:
                self._clients[key] = found
        return found

    def _new_client(self, repository: str):
        import oras.container
        import oras.provider

        backend = self._auth_scheme() if self.credentials.username else "token"
        client = oras.provider.Registry(hostname=self.host, insecure=insecure(self.host), auth_backend=backend)
        if self.credentials.username:
            client.auth.set_basic_auth(self.credentials.username, self.credentials.password)
        else:
            # docker login's credentials for the host, if any (a Container: oras' auth cannot parse a name)
            client.auth.load_configs(oras.container.Container(f"{repository}:latest"))
        return client

    def _auth_scheme(self) -> str:
        try:
            r = requests.get(api_root(self.host), timeout=30)
        except requests.RequestException as exc:
            raise RegistryError(f"cannot reach the registry {self.host}: {type(exc).__name__}") from None
        return "basic" if r.headers.get("WWW-Authenticate", "").lower().startswith("basic") else "token"

    def _path(self, repository: str) -> str:
        # The repository's path on this registry (``host[:port]/path`` -> ``path``); RegistryError
        # for a repository of another host or without a path (a caller's bug, never an IndexError).
        host, slash, path = repository.partition("/")
        if not slash or host != self.host or not path:
            raise RegistryError(f"{repository!r} is not a repository of the registry {self.host} (expected "
                                f"{self.host}/path)")
        return path

    def _url(self, repository: str, reference: str) -> str:
        return f"{api_root(self.host)}{self._path(repository)}/manifests/{reference}"

    def _request(self, repository: str, url: str, limit: int, headers: dict | None = None) -> tuple[requests.Response, bytes]:
        # GET ``url``: the response and its body, read as a stream and refused past ``limit`` bytes
        # (a hostile registry cannot make the client hold more). RegistryError when it cannot be read.
        try:
            r = self._client(repository).do_request(url, "GET", headers=headers, stream=True)
            length = r.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > limit:
                raise RegistryError(f"{url}: the registry would send {length} bytes, over {limit}")
            body = b""
            for chunk in r.iter_content(1 << 16):
                body += chunk
                if len(body) > limit:
                    raise RegistryError(f"{url}: the registry sent over {limit} bytes")
        except (requests.RequestException, ValueError) as exc:
            raise RegistryError(f"cannot read {url}: {type(exc).__name__}: {exc}") from None
        finally:
            if "r" in locals():
                r.close()
        return r, body

    def _get(self, repository: str, reference: str) -> tuple[requests.Response, bytes] | None:
        # GET a manifest (at most MAX_MANIFEST bytes): the response and body, None for 404;
        # RegistryError otherwise.
        r, body = self._request(repository, self._url(repository, reference), MAX_MANIFEST,
                                {"Accept": ", ".join(MANIFEST_TYPES)})
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise RegistryError(f"cannot read {repository}:{reference} from the registry: HTTP {r.status_code}")
        return r, body

    def manifest(self, repository: str, reference: str) -> tuple[str, dict] | None:
        """``(digest, manifest or index as JSON)`` the registry serves for ``repository:reference``
        (a tag or a digest), or None when it has none. The digest is the sha256 of the bytes served.
        Raises RegistryError when the registry cannot be asked or refuses."""
        found = self._get(repository, reference)
        if found is None:
            return None
        body = found[1]
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise RegistryError(f"{repository}:{reference}: the registry served a manifest that is not a JSON object")
        return "sha256:" + hashlib.sha256(body).hexdigest(), doc

    def digest(self, repository: str, reference: str) -> str | None:
        """The manifest digest served for ``repository:reference``, or None. Raises RegistryError."""
        found = self.manifest(repository, reference)
        return found[0] if found else None

    def descriptor(self, repository: str, digest: str) -> dict:
        """The OCI descriptor (``mediaType``, ``digest``, ``size`` in bytes) of the manifest
        ``digest``. Raises RegistryError when the registry has none."""
        found = self._get(repository, digest)
        if found is None:
            raise RegistryError(f"the registry has no manifest {repository}@{digest}")
        return {"mediaType": found[0].headers.get("Content-Type", "").split(";")[0].strip(), "digest": digest,
                "size": len(found[1])}

    def config(self, repository: str, manifest: dict, max_bytes: int = 1 << 20) -> dict:
        """The image configuration (JSON) an image ``manifest`` names: its blob, read by digest
        (:meth:`blob_json`), at most ``max_bytes``. Raises RegistryError."""
        config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
        return self.blob_json(repository, config.get("digest"), max_bytes, "image configuration")

    def blob_json(self, repository: str, digest: object, max_bytes: int, what: str) -> dict:
        """The blob ``digest`` of ``repository`` as a JSON object, read by digest
        (https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pulling-blobs), at
        most ``max_bytes``, and checked against that digest; ``what`` names it in errors. Raises
        RegistryError when the digest is not sha256, the registry refuses, the bytes differ or the
        blob is not a JSON object."""
        if not isinstance(digest, str) or not digest.startswith("sha256:") or not _passes(grammar.digest, digest):
            raise RegistryError(f"{repository}: the manifest names no sha256 {what}")
        url = f"{api_root(self.host)}{self._path(repository)}/blobs/{digest}"
        r, body = self._request(repository, url, max_bytes)
        if r.status_code != 200:
            raise RegistryError(f"cannot read {repository}@{digest}: HTTP {r.status_code}")
        if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            raise RegistryError(f"{repository}@{digest}: the registry served other bytes than the digest names")
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise RegistryError(f"{repository}@{digest}: the {what} is not a JSON object")
        return doc

    def artifact_json(self, repository: str, tag: str, max_bytes: int, what: str) -> tuple[str, dict] | None:
        """``(the artifact's manifest digest, the JSON object it holds)`` for the OCI artifact
        tagged ``tag`` (its manifest's one layer, read by :meth:`blob_json`, at most
        ``max_bytes``), or None when the registry has no such tag. Raises RegistryError when it is
        not a manifest of one layer, or as :meth:`blob_json`."""
        found = self.manifest(repository, tag)
        if found is None:
            return None
        layers = found[1].get("layers")
        if not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict):
            raise RegistryError(f"{repository}:{tag}: the {what} artifact is not a manifest of one layer")
        return found[0], self.blob_json(repository, layers[0].get("digest"), max_bytes, what)

    def serves_referrers(self, repository: str, digest: str) -> bool:
        """True when the registry serves the OCI 1.1 referrers API for ``repository``: ``GET
        /v2/<name>/referrers/<digest>`` answers 200 with an image index (:func:`referrers_answer`;
        https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md#listing-referrers).
        Debian's docker-registry 2.8 answers 404 (``404 page not found``, text/plain). Raises
        RegistryError when the registry cannot be asked or ``digest`` fails its grammar."""
        if not _passes(grammar.digest, digest):
            raise RegistryError(f"{digest!r} is not a digest")
        url = f"{api_root(self.host)}{self._path(repository)}/referrers/{digest}"
        r, _ = self._request(repository, url, MAX_MANIFEST, {"Accept": INDEX_TYPE})
        return referrers_answer(r.status_code, r.headers.get("Content-Type", ""))

    def list_tags(self, repository: str, page: int = 1000, max_pages: int = 100) -> list[str]:
        """The tags of ``repository``, ``page`` at a time, following the registry's ``Link`` header
        (https://github.com/opencontainers/distribution-spec/blob/main/spec.md#listing-tags) for at
        most ``max_pages`` pages and only to this registry's own ``/v2/`` routes (so credentials never
        leave for another host); names that fail Docker's tag grammar are dropped. ``[]`` when the
        repository does not exist. Raises RegistryError."""
        url, out = f"{api_root(self.host)}{self._path(repository)}/tags/list?n={page}", []
        for _ in range(max_pages):
            body, link = self._tag_page(repository, url)
            out += [t for t in body if isinstance(t, str) and _passes(grammar.tag, t)]
            if link is None:
                return out
            url = link
        raise RegistryError(f"{repository}: the registry's tag list goes on past {max_pages} pages")

    def _tag_page(self, repository: str, url: str) -> tuple[list, str | None]:
        # One page of tags (at most MAX_MANIFEST bytes) and the next page's URL (same host, under
        # /v2/), or None.
        r, body = self._request(repository, url, MAX_MANIFEST)
        try:
            doc = json.loads(body) if r.status_code == 200 else None
        except ValueError:
            doc = None
        if r.status_code == 404:
            return [], None
        if not isinstance(doc, dict) or not isinstance(doc.get("tags") or [], list):
            raise RegistryError(f"cannot list the tags of {repository}: HTTP {r.status_code}, not a tag list")
        nxt = r.links.get("next", {}).get("url")
        if nxt is None:
            return doc.get("tags") or [], None
        nxt = urllib.parse.urljoin(url, nxt)
        if not nxt.startswith(api_root(self.host)):
            raise RegistryError(f"{repository}: the registry's next page of tags is elsewhere: {nxt[:200]}")
        return doc.get("tags") or [], nxt

    @staticmethod
    def labels(config: dict) -> dict:
        """The labels of an image configuration ``config`` (``config.Labels``,
        https://github.com/opencontainers/image-spec/blob/main/config.md), ``{}`` when it has none
        or they are not an object. Values are as the configuration holds them: check each before
        use."""
        inner = config.get("config") if isinstance(config, dict) else None
        labels = inner.get("Labels") if isinstance(inner, dict) else None
        return labels if isinstance(labels, dict) else {}

    def index(self, repository: str, tag: str) -> tuple[str, dict[str, str]] | None:
        """``(digest, {platform: manifest digest})`` of the image index ``repository:tag``, or None
        when the registry has no such tag or it is not an index. Raises RegistryError."""
        found = self.manifest(repository, tag)
        entries = self.index_entries(found[1]) if found else None
        return (found[0], entries) if entries is not None else None

    @staticmethod
    def index_entries(doc: dict) -> dict[str, str] | None:
        """``{platform: manifest digest}`` of the images an image index ``doc`` names
        (https://github.com/opencontainers/image-spec/blob/main/image-index.md), or None when it is
        not an index, an image entry lacks its platform, or a digest fails the digest grammar.
        BuildKit's attestation manifests (annotated ``vnd.docker.reference.type``,
        https://github.com/moby/buildkit/blob/master/docs/attestations/attestation-storage.md) are
        not images and are left out."""
        try:
            entries = {oci_name(m["platform"]["os"], m["platform"]["architecture"], m["platform"].get("variant")): m["digest"]
                       for m in doc["manifests"] if REFERENCE_TYPE not in (m.get("annotations") or {})}
            for d in entries.values():
                grammar.digest(d)
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        return entries

    def push_artifact(self, repository: str, tag: str, path: Path, media_type: str, subject_digest: str) -> str:
        """Push the file at ``path`` as an OCI artifact (config and layer of ``media_type``) whose
        ``subject`` is the manifest ``subject_digest`` of ``repository``, tagged ``tag``. Returns the
        artifact's manifest digest. Raises RegistryError."""
        import tempfile

        import oras.oci

        d = self.descriptor(repository, subject_digest)
        subject = oras.oci.Subject(mediaType=d["mediaType"], digest=d["digest"], size=d["size"])
        with tempfile.TemporaryDirectory(prefix="builder-artifact-config-") as tmp:
            config = Path(tmp) / "config.json"
            config.write_text("{}")
            try:
                response = self._client(repository).push(target=f"{repository}:{tag}", files=[f"{path}:{media_type}"],
                                               manifest_config=f"{config}:{media_type}", subject=subject,
                                               disable_path_validation=True, quiet=True)
            except Exception as exc:  # oras raises requests' and its own errors
                raise RegistryError(f"cannot push {repository}:{tag}: {exc}") from None
        artifact = response.headers.get("Docker-Content-Digest")
        if not artifact:
            raise RegistryError(f"the registry did not say the digest of {repository}:{tag} ({response.status_code})")
        return artifact


def make_index(repository: str, tag: str, digests: list[str]) -> None:
    """Make ``repository:tag`` name one image index of the pushed manifests ``digests`` with
    ``docker buildx imagetools create``
    (https://docs.docker.com/reference/cli/docker/buildx/imagetools/create/). The caller checks every
    name against its grammar first; ``--`` ends the options (pflag stops parsing flags there), so no
    reference can read as one. Raises RegistryError with buildx's last words."""
    r = subprocess.run(["docker", "buildx", "imagetools", "create", f"--tag={repository}:{tag}", "--",
                        *(f"{repository}@{d}" for d in digests)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RegistryError(f"imagetools create {repository}:{tag}: {' '.join(r.stderr.split())[-300:]}")
