"""Signing's pure parts: the SLSA provenance and test-result predicates, the key and reference
grammars, the JUnit reader, `builder verify`'s judgement against a fake cosign and registry, and
which cosign 3 flags each storage form gets. The same code signs and verifies real images on the
local registry in tests/integration/test_signing_engine.py, and both forms (and cosign 2.5's
signatures) on a registry of its own, without the Engine, in tests/registry/test_cosign_forms.py."""

from __future__ import annotations

import hashlib
import json

import pytest
from repo import ROOT
from typer.testing import CliRunner

from builder.matrix.platform import PLATFORMS
from builder.cli import app
from builder.generate import apt_lock, lock
from builder.matrix import load
from builder.run.steps import StepFailed
from builder.run.steps.sign import junit_cases
from builder.sign import SignError, cosign, predicates
from builder.sign import verify as checks

AMD64, ARM64 = PLATFORMS["linux/amd64"], PLATFORMS["linux/arm64"]

MINIMAL = "minimal-debian12-py311-cpu-inference"
SKLEARN = "sklearn-1.9-debian12-py311-cpu-inference"
REPO = "127.0.0.1:5000/" + SKLEARN


def _facts(**changes) -> predicates.BuildFacts:
    images = ROOT / "images"
    facts = dict(image=MINIMAL, platform=ARM64, source="https://github.com/inference-images/builder",
                 revision="a" * 40, cell_digest="sha256:" + "c" * 64, dockerfile=f"images/{MINIMAL}/Dockerfile",
                 dockerfile_sha256="d" * 64, build_args={"WHEELHOUSE_IMAGE": "wheelhouse:1", "SOURCE_DATE_EPOCH": "17"},
                 base=("builder-base/debian12:arm64", "sha256:" + "b" * 64),
                 wheels=lock.read(images, MINIMAL, ARM64), debs=apt_lock.read(images, MINIMAL, ARM64),
                 tools={"inference-image-builder": "0.1.0", "docker-engine": "26.1.5"}, run_id="r1",
                 started="2026-12-02T10:00:00Z", finished="2026-12-02T10:05:00Z")
    return predicates.BuildFacts(**{**facts, **changes})


def test_provenance_names_the_commit_the_dockerfile_the_base_and_every_locked_package():
    f = _facts()
    p = predicates.provenance(f)
    definition = p["buildDefinition"]
    assert definition["buildType"].startswith(f.source + "/")
    assert definition["externalParameters"]["source"] == {"uri": f.source, "digest": {"gitCommit": "a" * 40}}
    assert definition["externalParameters"]["platform"] == ARM64.name
    assert definition["internalParameters"]["dockerfile"]["digest"] == {"sha256": "d" * 64}
    assert definition["internalParameters"]["buildArgs"]["SOURCE_DATE_EPOCH"] == "17"
    deps = definition["resolvedDependencies"]
    assert {"uri": "builder-base/debian12:arm64", "name": "base", "digest": {"sha256": "b" * 64}} in deps
    wheels = {d["uri"]: d for d in deps if d["uri"].startswith("pkg:pypi/")}
    assert set(wheels) == {f"pkg:pypi/{e.name}@{e.version}" for e in f.wheels.entries.values()}
    server = next(e for e in f.wheels.entries.values() if e.name == "azureml-inference-server-http")
    assert wheels[f"pkg:pypi/{server.name}@{server.version}"]["annotations"]["sha256"] == \
        sorted(h.split(":", 1)[1] for h in server.hashes)
    debs = {d["uri"] for d in deps if d["uri"].startswith("pkg:deb/")}
    assert debs == {f"pkg:deb/debian/{n}@{v}?arch=arm64" for n, v in f.debs.versions.items()} and debs
    assert p["runDetails"]["builder"]["version"]["docker-engine"] == "26.1.5"
    assert p["runDetails"]["metadata"]["invocationID"] == "r1"  # SLSA v1 spells it so
    json.dumps(p)  # JSON-ready


def test_a_child_image_has_no_debian_packages_of_its_own():
    p = predicates.provenance(_facts(debs=None))
    assert not any(d["uri"].startswith("pkg:deb/") for d in p["buildDefinition"]["resolvedDependencies"])


