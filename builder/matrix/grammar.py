"""The grammars every user string is checked against, each with its source, and the escaping
filters free text goes through on its way into a Dockerfile (:func:`dockerfile_quote`) or a shell
command (:func:`shell_quote`). Each check returns the value or raises ValueError with one line that
shows at most :data:`builder.matrix.inputs.SHOWN` characters of it.
"""

from __future__ import annotations

import re
import shlex

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from builder.matrix.inputs import CONTROL, shown
from builder.matrix.platform import PLATFORMS

#: Upper bounds of the numbers read back from the tool's own files (run reports, catalogs, the
#: BuildKit cache ledger) and taken as options: a size in bytes (1 PB), a duration in seconds (one
#: week) and a count (of build steps, SBOM components, jobs, ledger records).
MAX_SIZE = 10**15
MAX_SECONDS = 604_800
MAX_COUNT = 10**6


def _pattern(regex: str, expected: str, doc: str):
    """A check of a value against ``regex`` (whole match); ``expected`` goes into its error line."""
    compiled = re.compile(regex)

    def check(value: object) -> str:
        return _check(compiled, value, expected)
    check.__doc__ = doc
    return check


def _limited(pattern: re.Pattern, value: object, expected: str, limit: int, too_long: str) -> str:
    # _check, then at most ``limit`` characters.
    _check(pattern, value, expected)
    if len(value) > limit:
        raise ValueError(f"{shown(value)} {too_long}")
    return value


