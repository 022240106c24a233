"""SBOM pieces that need no engine: Debian components from a dpkg status, the referrer tag, and
which registries are spoken to over plain HTTP."""

import pytest

from builder.run import sbom

STATUS = """Package: tini
Status: install ok installed
Maintainer: Debian Go Packaging Team <team+pkg-go@tracker.debian.org>
Architecture: amd64
Version: 0.19.0-1

Package: removed-one
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1

Package: tzdata
Status: install ok installed
Architecture: all
Version: 2026b-0+deb12u1
"""


def test_installed_debian_packages_become_components_with_deb_purls():
    got = sbom.debian_components(STATUS, "debian-12")
    assert [c["name"] for c in got] == ["tini", "tzdata"]
    assert got[0]["purl"] == "pkg:deb/debian/tini@0.19.0-1?arch=amd64&distro=debian-12"
    assert got[1]["purl"] == "pkg:deb/debian/tzdata@2026b-0%2Bdeb12u1?arch=all&distro=debian-12"
    assert got[0]["supplier"]["name"].startswith("Debian Go Packaging Team")
    sbom._validate({"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1, "components": got})


def test_an_invalid_document_is_refused():
    with pytest.raises(sbom.SbomError, match="does not validate"):
        sbom._validate({"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1, "components": [{"name": "x"}]})


def test_the_sbom_is_tagged_after_the_image_digest():
    assert sbom.referrer_tag("sha256:" + "ab" * 32) == "sha256-" + "ab" * 32 + ".sbom"