def test_the_test_result_names_the_tested_image_and_the_suites_content(tmp_path):
    suite = tmp_path / "tests" / "minimal"
    suite.mkdir(parents=True)
    (suite / "test_a.py").write_text("def test_a(): pass\n")
    facts = predicates.TestFacts(folders=[suite], root=tmp_path, image_id="sha256:" + "e" * 64,
                                 outcome="3 passed, 1 skipped in 9.1s", seconds=9.1,
                                 passed=["t::a", "t::b", "t::c"], skipped=["t::gpu"])
    r = predicates.test_result(facts)
    assert r["result"] == "PASSED" and r["warnedTests"] == ["t::gpu"] and len(r["passedTests"]) == 3
    tested = next(c for c in r["configuration"] if c["name"] == "tested-image")
    assert tested["digest"] == {"sha256": "e" * 64} and tested["annotations"]["seconds"] == 9.1
    before = next(c for c in r["configuration"] if c["name"] == "tests/minimal")["digest"]
    (suite / "test_a.py").write_text("def test_a(): assert False\n")
    assert predicates.test_result(facts)["configuration"][0]["digest"] != before  # the suite's content counts
    assert predicates.test_result(predicates.TestFacts(**{**facts.__dict__, "failed": ["t::x"]}))["result"] == "FAILED"


def test_a_gpu_images_test_result_carries_what_its_gpu_tests_read(tmp_path):
    gpu = {"cuda": "13.5", "cudnn": "9.28.1", "driver-min": "580.65.06", "verified-on": "cpu"}
    facts = predicates.TestFacts(folders=[], root=tmp_path, image_id="sha256:" + "e" * 64, outcome="9 passed",
                                 seconds=1.0, gpu=gpu)
    tested = next(c for c in predicates.test_result(facts)["configuration"] if c["name"] == "tested-image")
    assert tested["annotations"]["gpu"] == gpu
    cpu = predicates.TestFacts(**{**facts.__dict__, "gpu": {}})
    assert "gpu" not in next(c for c in predicates.test_result(cpu)["configuration"]
                             if c["name"] == "tested-image")["annotations"]