def _check(pattern: re.Pattern, value: object, expected: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{shown(value)} is not a string (expected {expected})")
    if not pattern.fullmatch(value):
        raise ValueError(f"{shown(value)} is not {expected}")
    return value


# Docker references, after distribution's reference grammar
# (https://github.com/distribution/reference/blob/main/regexp.go).
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
REFERENCE = re.compile(rf"{_NAME}(?::{_TAG})?(?:@{_DIGEST})?")
REGISTRY = re.compile(rf"{_DOMAIN}(?:/{_PATH_COMPONENT})*")
TAG = re.compile(_TAG)
PATH_COMPONENT = re.compile(_PATH_COMPONENT)


def docker_reference(value: object) -> str:
    """An image reference (``name[:tag][@digest]``, name at most 255 characters); raises ValueError."""
    _check(REFERENCE, value, "an image reference (distribution's reference grammar: name[:tag][@digest])")
    if len(value.split("@")[0].rsplit(":", 1)[0]) > 255:
        raise ValueError(f"{shown(value)} has a name longer than 255 characters")
    return value


_REPOSITORY = re.compile(_NAME)
# Tags and digests as distribution's grammar has them, ASCII only (Go's \w); neither may begin with
# '-' (nor any grammar here), so no value can read as an option on a command line.
_ASCII_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")


def repository(value: object) -> str:
    """A repository: a reference's name without tag or digest (``127.0.0.1:5000/minimal-...``), at
    most 255 characters; raises ValueError."""
    return _limited(_REPOSITORY, value, "a repository (distribution's reference grammar: [host[:port]/]path)",
                    255, "has a name longer than 255 characters")


def tag(value: object) -> str:
    """A tag (distribution's grammar, ASCII: ``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``); raises ValueError."""
    return _check(_ASCII_TAG, value, "a tag ([A-Za-z0-9_][A-Za-z0-9_.-], at most 128 characters)")


def digest(value: object) -> str:
    """A content digest ``sha256:<64 lower-case hex>`` (OCI image spec, descriptor digests:
    https://github.com/opencontainers/image-spec/blob/main/descriptor.md#digests); raises ValueError."""
    return _check(_SHA256, value, "a digest (sha256:<64 hex>)")


def platform(value: object) -> str:
    """One of the platforms images are built for (:data:`builder.matrix.platform.PLATFORMS`), by its OCI
    name; raises ValueError."""
    if not isinstance(value, str) or value not in PLATFORMS:
        raise ValueError(f"{shown(value)} is not a platform (expected one of: {', '.join(PLATFORMS)})")
    return value


def image_name(value: object) -> str:
    """An image name of the matrix's shape: one lower-case path component of the reference grammar
    (``sklearn-1.9-debian12-py311-cpu-inference``), at most 128 characters; raises ValueError."""
    return _limited(PATH_COMPONENT, value, "an image name (lower-case letters, digits and single . _ - separators)",
                    128, "is longer than 128 characters")


def registry(value: object) -> str:
    """``host[:port][/namespace]`` (reference grammar's domain and path components), at most 255
    characters (a repository's name under it is, too); raises ValueError."""
    return _limited(REGISTRY, value, "host[:port][/namespace]", 255, "is longer than 255 characters")


def key_name(value: object) -> str:
    """A key that becomes part of image names and paths (a base or framework key): one path
    component of the reference grammar, lower case (``debian12``); raises ValueError."""
    return _check(PATH_COMPONENT, value, "a lower-case name of letters, digits and single . _ - separators")


# Python distribution names: PEP 508 / the core metadata "Name" field
# (https://packaging.python.org/en/latest/specifications/name-normalization/).
_DIST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")


def distribution_name(value: object) -> str:
    """A Python distribution name (``scikit-learn``), at most 200 characters (PEP 508 sets no limit;
    the longest on PyPI are well under it); raises ValueError."""
    return _limited(_DIST, value, "a Python distribution name (PEP 508)", 200, "is longer than 200 characters")


def requirement(value: object) -> str:
    """A PEP 508 requirement (``name[extra]>=1,<2; marker``), no URL, no pip option; raises ValueError."""
    if not isinstance(value, str):
        raise ValueError(f"{shown(value)} is not a string (expected a PEP 508 requirement)")
    try:
        req = Requirement(value)
    except InvalidRequirement:
        raise ValueError(f"{shown(value)} is not a PEP 508 requirement (name, extras, version specifier: no URLs, "
                         "paths or pip options)") from None
    if req.url:
        raise ValueError(f"{shown(value)}: direct URL requirements are not allowed; use an index or wheelhouse")
    return value


def version(value: object) -> str:
    """A PEP 440 version given as a string; a YAML number (``2.10`` reads as 2.1) is refused."""
    if isinstance(value, bool) or not isinstance(value, str):
        if isinstance(value, (int, float)):
            raise ValueError(f"{value!r} is a YAML number; quote the version (e.g. '2.10'), or YAML drops its "
                             "trailing zeros")
        raise ValueError(f"{shown(value)} is not a version string")
    if value != value.strip() or CONTROL.search(value):  # packaging strips white space, a newline included
        raise ValueError(f"{shown(value)} is not a valid version (PEP 440; no white space or control characters)")
    try:
        Version(value)
    except InvalidVersion:
        raise ValueError(f"{shown(value)} is not a valid version (PEP 440)") from None
    return value


# A UTC time as base locks and labels write it (ISO 8601, https://www.rfc-editor.org/rfc/rfc3339).
iso_date = _pattern(r"[0-9]{4}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9]Z", "a UTC time (YYYY-MM-DDTHH:MM:SSZ)",
                    "A UTC time, ``2026-12-05T03:33:28Z``; raises ValueError.")

# Debian package names: policy 5.6.1 (https://www.debian.org/doc/debian-policy/ch-controlfields.html#source).
debian_package = _pattern(r"[a-z0-9][a-z0-9+.-]+", "a Debian package name (policy 5.6.1: a-z 0-9 + - ., two or more)",
                          "A Debian package name (``python3-venv``); raises ValueError.")
# Debian versions: policy 5.6.12, ``[epoch:]upstream_version[-debian_revision]``, the upstream part
# starting with a digit, alphanumerics and ``. + ~ -`` (https://www.debian.org/doc/debian-policy/ch-controlfields.html#version).
debian_version = _pattern(r"(?=.{1,128}$)(?:[0-9]+:)?[0-9](?:[A-Za-z0-9.+~-]*-[A-Za-z0-9.+~]+|[A-Za-z0-9.+~]*)", "a Debian version (policy 5.6.12: "
                          "[epoch:]upstream[-revision], starting with a digit; A-Z a-z 0-9 . + ~ -)",
                          "A Debian package version (``2.36-9+deb12u10``, ``1:2.38.1-5``); raises ValueError.")


# POSIX user names: the portable filename character set, not starting with '-'
# (https://pubs.opengroup.org/onlinepubs/9699919799/basedefs/V1_chap03.html#tag_03_437), and the
# shadow-utils default of a leading lower-case letter or '_', at most 32 characters.
user_name = _pattern(r"[a-z_][a-z0-9_-]{0,31}", "a user name ([a-z_][a-z0-9_-], at most 32 characters)",
                     "A user name safe for useradd (``dockeruser``); raises ValueError.")
# POSIX environment variable names (letters, digits, underscore, not starting with a digit).
env_name = _pattern(r"[A-Za-z_][A-Za-z0-9_]*", "an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
                    "An environment variable name; raises ValueError.")


# Label keys: the OCI annotation rules, reverse-DNS notation
# (https://github.com/opencontainers/image-spec/blob/main/annotations.md#rules).
label_prefix = _pattern(r"[a-z0-9]+(?:[.-][a-z0-9]+)*", "a reverse-DNS label prefix (OCI annotation rules: a-z 0-9 . -)",
                        "A reverse-DNS label key prefix (``io.github.inference-images``); raises ValueError.")


_ABSOLUTE = re.compile(r"/(?:[A-Za-z0-9._-]+/?)*")


def absolute_path(value: object) -> str:
    """An absolute POSIX path without white space, quotes or ``..`` (``/opt/venv``); raises ValueError."""
    _check(_ABSOLUTE, value, "an absolute path of letters, digits and . _ - (no spaces)")
    if ".." in value.split("/"):
        raise ValueError(f"{shown(value)} must not contain '..'")
    return value.rstrip("/") or "/"


_RELATIVE = re.compile(r"[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*")


def relative_path(value: object) -> str:
    """A relative POSIX path of plain names without ``..`` (``score.py``, ``src/score.py``)."""
    _check(_RELATIVE, value, "a relative path of letters, digits and . _ - (no spaces)")
    if ".." in value.split("/"):
        raise ValueError(f"{shown(value)} must not contain '..'")
    return value


#: A folder inside site-packages: a package's own name first, then plain names or * globs.
_PRUNE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*(?:/[A-Za-z0-9._*-]+)+")


def prune_path(value: object) -> str:
    """A folder to remove from an image's installed packages, relative to site-packages: a package's
    own folder name first (no glob there, so no pattern can reach beyond one package), then at
    least one more part of plain names or ``*`` globs, no ``..`` (``pandas/tests``,
    ``scipy/*/tests``). Shell-safe as it is: the template passes it to ``rm -rf`` unquoted so the
    globs expand."""
    _check(_PRUNE, value, "a package's folder then a path inside it, of letters, digits, . _ - and * globs")
    parts = value.split("/")
    if any(p.startswith(".") for p in parts):
        raise ValueError(f"{shown(value)}: no part may start with '.' (a glob would reach '.' and '..')")
    if not parts[-1].strip("*"):
        raise ValueError(f"{shown(value)}: the last part must name something, not only '*' (that empties the package)")
    return value


# BuildKit's cache record ids: 25 characters of base 36, lower case (moby/buildkit identity.NewID),
# read back from the ledger of builder.engine.prune; a little room beyond them.
_CACHE_RECORD = re.compile(r"[a-z0-9]{1,64}")


def cache_record(value: object) -> str:
    """A BuildKit cache record id (``[a-z0-9]``, 1 to 64 characters); raises ValueError."""
    return _check(_CACHE_RECORD, value, "a BuildKit cache record id ([a-z0-9], at most 64 characters)")


#: Linux's limits (<linux/limits.h>): a path of at most PATH_MAX bytes, each name at most NAME_MAX.
PATH_MAX, NAME_MAX = 4096, 255
# Control characters, line separators, and the lone surrogates bytes that are not UTF-8 decode to
# (os.fsdecode): a path the tool names in its reports and messages is UTF-8 text.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def local_path(value: object) -> str:
    """A file or folder path given on the command line or in an option: 1 to :data:`PATH_MAX` bytes,
    each name at most :data:`NAME_MAX` bytes (as the file system encodes them), no control
    character, UTF-8 (no byte that is not: it could not be named in a report), not starting with
    ``-`` (it would read as an option: write ``./-x``); raises ValueError. The path need not exist."""
    expected = (f"expected a path of 1 to {PATH_MAX} bytes of UTF-8, each name at most {NAME_MAX}, without "
                "control characters, not starting with '-'")
    if not isinstance(value, str) or not value or value.startswith("-") or _UNPRINTABLE.search(value):
        raise ValueError(f"{shown(value)} is not a path ({expected})")
    encoded = value.encode("utf-8")
    if len(encoded) > PATH_MAX or any(len(name) > NAME_MAX for name in encoded.split(b"/")):
        raise ValueError(f"{shown(value)} is too long for a path ({expected})")
    return value


_TEXT = re.compile(r"[^\x00-\x1f\x7f]{1,200}")


def text(value: object) -> str:
    """Free text for a label: one line of 1 to 200 printable characters; raises ValueError.
    (It reaches a Dockerfile only through :func:`dockerfile_quote`.)"""
    return _check(_TEXT, value, "one line of printable text (1 to 200 characters)")


# --- escaping --------------------------------------------------------------------------------------

def dockerfile_quote(value: object) -> str:
    """``value`` as a double-quoted Dockerfile word (LABEL, ENV): ``\\``, ``"`` and ``$`` escaped, so
    it stays one literal value (https://docs.docker.com/reference/dockerfile/#environment-replacement).
    Raises ValueError for a control character (a newline would start a new instruction)."""
    s = str(value)
    if CONTROL.search(s) or "\n" in s or "\r" in s or "\t" in s:
        raise ValueError(f"{shown(s)} holds a control character and cannot be written into a Dockerfile")
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def shell_quote(value: object) -> str:
    """``value`` as one POSIX shell word (:func:`shlex.quote`); raises ValueError for a control character."""
    s = str(value)
    if CONTROL.search(s) or "\n" in s or "\r" in s:
        raise ValueError(f"{shown(s)} holds a control character and cannot be written into a shell command")
    return shlex.quote(s)
