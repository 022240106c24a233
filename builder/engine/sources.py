"""Package sources for builds: extra CA bundle, index URL, extra index URLs, wheelhouse, Debian mirror.

Configured outside matrix.yaml, from the environment (each ``BUILDER_*`` variable wins over pip's
own one):

===========================  ===================================  ==============================
setting                      variables, first set wins            meaning
===========================  ===================================  ==============================
CA bundle                    BUILDER_CA_BUNDLE, PIP_CERT,         PEM file trusted in builds
                             SSL_CERT_FILE                        (replaces the default bundle)
index URL                    BUILDER_INDEX_URL, PIP_INDEX_URL     the index (default: PyPI)
extra index URLs             BUILDER_EXTRA_INDEX_URL,             space-separated
                             PIP_EXTRA_INDEX_URL
wheelhouse                   BUILDER_WHEELHOUSE, PIP_FIND_LINKS   a local directory of wheels
Debian mirror                BUILDER_APT_MIRROR, else the first   the archive of a release and its
                             non-security source in /etc/apt      -updates suite (:func:`apt_mirror`)
Debian security archive      BUILDER_APT_SECURITY_MIRROR, else    the -security suites
                             the first security source in          (:func:`apt_security_mirror`)
                             /etc/apt, else the mirror's
                             ``debian-security`` sibling
Debian snapshot              BUILDER_APT_SNAPSHOT                 every suite from one point in
                                                                  time (:func:`apt_snapshot`)
===========================  ===================================  ==============================

They reach a build without touching a layer (https://docs.docker.com/build/building/secrets/):
the index settings, credentials included, as BuildKit secrets ``uv.toml`` and ``pip.conf``
(:meth:`Sources.secrets`), the CA bundle as the secret ``ca.pem``, and the wheelhouse as an image
that the Dockerfiles bind-mount read-only (:func:`wheelhouse_image`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import docker
from docker.errors import ImageNotFound

from builder.matrix.inputs import ConfigError

#: An index URL: an http(s) or file URL without white space or control characters (it is written
#: into uv.toml and pip.conf).
_URL = re.compile(r"^(https?|file)://[^\s\x00-\x1f\x7f]+$")
#: What a path passed as ``src=`` in a BuildKit secret specification (CSV) must not hold.
_SPEC_UNSAFE = re.compile(r'[,"\x00-\x1f\x7f]')


def _first(*names: str) -> str | None:
    for n in names:
        if os.environ.get(n):
            return os.environ[n]
    return None


def _url(value: str, where: str) -> str:
    if not _URL.match(value):
        # never echo the value: an index URL may carry a credential
        raise ConfigError([f"{where} (from the environment) is not an http(s) or file URL without spaces"])
    return value


@dataclass(frozen=True)
class Sources:
    """Package sources for builds; all optional. ``wheelhouse`` must be a directory on this host."""

    ca_bundle: Path | None = None
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    wheelhouse: Path | None = None

    @classmethod
    def from_env(cls) -> "Sources":
        """Read the settings from the environment (see the module doc). Raises ConfigError for a named
        CA bundle or wheelhouse that does not exist, or an index URL that is not a URL."""
        ca = _first("BUILDER_CA_BUNDLE", "PIP_CERT", "SSL_CERT_FILE")
        wh = _first("BUILDER_WHEELHOUSE", "PIP_FIND_LINKS")
        if ca and not Path(ca).is_file():
            raise ConfigError([f"CA bundle {ca} (from the environment) is not a file"])
        if ca and _SPEC_UNSAFE.search(str(Path(ca).resolve())):
            # it becomes src=<path> in a BuildKit secret specification, a comma-separated list
            raise ConfigError(["CA bundle path (from the environment) holds a comma, a quote or a control "
                               "character; BuildKit's secret specification cannot carry it"])
        if wh and "://" not in wh and not Path(wh).is_dir():
            raise ConfigError([f"wheelhouse {wh} (from the environment) is not a directory"])
        index = _first("BUILDER_INDEX_URL", "PIP_INDEX_URL")
        extra = _first("BUILDER_EXTRA_INDEX_URL", "PIP_EXTRA_INDEX_URL")
        return cls(
            ca_bundle=Path(ca) if ca else None,
            index_url=_url(index, "index URL") if index else None,
            extra_index_urls=tuple(_url(u, "extra index URL") for u in extra.split()) if extra else (),
            wheelhouse=Path(wh) if wh and "://" not in wh else None,
        )

    def pip_conf(self) -> str:
        """pip's configuration for the index settings (https://pip.pypa.io/en/stable/topics/configuration/)."""
        lines = ["[global]"]
        if self.index_url:
            lines.append(f"index-url = {self.index_url}")
        if self.extra_index_urls:
            lines.append("extra-index-url = " + " ".join(self.extra_index_urls))
        return "\n".join(lines) + "\n"

    def uv_toml(self) -> str:
        """uv's configuration for the same settings (https://docs.astral.sh/uv/reference/settings/).

        With extra indexes the strategy is ``unsafe-best-match``, pip's behaviour: uv's default stops
        at the first index that has a package and misses a version only a later index holds.
        """
        lines = []
        if self.index_url:
            lines.append(f"index-url = {json.dumps(self.index_url)}")
        if self.extra_index_urls:
            lines.append(f"extra-index-url = {json.dumps(list(self.extra_index_urls))}")
            lines.append('index-strategy = "unsafe-best-match"')
        return "\n".join(lines) + "\n"

    @contextlib.contextmanager
    def secrets(self) -> Iterator[list[str]]:
        """BuildKit secret specifications (``id=uv.toml,src=…``) for the duration of the block.

        uv.toml and pip.conf are written into a private temporary directory (mode 0700) that is
        removed afterwards; the CA bundle is passed from where it is.
        """
        with tempfile.TemporaryDirectory(prefix="builder-secrets-") as tmp:
            root = Path(tmp)
            os.chmod(root, 0o700)
            specs = []
            for name, text in (("uv.toml", self.uv_toml()), ("pip.conf", self.pip_conf())):
                (root / name).write_text(text)
                specs.append(f"id={name},src={root / name}")
            if self.ca_bundle:
                specs.append(f"id=ca.pem,src={self.ca_bundle.resolve()}")
            yield specs

    def credentials(self) -> list[str]:
        """Strings that must never appear in a built image or its history (credentials in URLs)."""
        out = []
        for u in (self.index_url, *self.extra_index_urls):
            if u and "@" in u.split("://", 1)[-1]:
                out.append(u.split("://", 1)[-1].split("@", 1)[0])
        return out