def test_junit_cases_are_read_by_outcome(tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text('<testsuites><testsuite><testcase classname="a" name="ok"/>'
                   '<testcase classname="a" name="gpu"><skipped message="no GPU"/></testcase>'
                   '<testcase classname="a" name="bad"><failure message="x"/></testcase></testsuite></testsuites>')
    assert junit_cases(xml) == {"passed": ["a::ok"], "skipped": ["a::gpu"], "failed": ["a::bad"]}
    xml.write_text("<testsuites><unclosed>")
    with pytest.raises(StepFailed, match="JUnit XML"):
        junit_cases(xml)


@pytest.mark.parametrize("value", ["", "-key", "--key=x", "a\nb", "missing.key"])
def test_a_key_that_is_neither_a_file_nor_a_key_manager_uri_is_refused(value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError):
        cosign.key_reference(value)


def test_a_key_file_is_made_absolute_and_a_key_manager_uri_passes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cosign.key").write_text("k")
    assert cosign.key_reference("cosign.key") == str(tmp_path / "cosign.key")
    assert cosign.key_reference("awskms:///arn:aws:kms:eu-west-1:1:key/1") == "awskms:///arn:aws:kms:eu-west-1:1:key/1"


@pytest.mark.parametrize("ref, expected", [
    (f"{REPO}:latest", (REPO, "latest")),
    (f"{REPO}@sha256:{'a' * 64}", (REPO, f"sha256:{'a' * 64}")),
])
def test_a_reference_splits_into_repository_and_tag_or_digest(ref, expected):
    assert checks.split_reference(ref) == expected


@pytest.mark.parametrize("ref", ["-x", "127.0.0.1:5000/repo", f"{REPO}:la test", f"{REPO}@sha256:short", "REPO:latest"])
def test_a_malformed_reference_is_refused(ref):
    with pytest.raises(ValueError):
        checks.split_reference(ref)


class FakeCosign:
    """cosign's verify and verify-attestation over ``signed`` digests and ``statements``."""

    def __init__(self, signed: set[str], statements: dict[tuple[str, str], dict]):
        self.signed, self.statements = signed, statements

    def verify(self, ref, key):
        if key != "good.pub" or ref.rsplit("@", 1)[1] not in self.signed:
            raise SignError("cosign verify: no matching signatures")
        return [{}]

    def attestations(self, ref, key, predicate_type):
        digest = ref.rsplit("@", 1)[1]
        kind = next(k for k, v in predicates.COSIGN_TYPES.items() if v == predicate_type)
        found = self.statements.get((digest, kind))
        if key != "good.pub" or found is None:
            raise SignError("cosign verify-attestation: none found")
        return [{"predicateType": kind, "subject": [{"digest": {"sha256": digest.split(":")[1]}}], "predicate": found}]


class FakeRegistry:
    def __init__(self, manifests: dict[str, dict], tags: dict[str, str], configs: dict[str, dict]):
        self.manifests, self.tags, self.configs = manifests, tags, configs

    def manifest(self, repository, reference):
        digest = self.tags.get(reference, reference)
        return (digest, self.manifests[digest]) if digest in self.manifests else None

    def config(self, repository, manifest):
        return self.configs[manifest["config"]["digest"]]


def _published(commit: str = "f" * 40, result: str = "PASSED", sklearn: str = "1.9.1"):
    """An index of two builds of the sklearn image, each signed and attested, and the index signed."""
    m = load(ROOT / "matrix.yaml")
    prefix = m.data.project.label_prefix
    manifests, configs, statements, signed = {}, {}, {}, set()
    entries = []
    for arch in ("amd64", "arm64"):
        config = "sha256:" + hashlib.sha256(arch.encode()).hexdigest()
        digest = "sha256:" + hashlib.sha256(("m" + arch).encode()).hexdigest()
        manifests[digest] = {"config": {"digest": config}, "layers": []}
        configs[config] = {"config": {"Labels": {"org.opencontainers.image.title": SKLEARN,
                                                 "org.opencontainers.image.revision": "f" * 40,
                                                 f"{prefix}.framework-version": "1.9.1"}}}
        statements[digest, predicates.PROVENANCE] = {"buildDefinition": {"externalParameters": {
            "source": {"uri": m.data.project.source, "digest": {"gitCommit": commit}}}}}
        statements[digest, predicates.TEST_RESULT] = {"result": result, "configuration": [
            {"name": "tested-image", "digest": {"sha256": digest.split(":")[1]}}]}
        statements[digest, predicates.CYCLONEDX] = {"components": [{"name": "scikit-learn", "version": sklearn}]}
        signed.add(digest)
        entries.append({"digest": digest, "platform": {"os": "linux", "architecture": arch}})
    entries.append({"digest": "sha256:" + "0" * 64, "platform": {"os": "unknown", "architecture": "unknown"},
                    "annotations": {"vnd.docker.reference.type": "attestation-manifest"}})
    index = "sha256:" + "1" * 64
    manifests[index] = {"manifests": entries}
    signed.add(index)
    return m, FakeCosign(signed, statements), FakeRegistry(manifests, {"latest": index}, configs)


def test_a_signed_attested_index_verifies_on_every_platform():
    m, tool, registry = _published()
    findings = checks.verify(f"{REPO}:latest", tool, "good.pub", registry, m)
    assert all(f.ok for f in findings), [f.line() for f in findings]
    assert [f.check for f in findings] == ["signature"] + ["signature", "provenance", "test-result", "sbom"] * 2
    assert findings[1].subject.endswith("(linux/amd64)") and findings[5].subject.endswith("(linux/arm64)")


@pytest.mark.parametrize("change, check", [
    ({"commit": "0" * 40}, "provenance"),
    ({"result": "FAILED"}, "test-result"),
    ({"sklearn": "1.8.0"}, "sbom"),
])
def test_an_attestation_that_does_not_hold_fails_its_check(change, check):
    m, tool, registry = _published(**change)
    failed = {f.check for f in checks.verify(f"{REPO}:latest", tool, "good.pub", registry, m) if not f.ok}
    assert failed == {check}


def test_the_wrong_key_fails_every_check():
    m, tool, registry = _published()
    findings = checks.verify(f"{REPO}:latest", tool, "other.pub", registry, m)
    assert findings and not any(f.ok for f in findings)
    assert findings[0].line().startswith("FAIL signature")


def test_another_image_under_the_tag_fails():
    m, tool, registry = _published()
    other = "sha256:" + "9" * 64
    registry.manifests[other] = {"config": {"digest": next(iter(registry.configs))}, "layers": []}
    registry.tags["latest"] = other
    findings = checks.verify(f"{REPO}:latest", tool, "good.pub", registry, m)
    assert [f.check for f in findings if not f.ok] == ["signature", "provenance", "test-result", "sbom"]


@pytest.mark.parametrize("args, message", [
    (["all", "--signing-key", "/nonexistent/cosign.key"], "--signing-key: '/nonexistent/cosign.key': no such key file"),
    (["all", "--signing-key", "-x"], "is not a key file or a key manager URI"),
    (["all", "--keyless", "--signing-key", "awskms:///k"], "--keyless: leave out --signing-key"),
    (["verify", "not a reference", "--key", "awskms:///k"], "verify: 'not a reference'"),
    (["verify", f"{REPO}:latest", "--key", "/nonexistent.pub"], "no such key file"),
])
def test_a_bad_key_or_reference_exits_2_with_one_line(args, message, tmp_path):
    r = CliRunner().invoke(app, [*args, "--build-dir", str(tmp_path / "b"), "--matrix", str(ROOT / "matrix.yaml")])
    assert r.exit_code == 2, r.output
    assert message in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "b").exists()


