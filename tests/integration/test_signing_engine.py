"""Signed images on the local registry: the main job (conftest ``main_job``) publishes with this
session's cosign key; `builder verify` passes for what it published and fails for a copy whose tag
names another image or whose attestation was replaced, and for the wrong key; `builder extend`
builds only FROM a verified digest; a key that cannot be used leaves ``latest`` where it was; the
key's password and the private key appear in nothing the run wrote or published."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from repo import ROOT
from run_builder import MINIMAL, SUBSET, builder, make_key_pair, raw_digest, report

from builder.sign import cosign

pytestmark = [pytest.mark.engine, pytest.mark.both_engines]

PROVENANCE = "slsaprovenance1"


def _ok(main_job) -> Path:
    result, build_dir = main_job
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return build_dir


def _verify(ref: str, pub: Path, *extra: str) -> subprocess.CompletedProcess:
    return builder("verify", ref, "--key", str(pub), *extra, timeout=600)


def _cosign(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    tool = cosign.ensure(ROOT / "build")
    return subprocess.run([str(tool), *args], capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def tampered(main_job, registry, signing_keys, tmp_path_factory) -> dict[str, str]:
    """Copies of the published scikit-learn index, with its signatures and attestations (cosign copy),
    in repositories of their own: ``copy`` untouched, ``replaced`` with one build's provenance replaced
    by one signed with another key, ``swapped`` with ``latest`` then naming the minimal image."""
    _ok(main_job)
    source = f"{registry}/{SUBSET}:latest"
    out = {}
    for name in ("copy", "replaced", "swapped"):
        out[name] = f"{registry}/tamper-{uuid.uuid4().hex[:8]}/{SUBSET}:latest"
        r = _cosign("copy", "--force", "--allow-http-registry=true", "--allow-insecure-registry=true", source, out[name])
        assert r.returncode == 0, r.stderr
    attacker = make_key_pair(tmp_path_factory.mktemp("attacker"), "attacker")
    repository = out["replaced"].rsplit(":", 1)[0]
    index = json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{out['replaced']}"],
                                      capture_output=True, check=True).stdout)
    arm64 = next(m["digest"] for m in index["manifests"] if m["platform"]["architecture"] == "arm64")
    forged = tmp_path_factory.mktemp("forged") / "provenance.json"
    forged.write_text(json.dumps({"buildDefinition": {"buildType": "https://example.invalid/evil", "externalParameters": {}},
                                  "runDetails": {"builder": {"id": "https://example.invalid/evil"}}}))
    r = _cosign("attest", "--yes", "--replace", f"--type={PROVENANCE}", f"--predicate={forged}",
                f"--key={attacker['key']}", *cosign.write_flags(cosign.LEGACY, False, None), "--allow-http-registry=true",
                "--allow-insecure-registry=true", "--", f"{repository}@{arm64}", env={"COSIGN_PASSWORD": "attacker"})
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["skopeo", "copy", "--all", "--src-tls-verify=false", "--dest-tls-verify=false",
                        f"docker://{registry}/{MINIMAL}:latest", f"docker://{out['swapped']}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out


def test_the_main_job_signed_and_attested_every_build_and_index(main_job, registry, signing_keys):
    images = report(_ok(main_job))
    for name in (MINIMAL, SUBSET):
        assert images[name]["signature"] == "signed" and images[name]["sign_seconds"] is not None, images[name]
        print(f"{name}: attesting and signing took {images[name]['sign_seconds']} s")
        for b in images[name]["platforms"]:
            assert sorted(b["attestations"]) == ["https://cyclonedx.org/bom", "https://in-toto.io/attestation/test-result/v0.1",
                                                 "https://slsa.dev/provenance/v1"], b
        r = _verify(f"{registry}/{name}:latest", signing_keys["pub"])
        lines = r.stdout.strip().splitlines()
        assert r.returncode == 0 and len(lines) == 9 and all(line.startswith("ok ") for line in lines), r.stdout + r.stderr


def test_verify_by_digest_gives_json_findings_with_the_provenance_of_this_commit(main_job, registry, signing_keys):
    entry = report(_ok(main_job))[MINIMAL]
    amd64 = entry["platforms"][0]
    r = _verify(f"{registry}/{MINIMAL}@{amd64['digest']}", signing_keys["pub"], "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    found = json.loads(r.stdout)
    assert found["ok"] and [f["check"] for f in found["findings"]] == ["signature", "provenance", "test-result", "sbom"]
    statements = _cosign("verify-attestation", f"--key={signing_keys['pub']}", f"--type={PROVENANCE}",
                         "--insecure-ignore-tlog=true", "--allow-http-registry=true", "--allow-insecure-registry=true",
                         "--", f"{registry}/{MINIMAL}@{amd64['digest']}")
    assert statements.returncode == 0, statements.stderr
    import base64
    provenance = json.loads(base64.b64decode(json.loads(statements.stdout.splitlines()[-1])["payload"]))["predicate"]
    print(json.dumps(provenance, indent=1)[:6000])  # the closing note's example
    deps = provenance["buildDefinition"]["resolvedDependencies"]
    assert any(d["uri"].startswith("pkg:deb/debian/python3@") for d in deps)
    assert any(d["uri"].startswith("pkg:pypi/azureml-inference-server-http@1.5.1") for d in deps)
    assert provenance["buildDefinition"]["externalParameters"]["platform"] == "linux/amd64"


def test_a_copy_verifies_but_not_once_its_tag_names_another_image_or_an_attestation_is_replaced(tampered, signing_keys):
    assert _verify(tampered["copy"], signing_keys["pub"]).returncode == 0
    replaced = _verify(tampered["replaced"], signing_keys["pub"])
    failed = [line for line in replaced.stdout.splitlines() if line.startswith("FAIL")]
    assert replaced.returncode == 1 and len(failed) == 1 and " provenance " in failed[0] and "linux/arm64" in failed[0], replaced.stdout
    swapped = _verify(tampered["swapped"], signing_keys["pub"])
    assert swapped.returncode == 1 and swapped.stdout.startswith("FAIL signature"), swapped.stdout


def test_the_wrong_key_fails(main_job, registry, tmp_path):
    _ok(main_job)
    other = make_key_pair(tmp_path / "other", "other")
    r = _verify(f"{registry}/{SUBSET}:latest", other["pub"])
    assert r.returncode == 1 and r.stdout.strip() and all(line.startswith("FAIL") for line in r.stdout.strip().splitlines()), r.stdout


def _extend_config(folder: Path, base: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "score.py").write_text("def init():\n    pass\n\n\ndef run(raw_data):\n    return raw_data\n")
    (folder / "extend.yml").write_text(f"entryScript: score.py\nbaseImage: {base}\n")
    return folder / "extend.yml"


def test_extend_builds_from_the_verified_digest_and_refuses_an_unsigned_base(main_job, registry, signing_keys,
                                                                           tampered, tmp_path):
    _ok(main_job)
    out = tmp_path / "signed-out"
    r = builder("extend", str(_extend_config(tmp_path / "signed", SUBSET)), "--verify-key", str(signing_keys["pub"]),
                "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    digest = raw_digest(f"{registry}/{SUBSET}:latest")
    assert f"FROM {registry}/{SUBSET}@{digest}" in (out / "Dockerfile").read_text()
    out = tmp_path / "unsigned-out"
    r = builder("extend", str(_extend_config(tmp_path / "unsigned", tampered["swapped"])), "--verify-key",
                str(signing_keys["pub"]), "--out", str(out))
    assert r.returncode == 2 and "fails verification" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not out.exists()
    r = builder("extend", str(_extend_config(tmp_path / "skipped", tampered["swapped"])), "--verify-key",
                str(signing_keys["pub"]), "--no-verify", "--out", str(tmp_path / "skipped-out"))
    assert r.returncode == 0 and r.stderr.startswith("warning: --no-verify"), r.stdout + r.stderr


def test_a_key_that_cannot_be_used_leaves_latest_where_it_was(main_job, registry, signing_keys, tmp_path):
    _ok(main_job)
    before = raw_digest(f"{registry}/{MINIMAL}:latest")
    r = builder("all", "--select", MINIMAL, "--build-dir", str(tmp_path / "b"),
                env={"REGISTRY": registry, "BUILDER_SIGNING_KEY": str(signing_keys["key"]), "COSIGN_PASSWORD": "wrong"})
    assert r.returncode == 1 and "decryption failed" in r.stderr.strip().splitlines()[-1], r.stdout[-2000:] + r.stderr
    assert not (tmp_path / "b" / "report.json").exists()  # stopped before any image started
    assert raw_digest(f"{registry}/{MINIMAL}:latest") == before


def test_the_key_and_its_password_appear_in_nothing_the_run_wrote_or_published(main_job, registry, signing_keys,
                                                                              docker_client):
    build_dir = _ok(main_job)
    password = signing_keys["password"].encode()
    secret = "".join(Path(signing_keys["key"]).read_text().splitlines()[1:-1]).encode()[:40]  # the key's body
    assert len(password) > 10 and len(secret) == 40
    result, _ = main_job
    for name, data in (("stdout", result.stdout.encode()), ("stderr", result.stderr.encode())):
        assert password not in data and secret not in data, name
    for path in (p for p in build_dir.rglob("*") if p.is_file()):
        data = path.read_bytes()
        assert password not in data and secret not in data, path
    for name in (MINIMAL, SUBSET):
        image = docker_client.images.get(f"{registry}/{name}:latest")
        seen = json.dumps(image.attrs).encode() + json.dumps(image.history()).encode()
        assert password not in seen and secret not in seen, name
    for b in report(build_dir)[SUBSET]["platforms"]:
        r = _cosign("verify-attestation", f"--key={signing_keys['pub']}", f"--type={PROVENANCE}", "--insecure-ignore-tlog=true",
                    "--allow-http-registry=true", "--allow-insecure-registry=true", "--", f"{registry}/{SUBSET}@{b['digest']}")
        assert r.returncode == 0 and password not in r.stdout.encode() and secret not in r.stdout.encode()