WHEELHOUSE_REPOSITORY = "builder-wheelhouse"


def wheelhouse_image(client: docker.DockerClient, wheelhouse: Path | None) -> str:
    """The image the Dockerfiles bind-mount as their wheelhouse: ``scratch`` (none) when
    ``wheelhouse`` is None or holds no wheel, else ``builder-wheelhouse:<12 hex>``.

    The tag is the sha256 of the wheels' names, sizes and modification times (a wheel's name
    already pins its project, version and platform), so the image is imported (docker import of a
    tar of the ``*.whl`` files) only when the wheelhouse changed, and a changed wheelhouse
    invalidates exactly the installs that mount it.
    """
    wheels = sorted(wheelhouse.glob("*.whl")) if wheelhouse else []
    if not wheels:
        return "scratch"
    digest = hashlib.sha256()
    for w in wheels:
        st = w.stat()
        digest.update(f"{w.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    ref = f"{WHEELHOUSE_REPOSITORY}:{digest.hexdigest()[:12]}"
    try:
        client.images.get(ref)
        return ref
    except ImageNotFound:
        pass
    with tempfile.TemporaryDirectory(prefix="builder-wheelhouse-") as tmp:
        tar_path = Path(tmp) / "wheelhouse.tar"
        with tarfile.open(tar_path, mode="w") as tar:
            for w in wheels:
                info = tar.gettarinfo(str(w), arcname=w.name)
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = 0
                info.mode = 0o644
                with w.open("rb") as f:
                    tar.addfile(info, f)
        client.api.import_image_from_file(str(tar_path), repository=WHEELHOUSE_REPOSITORY,
                                          tag=ref.split(":", 1)[1])
    client.images.get(ref)  # raises ImageNotFound when the import did not produce it
    return ref


def _apt_sources(sources_dir: Path) -> list[tuple[str, list[str]]]:
    # ``(URI, suites)`` of every enabled ``deb`` source in sources.list, *.list and deb822 *.sources.
    candidates: list[tuple[str, list[str]]] = []
    lists = [sources_dir / "sources.list", *sorted((sources_dir / "sources.list.d").glob("*.list"))]
    for f in lists:
        if f.is_file():
            for line in f.read_text().splitlines():
                m = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
                if m:
                    candidates.append((m.group(1), [m.group(2)]))
    for f in sorted((sources_dir / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", f.read_text()):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, flags=re.M))
            if "deb" in fields.get("Types", "").split() and fields.get("Enabled", "yes") != "no":
                for uri in fields.get("URIs", "").split():
                    candidates.append((uri, fields.get("Suites", "").split()))
    return candidates


def _security(suites: list[str]) -> bool:
    return bool(suites) and all(s.endswith("-security") for s in suites)


def _env_url(name: str) -> str | None:
    value = os.environ.get(name)
    return _url(value, name) if value else None


def apt_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian archive URL of a release and its ``-updates`` suite: ``$BUILDER_APT_MIRROR``,
    else the first non-security ``deb`` source in this machine's apt configuration (sources.list and
    deb822 ``*.sources``).

    Raises ConfigError when neither gives one, or the variable is not a URL.
    """
    if url := _env_url("BUILDER_APT_MIRROR"):
        return url
    for uri, suites in _apt_sources(sources_dir):
        if suites and not _security(suites):
            return uri
    raise ConfigError(["no Debian mirror found in the apt sources; set BUILDER_APT_MIRROR"])


def apt_security_mirror(mirror: str, sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian security archive's URL (the ``-security`` suites,
    https://www.debian.org/security/faq#mirror): ``$BUILDER_APT_SECURITY_MIRROR``, else the first
    ``deb`` source of this machine whose suites are all ``-security`` ones, else Debian's layout
    beside ``mirror``: its ``debian`` folder's sibling ``debian-security``. Raises ConfigError when
    none applies."""
    if url := _env_url("BUILDER_APT_SECURITY_MIRROR"):
        return url
    for uri, suites in _apt_sources(sources_dir):
        if _security(suites):
            return uri
    if mirror.rstrip("/").endswith("/debian"):
        return mirror.rstrip("/") + "-security"
    raise ConfigError(["no Debian security archive found in the apt sources; set BUILDER_APT_SECURITY_MIRROR"])


#: A snapshot archive URL: ``<service>/archive/debian/<YYYYMMDDTHHMMSSZ>`` (the layout of Debian's snapshot archive).
_SNAPSHOT = re.compile(r"^(https?://[^\s\x00-\x1f\x7f]+/archive/)debian(/[0-9]{8}T[0-9]{6}Z)/?$")


def apt_snapshot() -> tuple[str, str] | None:
    """``(archive URL, security archive URL)`` of ``$BUILDER_APT_SNAPSHOT``, a snapshot service's
    Debian archive at one timestamp (``<service>/archive/debian/20261201T000000Z``,
    Debian's snapshot archive's layout): the security archive is the same service's ``debian-security``
    at that timestamp. None when unset. A lock made earlier then builds again exactly, whatever the
    mirrors dropped since. Raises ConfigError when the value has another form."""
    value = os.environ.get("BUILDER_APT_SNAPSHOT")
    if not value:
        return None
    m = _SNAPSHOT.match(value)
    if not m:
        raise ConfigError(["BUILDER_APT_SNAPSHOT (from the environment) is not <service>/archive/debian/<YYYYMMDDTHHMMSSZ>"])
    return f"{m[1]}debian{m[2]}/", f"{m[1]}debian-security{m[2]}/"
