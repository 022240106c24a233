"""The CycloneDX JSON schema check of an SBOM (made by a build or read back from a registry).

The schema and its referenced schemas are cyclonedx-python-lib's strict CycloneDX schema (its
``JsonStrictValidator``: no unknown property), checked by ``jsonschema``'s Draft 7 validator, built
once per process. Its formats are jsonschema's Draft 7 format checker's (a copy of its table), but
``iri`` and ``iri-reference``: there jsonschema runs ``rfc3987-syntax``, an Earley parser that took
97% of a no-op ``builder all`` of the 16 images (85 s of 89 s, 2026-12-07, py-spy) on the URLs of
the components' external references. Here an IRI is checked as RFC 3987 section 3.1 defines it
against URIs: each non-ASCII character must be a ``ucschar`` or an ``iprivate`` of RFC 3987's
grammar (``iprivate`` is admitted anywhere, not only in the query), is then mapped to the
percent-encoded bytes of its UTF-8 form, and the whole must match RFC 3986's ``URI`` (``iri``) or
``URI-reference`` (``iri-reference``) grammar, ``rfc3986-validator``'s expressions matched in full
(https://www.rfc-editor.org/rfc/rfc3987#section-2.2, #section-3.1).
"""

from __future__ import annotations

import functools
from urllib.parse import quote

from jsonschema import Draft7Validator, FormatChecker
from rfc3986_validator import URI_RE_COMP, URI_REF_RE_COMP

#: The non-ASCII code points RFC 3987 admits in an IRI: ``ucschar`` and ``iprivate`` (section 2.2).
_IRI_RANGES = ((0xA0, 0xD7FF), (0xE000, 0xF8FF), (0xF900, 0xFDCF), (0xFDF0, 0xFFEF),
               *((p << 16, (p << 16) + 0xFFFD) for p in range(1, 17)))


def uri_of(iri: str) -> str:
    """The URI an IRI maps to (RFC 3987 section 3.1, step 2): each non-ASCII character replaced by
    the percent-encoded bytes of its UTF-8 form; ASCII stays as it is (a character a URI cannot hold,
    a space or a control character, then fails the URI check). Raises ValueError for a non-ASCII
    character RFC 3987 does not admit (:data:`_IRI_RANGES`: a C1 control, a surrogate, a
    noncharacter)."""
    for c in iri:
        if c >= "\x80" and not any(lo <= ord(c) <= hi for lo, hi in _IRI_RANGES):
            raise ValueError(f"U+{ord(c):04X} is not an IRI character")
    return "".join(c if c < "\x80" else quote(c.encode("utf-8"), safe="") for c in iri)


#: RFC 3986's grammars as ``rfc3986-validator`` compiles them, by the rule each checks.
_GRAMMARS = {"URI": URI_RE_COMP, "URI_reference": URI_REF_RE_COMP}


def _is(rule: str, instance: object) -> bool:
    # A string passes when its URI mapping matches the RFC 3986 ``rule`` in full (re's ``$`` would
    # let a trailing newline through); any other JSON value passes (Draft 7: formats apply to strings).
    if not isinstance(instance, str):
        return True
    try:
        return _GRAMMARS[rule].fullmatch(uri_of(instance)) is not None
    except ValueError:
        return False


def _checker() -> FormatChecker:
    checker = FormatChecker(())
    checker.checkers = {name: check for name, check in Draft7Validator.FORMAT_CHECKER.checkers.items()
                        if name not in ("iri", "iri-reference")}
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