def test_a_hostile_or_empty_index_or_missing_labels_fail_instead_of_passing():
    m, tool, registry = _published()
    index = registry.tags["latest"]
    registry.manifests[index]["manifests"][0]["digest"] = "--not-a-digest"
    findings = checks.verify(f"{REPO}:latest", tool, "good.pub", registry, m)
    assert [f.ok for f in findings] == [True, False] and "image index grammar" in findings[1].detail
    m, tool, registry = _published()
    registry.manifests[registry.tags["latest"]]["manifests"] = []
    assert [f.ok for f in checks.verify(f"{REPO}:latest", tool, "good.pub", registry, m)] == [True, False]
    m, tool, registry = _published()
    for config in registry.configs.values():
        config["config"]["Labels"] = {"org.opencontainers.image.title": SKLEARN}
    failed = {f.check for f in checks.verify(f"{REPO}:latest", tool, "good.pub", registry, m) if not f.ok}
    assert failed == {"provenance", "sbom"}


def test_a_key_file_without_its_password_is_refused_before_cosign_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("COSIGN_PASSWORD", raising=False)
    tool = cosign.Cosign(tmp_path / "no-cosign-here")
    with pytest.raises(SignError, match="COSIGN_PASSWORD is not set"):
        tool.sign(f"{REPO}@sha256:{'a' * 64}", str(tmp_path / "cosign.key"))


@pytest.mark.parametrize("git_version, go_path, expected", [
    ("v3.0.2", None, 3),
    ("v2.5.0", b"path\tgithub.com/sigstore/cosign/v2/cmd/cosign\n", 2),
    ("devel", b"path\tgithub.com/sigstore/cosign/v3/cmd/cosign\n", 3),   # Debian forky's 3.1.1
    ("devel", b"path\tgithub.com/sigstore/cosign/cmd/cosign\n", None),   # Debian 13's 2.5.0: not told
    ("devel", None, None),
    (None, None, None),
])
def test_the_cosign_major_version_comes_from_its_version_or_its_go_build_information(git_version, go_path, expected):
    assert cosign.major_of(git_version, go_path) == expected


@pytest.mark.parametrize("form, keyless, config, expected", [
    ("legacy", False, None, ["--new-bundle-format=false", "--use-signing-config=false", "--tlog-upload=false"]),
    ("legacy", True, None, ["--new-bundle-format=false", "--use-signing-config=false"]),
    ("bundle", False, "/b/cosign-signing-config.json", ["--signing-config=/b/cosign-signing-config.json"]),
    ("bundle", True, None, []),
])
def test_each_form_gets_the_flags_measured_with_cosign_3(form, keyless, config, expected):
    assert cosign.write_flags(form, keyless, config and cosign.Path(config)) == expected


@pytest.mark.parametrize("form, config", [("bundle", None), ("sig", None), ("", "/x")])
def test_a_key_based_bundle_without_a_signing_config_or_an_unknown_form_is_refused(form, config):
    with pytest.raises(ValueError):
        cosign.write_flags(form, False, config and cosign.Path(config))


@pytest.mark.parametrize("status, content_type, expected", [
    (200, "application/vnd.oci.image.index.v1+json", True),
    (200, "application/vnd.oci.image.index.v1+json; charset=utf-8", True),
    (404, "text/plain; charset=utf-8", False),  # Debian's docker-registry 2.8: "404 page not found"
    (200, "text/html", False),
    (401, "application/vnd.oci.image.index.v1+json", False),
])
def test_the_referrers_api_is_served_only_when_it_answers_an_image_index(status, content_type, expected):
    from builder.engine.registry import referrers_answer
    assert referrers_answer(status, content_type) is expected


