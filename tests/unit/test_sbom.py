"""SBOM pieces that need no engine: Debian components from a dpkg status, the referrer tag, and
which registries are spoken to over plain HTTP."""

import json

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


class _Container:
    """A created container's archives: ``files`` ``{absolute path: bytes or ("link", target)}``;
    get_archive answers as the Engine does (the last part of the path, then what is under it)."""

    def __init__(self, files: dict):
        self.files = files

    def get_archive(self, path, chunk_size=None):
        import io
        import tarfile

        import docker
        inside = {p: v for p, v in self.files.items() if p == path or p.startswith(path + "/")}
        if not inside:
            raise docker.errors.NotFound("no such path")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            top = path.rsplit("/", 1)[-1]
            for p, v in sorted(inside.items()):
                info = tarfile.TarInfo(top + p[len(path):])
                if isinstance(v, tuple):
                    info.type, info.linkname = tarfile.SYMTYPE, v[1]
                    tar.addfile(info)
                else:
                    info.size = len(v)
                    tar.addfile(info, io.BytesIO(v))
        data = buf.getvalue()
        return iter([data[:700], data[700:]]), {}


SITE = "/opt/venv/lib/python3.11/site-packages"


def _metadata(name: str, version: str) -> bytes:
    return f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: {name}\nLicense: MIT\n".encode()


def test_the_venvs_distributions_are_read_from_the_image_files_natively():
    # only dist-info files leave the image; cyclonedx-py (the builder's own) lists exactly those
    container = _Container({
        f"{SITE}/numpy-2.4.6.dist-info/METADATA": _metadata("numpy", "2.4.6"),
        f"{SITE}/numpy-2.4.6.dist-info/RECORD": b"",
        f"{SITE}/numpy/__init__.py": b"raise SystemExit('never imported')",
        f"{SITE}/azureml_inference_server_http-1.5.1.dist-info/METADATA": _metadata("azureml-inference-server-http", "1.5.1"),
        f"{SITE}/evil.dist-info/METADATA": ("link", "/etc/shadow"),
    })
    bom = sbom._python_bom(container, "img:1", "/opt/venv", "3.11")
    assert sorted((c["name"], c["version"]) for c in bom["components"]) == [
        ("azureml-inference-server-http", "1.5.1"), ("numpy", "2.4.6")]


def test_a_member_leaving_the_folder_is_refused(tmp_path):
    import tarfile
    escape = tmp_path / "escaped"  # where the member's name leads from the destination
    up = "../" * len((tmp_path / "out").parts)
    container = _Container({f"{SITE}/{up}{str(escape).lstrip('/')}/METADATA": b"x"})
    with pytest.raises(tarfile.OutsideDestinationError):
        sbom.copy_out(container, SITE, lambda name: True, tmp_path / "out")
    assert not escape.exists()


def test_an_image_whose_venv_holds_no_distribution_is_one_error():
    with pytest.raises(sbom.SbomError, match="no distribution"):
        sbom._python_bom(_Container({f"{SITE}/numpy/__init__.py": b""}), "img:1", "/opt/venv", "3.11")


def test_without_etc_os_release_the_spec_s_fallback_is_read():
    container = _Container({"/usr/lib/os-release": b"ID=debian\nVERSION_ID=13\n", "/var/lib/dpkg/status": b""})
    assert sbom._system(container, "img:1") == ("debian-13", "")


def test_the_system_part_follows_debians_os_release_link_and_reads_dpkg_status():
    container = _Container({
        "/etc/os-release": ("link", "../usr/lib/os-release"),
        "/usr/lib/os-release": b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n',
        "/var/lib/dpkg/status": STATUS.encode(),
    })
    assert sbom._system(container, "img:1") == ("debian-12", STATUS)


def test_an_image_without_a_dpkg_status_is_one_error():
    with pytest.raises(sbom.SbomError, match="/var/lib/dpkg/status"):
        sbom._system(_Container({"/usr/lib/os-release": b"ID=debian\n"}), "img:1")


def test_os_release_values_are_unquoted_as_a_shell_would():
    text = 'ID=debian\nVERSION_ID="13"\n# a comment\nNAME=\'Debian GNU/Linux\'\nBROKEN="x\nlower=1\n'
    assert sbom.os_release(text) == {"ID": "debian", "VERSION_ID": "13", "NAME": "Debian GNU/Linux"}


def test_the_versions_the_taggers_read_travel_in_the_sbom_and_come_back_checked():
    props = sbom.version_properties("org.example", "2.13.0+cpu", "3.11.2")
    assert props == {"org.example.installed.framework-version": "2.13.0+cpu",
                     "org.example.installed.python-version": "3.11.2"}
    assert sbom.installed_versions("org.example", props) == ("2.13.0+cpu", "3.11.2")
    assert sbom.version_properties("org.example", None, "3.11.2") == {"org.example.installed.python-version": "3.11.2"}
    for bad in ({}, {**props, "org.example.installed.python-version": "3.11.2; rm -rf /"},
                {**props, "org.example.installed.framework-version": "--help"}):
        assert sbom.installed_versions("org.example", bad) is None


class _Registry:
    """The registry's artifact read (Registry.artifact_json) serving one document."""

    def __init__(self, doc):
        self.doc = doc

    def artifact_json(self, repository, tag, max_bytes, what):
        assert tag == sbom.referrer_tag("sha256:" + "d" * 64) and max_bytes == sbom.MAX_SBOM
        return ("sha256:" + "a" * 64, self.doc) if self.doc is not None else None


def _bom(image_id: str, **extra) -> dict:
    return {"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
            "metadata": {"component": {"type": "container", "bom-ref": image_id, "name": "x",
                                       "properties": [{"name": "org.example.installed.python-version", "value": "3.11.2"}]}},
            "components": [], **extra}


def test_a_published_sbom_is_read_back_only_when_it_describes_this_image_and_validates(tmp_path):
    digest, image_id, out = "sha256:" + "d" * 64, "sha256:" + "1" * 64, tmp_path / "x.cdx.json"
    got = sbom.fetch(_Registry(_bom(image_id)), "r/x", digest, image_id, out)
    assert got == {"path": str(out), "components": 0, "digest": "sha256:" + "a" * 64,
                   "properties": {"org.example.installed.python-version": "3.11.2"}}
    assert json.loads(out.read_text())["metadata"]["component"]["bom-ref"] == image_id
    out.unlink()
    assert sbom.fetch(_Registry(None), "r/x", digest, image_id, out) is None
    assert sbom.fetch(_Registry(_bom("sha256:" + "2" * 64)), "r/x", digest, image_id, out) is None  # another image
    assert sbom.fetch(_Registry({"metadata": "x"}), "r/x", digest, image_id, out) is None
    with pytest.raises(sbom.SbomError, match="CycloneDX"):
        sbom.fetch(_Registry(_bom(image_id, components="not a list")), "r/x", digest, image_id, out)
    assert not out.exists()  # nothing written for a document that was refused
