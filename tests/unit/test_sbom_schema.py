"""The CycloneDX schema check (builder.run.sbom_schema): the library's strict schema, with IRIs
checked through their RFC 3987 URI mapping instead of the slow Earley parser."""

import json

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from builder.run import sbom_schema


def _bom(url: str) -> dict:
    return {"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
            "components": [{"type": "library", "name": "x", "externalReferences": [{"type": "website", "url": url}]}]}


@pytest.mark.parametrize("url, ok", [
    ("https://pypi.org/project/numpy/", True), ("https://bücher.example/ü?q=ä#x", True), ("relative/ref", True),
    ("https://example.org/a b", False), ("http://x/\x01", False), ("https://x/%zz", False), ("\ud800", False),
    ("https://x/<y>", False), ("http://x\n", False), ("http://x/\x85", False), ("http://x/\ufffe", False),
    ("http://x/?q=\ue000", True)])
def test_an_iri_reference_passes_when_its_uri_mapping_is_a_uri_reference(url, ok):
    error = sbom_schema.first_error(_bom(url), "1.6")
    assert (error is None) is ok
    if not ok:
        assert "externalReferences[0].url" in error and "\n" not in error


@pytest.mark.parametrize("url", ["https://pypi.org/project/numpy/", "https://example.org/a b", "mailto:a@b.example"])
def test_the_verdict_is_the_librarys_own_on_ascii(url):
    # The library's validator (rfc3987-syntax) and this one agree where both run.
    theirs = JsonStrictValidator(SchemaVersion.from_version("1.6")).validate_str(json.dumps(_bom(url)))
    assert (theirs is None) is (sbom_schema.first_error(_bom(url), "1.6") is None)


def test_the_strict_schema_still_refuses_an_unknown_property_and_a_missing_one():
    assert "additional" in sbom_schema.first_error({**_bom("https://x.example/"), "extra": 1}, "1.6").lower()
    assert sbom_schema.first_error({"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
                                    "components": [{"name": "x"}]}, "1.6") is not None


def test_the_uri_mapping_encodes_only_what_is_not_ascii():
    assert sbom_schema.uri_of("https://bücher.example/a b") == "https://b%C3%BCcher.example/a b"
    for not_iri in ("\ud800", "\x85", "\ufffe", "\U0001FFFE"):
        with pytest.raises(ValueError):
            sbom_schema.uri_of(not_iri)


def test_the_other_formats_are_draft_7s_own():
    from jsonschema import Draft7Validator
    theirs = Draft7Validator.FORMAT_CHECKER.checkers
    ours = sbom_schema.validator("1.6").format_checker.checkers
    assert set(ours) == set(theirs)
    assert all(ours[name] is theirs[name] for name in theirs if name not in ("iri", "iri-reference"))