def _fake_cosign(tmp_path, default: str, legacy: str):
    """A cosign that logs its arguments to ``args.log`` and prints ``legacy`` when asked with
    --new-bundle-format=false, else ``default`` (an empty string: exit 1)."""
    tmp_path.mkdir(exist_ok=True)
    log = tmp_path / "args.log"
    script = tmp_path / "cosign"
    script.write_text(f"""#!/bin/sh
echo "$*" >> {log}
case " $* " in *" --new-bundle-format=false "*) out='{legacy}';; *) out='{default}';; esac
[ -n "$out" ] || {{ echo "Error: no signatures found" >&2; exit 10; }}
echo "$out"
""")
    script.chmod(0o755)
    return cosign.Cosign(script), log


SIG = json.dumps([{"critical": {"type": "cosign container image signature"}}])
ATT_AS_SIG = json.dumps([{"critical": {"type": "https://cyclonedx.org/bom"}}])
BUNDLE_SIG = json.dumps([{"critical": {"type": "https://sigstore.dev/cosign/sign/v1"}}])


def test_verify_asks_for_the_legacy_tags_when_the_bundles_hold_no_signature(tmp_path):
    ref = f"{REPO}@sha256:{'a' * 64}"
    tool, log = _fake_cosign(tmp_path, ATT_AS_SIG, SIG)  # cosign 3 passes on an attestation bundle alone
    assert tool.verify(ref, "k.pub") == json.loads(SIG)
    assert len(log.read_text().splitlines()) == 2
    tool, log = _fake_cosign(tmp_path / "b", BUNDLE_SIG, SIG)
    assert tool.verify(ref, "k.pub") == json.loads(BUNDLE_SIG) and len(log.read_text().splitlines()) == 1
    tool, log = _fake_cosign(tmp_path / "c", ATT_AS_SIG, "")
    with pytest.raises(SignError, match="no signature of .*only attestations"):
        tool.verify(ref, "k.pub")
    tool, log = _fake_cosign(tmp_path / "d", "", "")
    with pytest.raises(SignError, match="no signatures found"):
        tool.verify(ref, "k.pub")


def test_sign_and_attest_pass_the_flags_of_the_form(tmp_path, monkeypatch):
    monkeypatch.setenv("COSIGN_PASSWORD", "x")
    ref = f"{REPO}@sha256:{'a' * 64}"
    tool, log = _fake_cosign(tmp_path, "{}", "{}")
    tool = cosign.Cosign(tool.executable, signing_config=tmp_path / "sc.json")
    tool.sign(ref, "/k/cosign.key", cosign.LEGACY)
    tool.sign(ref, "/k/cosign.key", cosign.BUNDLE)
    tool.attest(ref, "/k/cosign.key", tmp_path / "p.json", "cyclonedx", cosign.LEGACY)
    tool.attest(ref, "/k/cosign.key", tmp_path / "p.json", "cyclonedx", cosign.BUNDLE)
    legacy_sign, bundle_sign, legacy_attest, bundle_attest = log.read_text().splitlines()
    assert "--new-bundle-format=false --use-signing-config=false --tlog-upload=false" in legacy_sign
    assert f"--signing-config={tmp_path / 'sc.json'}" in bundle_sign and "false" not in bundle_sign
    assert "--replace" in legacy_attest and "--replace" not in bundle_attest
    assert all(line.endswith(f"-- {ref}") for line in (legacy_sign, bundle_sign, legacy_attest, bundle_attest))


def test_the_signer_asks_the_registry_once_per_repository_which_form(monkeypatch, tmp_path):
    from builder.engine.registry import Registry
    from builder.sign import Signer
    asked: list[str] = []

    def serves(self, repository, digest):
        asked.append(repository)
        return repository.endswith("/new")
    monkeypatch.setattr(Registry, "serves_referrers", serves)
    signer = Signer(cosign.Cosign(tmp_path / "cosign"), "k", "2026-12-07T00:00:00Z")
    old, new = f"127.0.0.1:5000/old@sha256:{'a' * 64}", f"127.0.0.1:5000/new@sha256:{'b' * 64}"
    assert [signer.form(old), signer.form(new), signer.form(old)] == [cosign.LEGACY, cosign.BUNDLE, cosign.LEGACY]
    assert asked == ["127.0.0.1:5000/old", "127.0.0.1:5000/new"]
