"""The CycloneDX JSON schema check of an SBOM (made by a build or read back from a registry).

The schema and its referenced schemas are cyclonedx-python-lib's strict CycloneDX schema (its
``JsonStrictValidator``: no unknown property), checked by ``jsonschema``'s Draft 7 validator, built
once per process. Its formats are jsonschema's Draft 7 format checker's, but ``iri`` and
``iri-reference``: there jsonschema runs ``rfc3987-syntax``, an Earley parser that took 97% of a
no-op ``builder all`` of the 16 images (85 s of 89 s, 2026-12-07, py-spy) on the URLs of the
components' external references. Here an IRI is checked as RFC 3987 section 3.1 defines it against
URIs: every character outside ASCII is mapped to the percent-encoded bytes of its UTF-8 form, and the
result must be a URI (``iri``) or URI reference (``iri-reference``) of RFC 3986, checked by
``rfc3986-validator`` (https://www.rfc-editor.org/rfc/rfc3987#section-3.1). That admits the
characters RFC 3987 leaves out of ``ucschar`` (private use, unassigned planes), which the mapping
would encode as well.
"""

from __future__ import annotations

import functools
from urllib.parse import quote

from jsonschema import Draft7Validator, FormatChecker
from rfc3986_validator import validate_rfc3986

def uri_of(iri: str) -> str:
    """The URI an IRI maps to (RFC 3987 section 3.1, step 2): each non-ASCII character replaced by
    the percent-encoded bytes of its UTF-8 form; ASCII stays as it is (a character a URI cannot hold,
    a space or a control character, then fails the URI check). Raises ValueError for a lone
    surrogate, which no IRI holds (UnicodeEncodeError is one)."""
    return "".join(c if c < "\x80" else quote(c.encode("utf-8"), safe="") for c in iri)


def _is(rule: str, instance: object) -> bool:
    # A string passes when its URI mapping is an RFC 3986 ``rule``; any other JSON value passes
    # (Draft 7: a format applies to strings only).
    if not isinstance(instance, str):
        return True
    try:
        return validate_rfc3986(uri_of(instance), rule=rule) is not None
    except ValueError:
        return False


def _checker() -> FormatChecker:
    checker = FormatChecker([f for f in Draft7Validator.FORMAT_CHECKER.checkers if f not in ("iri", "iri-reference")])

    checker.checks("iri")(functools.partial(_is, "URI"))
    checker.checks("iri-reference")(functools.partial(_is, "URI_reference"))
    return checker


@functools.cache
def validator(spec_version: str) -> Draft7Validator:
    """The strict CycloneDX ``spec_version`` (``1.6``) JSON schema's validator, with the formats of
    the module doc. Raises ValueError for a version cyclonedx-python-lib does not know."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    strict = JsonStrictValidator(SchemaVersion.from_version(spec_version))
    return strict._validator.evolve(format_checker=_checker())  # its schema and referenced schemas


def first_error(bom: object, spec_version: str) -> str | None:
    """The first way ``bom`` (a parsed JSON document) fails the schema (:func:`validator`), as one
    line (the message and the JSON path), or None when it passes."""
    error = next(validator(spec_version).iter_errors(bom), None)
    return None if error is None else f"{error.message[:300]} (at {error.json_path})"
