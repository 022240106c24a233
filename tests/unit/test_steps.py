"""The run path offline: the tag, promote, push and publish-stage steps for each publish policy
(one manifest, an image index, per-platform tags of a split run), against a fake Engine and a fake of
the one registry client. The same steps run against a real Engine and registry in
tests/integration/test_pipeline.py and test_by_platform.py."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
from repo import ROOT
from rich.console import Console
from rich.progress import Progress

from builder.matrix.platform import PLATFORMS, Platform
from builder.engine.registry import Credentials
from builder.matrix import load
from builder.run import policy, preparation, publish, sbom, taggers
from builder.run.context import Events, Options, RunContext
from builder.run.report import ImageReport, SbomRecord, Status
from builder.run.steps import Built, StepFailed
from builder.run.steps import build as build_step
from builder.run.steps import up_to_date
from builder.run.steps import push as push_step
from builder.run.steps import run_tag, size
from builder.run.steps import tag as tag_step
from builder.run.steps.push import push
from builder.run.steps.build import Build
from builder.run.steps.tag import drop_run_tags, promote, tag_builds
from builder.run.tasks import Lane

AMD64, ARM64 = PLATFORMS["linux/amd64"], PLATFORMS["linux/arm64"]

MINIMAL = "minimal-debian12-py311-cpu-inference"  # linux/amd64 and linux/arm64
GPU = "xgboost-3.2-debian12-py311-cuda12-gpu-inference"  # linux/amd64 only
REGISTRY = "127.0.0.1:5000"
BUILD_ID_LABEL = "io.github.inference-images.build-id"


def _sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


class FakeImage:
    def __init__(self, engine: "FakeEngine", image_id: str, labels: dict | None = None, platform: Platform = AMD64):
        self.engine, self.id, self._labels, self.platform = engine, image_id, labels or {}, platform
        self.attrs = {"Size": 100_000_000, "RepoDigests": []}

    @property
    def tags(self) -> list[str]:
        return sorted(ref for ref, i in self.engine.refs.items() if i == self.id)

    @property
    def labels(self) -> dict:
        return self._labels

    def tag(self, repository: str, tag_: str) -> None:
        self.engine.refs[f"{repository}:{tag_}"] = self.id


class FakeEngine:
    """The docker-py surface the steps use: images by id or reference, tags, the taggers'
    containers, and pushes into a :class:`FakeRegistry`."""

    def __init__(self, registry: "FakeRegistry"):
        self.registry, self.refs, self.images_by_id, self.pulled = registry, {}, {}, []
        self.images, self.api, self.containers = self, self, self

    def add(self, image_id: str, ref: str, labels: dict | None = None, platform: Platform = AMD64) -> None:
        self.images_by_id[image_id] = FakeImage(self, image_id, labels, platform)
        self.refs[ref] = image_id

    def get(self, ref: str) -> FakeImage:
        import docker

        image_id = ref if ref in self.images_by_id else self.refs.get(ref)
        if image_id is None:
            raise docker.errors.ImageNotFound(ref)
        return self.images_by_id[image_id]

    def history(self, ref: str) -> list[dict]:
        return []

    def remove_image(self, ref: str, noprune: bool) -> None:
        del self.refs[ref]

    def run(self, image: str, entrypoint: list[str], remove: bool, network_disabled: bool) -> bytes:
        return b"3.11.2\n" if "python_version" in entrypoint[-1] else b"1.5.1\n"

    def push(self, repository: str, tag: str, stream: bool, decode: bool, auth_config):
        image = self.get(f"{repository}:{tag}")
        # as the classic store: the registry's manifest names the image id as its config
        self.registry.store(repository, tag, {"config": {"digest": image.id}, "layers": [{"size": 40_000_000}]})
        os_, arch = image.platform.os, image.platform.arch
        self.registry.configs[image.id] = {"os": os_, "architecture": arch, "config": {"Labels": image.labels}}
        yield {"status": "Pushed"}

    def pull(self, repository: str, tag: str, platform: str, auth_config) -> FakeImage:
        self.pulled.append(f"{repository}@{tag}")
        image_id = self.registry.manifests[tag]["config"]["digest"]
        config = self.registry.configs[image_id]
        self.images_by_id[image_id] = FakeImage(self, image_id, config["config"]["Labels"], platform)
        return self.images_by_id[image_id]


class FakeRegistry:
    """A fake of :class:`builder.engine.registry.Registry`: manifests by digest, tags naming digests."""

    credentials = Credentials()
    host = REGISTRY

    def __init__(self):
        self.manifests: dict[str, dict] = {}
        self.configs: dict[str, dict] = {}
        self.tags: dict[str, str] = {}
        self.artifacts: list[tuple[str, str]] = []

    def store(self, repository: str, tag_: str, manifest: dict) -> str:
        digest = _sha(json.dumps(manifest, sort_keys=True))
        self.manifests[digest] = manifest
        self.tags[f"{repository}:{tag_}"] = digest
        return digest

    def digest(self, repository: str, reference: str) -> str | None:
        return self.tags.get(f"{repository}:{reference}") or (reference if reference in self.manifests else None)

    def manifest(self, repository: str, reference: str):
        digest = self.digest(repository, reference)
        return (digest, self.manifests[digest]) if digest else None

    def config(self, repository: str, manifest: dict) -> dict:
        return self.configs[manifest["config"]["digest"]]

    def list_tags(self, repository: str) -> list[str]:
        return [ref.rsplit(":", 1)[1] for ref in self.tags if ref.rsplit(":", 1)[0] == repository]

    @staticmethod
    def index_entries(doc: dict) -> dict | None:
        return dict(doc["manifests"]) if "manifests" in doc else None

    def index(self, repository: str, tag_: str):
        digest = self.digest(repository, tag_)
        manifest = self.manifests.get(digest, {})
        return (digest, dict(manifest["manifests"])) if "manifests" in manifest else None

    def push_artifact(self, repository, tag_, path, media_type, subject_digest) -> str:
        self.artifacts.append((tag_, subject_digest))
        return self.store(repository, tag_, {"subject": subject_digest, "content": json.loads(Path(path).read_text())})

    def artifact_json(self, repository, tag_, max_bytes, what):
        found = self.manifest(repository, tag_)
        return (found[0], found[1]["content"]) if found else None


@pytest.fixture
def fakes(monkeypatch):
    registry = FakeRegistry()
    engine = FakeEngine(registry)

    def make_index(repository: str, tag_: str, digests: list[str]) -> None:  # imagetools create
        platforms = {(AMD64, ARM64)[i].name: d for i, d in enumerate(digests)}
        registry.store(repository, tag_, {"manifests": sorted(platforms.items())})
    monkeypatch.setattr(publish, "make_index", make_index)
    monkeypatch.setattr(up_to_date, "answers", lambda host: True)  # the fake registry always answers
    for step in (tag_step, push_step):  # docker image save of a fake image: its layers' uncompressed size
        monkeypatch.setattr(step, "uncompressed_bytes", lambda client, ref: 100_000_000)
    return engine, registry


def _context(engine, registry, tmp_path: Path, **options) -> tuple[RunContext, dict]:
    matrix = load(ROOT / "matrix.yaml")
    specs = {s.name: s for s in matrix.images()}
    opt = Options(build_dir=tmp_path, **options)
    reports: dict[str, ImageReport] = {}

    class Clients:
        def get(self):
            return engine
    events = Events(Console(file=open("/dev/null", "w")), Progress(disable=True), 1)
    return RunContext(matrix=matrix, options=opt, registry=REGISTRY, registry_client=registry, run_id="r1",
                      build_platform=AMD64, specs=specs, reports=reports, events=events,
                      clients=Clients(), vcs=preparation.vcs_sources(matrix, opt, list(specs.values()))), reports


def _up_to_date(ctx: RunContext, spec, rep: ImageReport):
    # The up-to-date check, its value recorded on ``rep`` as builder.run.tasks.prepare does.
    served = up_to_date.up_to_date(ctx, spec, rep)
    if served is not None:
        served.record(rep)
    return served


def _sbom_doc(ctx: RunContext, image_id: str, framework: str | None, python: str | None) -> dict:
    # A CycloneDX SBOM of the image ``image_id`` recording the versions its taggers read, as make_sbom writes it.
    properties = sbom.version_properties(ctx.matrix.data.project.label_prefix, framework, python)
    return {"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
            "metadata": {"component": {"type": "container", "bom-ref": image_id, "name": "x",
                                       "properties": [{"name": k, "value": v} for k, v in properties.items()]}},
            "components": [{"type": "library", "name": "numpy", "version": "2.0.0"}]}


def _push(ctx: RunContext, spec, rep: ImageReport):
    # The push step, its value recorded on ``rep`` as builder.run.tasks.finish does.
    pushed = push(ctx, spec, rep)
    pushed.record(rep)
    return pushed


def _record(rep: ImageReport, platform: Platform, image_id: str) -> None:
    # What the scheduler's thread records of a lane that built ``image_id`` (run tag r1, 100 MB).
    Lane(platform, Build(platform, run_tag("r1", platform), image_id=image_id), uncompressed=100_000_000).record(rep)


def _built(ctx: RunContext, reports: dict, engine: FakeEngine, name: str, platforms: tuple[Platform, ...],
           tmp_path: Path, build_id: str | None = None) -> ImageReport:
    """Builds of ``name`` for ``platforms`` (each labelled with :func:`_bid` of ``build_id``), named,
    tested (with an SBOM) and promoted."""
    spec = ctx.specs[name]
    choice = policy.choose(platforms, spec.platforms, ctx.options.by_platform)
    rep = reports[name] = ImageReport(name=name, publish=choice, repository=f"{REGISTRY}/{name}")
    builts = {}
    for p in platforms:
        image_id = _sha(name + p.name + (build_id or ""))
        rep.build(p).build_id = _bid(build_id, p) if build_id else None
        labels = {BUILD_ID_LABEL: _bid(build_id, p)} if build_id else {}
        engine.add(image_id, f"{rep.repository}:{run_tag('r1', p)}", labels, p)
        _record(rep, p, image_id)
        rep.build(p).build_log = str(tmp_path / f"{p.name.replace('/', '-')}.build.log")
        builts[p] = Built(image_id, run_tag("r1", p))
    tag_builds(ctx, spec, rep, builts).record(rep)
    rep.move(Status.BUILT)
    for b in rep.platforms:
        path = tmp_path / f"{b.platform.name.replace('/', '-')}.cdx.json"
        path.write_text(json.dumps(_sbom_doc(ctx, b.image_id, b.framework_version, b.python_version)))
        b.sbom = SbomRecord(path=str(path), components=1)
    rep.tags = promote(ctx, spec, rep)
    rep.move(Status.TESTED)
    return rep


def test_an_image_of_two_platforms_is_one_index_of_its_builds(fakes, tmp_path):
    engine, registry = fakes
    ctx, reports = _context(engine, registry, tmp_path)
    rep = _built(ctx, reports, engine, MINIMAL, (AMD64, ARM64), tmp_path)
    ids = [_sha(MINIMAL + p.name) for p in (AMD64, ARM64)]
    index_tag = taggers.index_tag(ctx.matrix.data.tags, "1.5.1", "3.11.2", ids)
    assert rep.publish == "index" and rep.tags == [index_tag, "latest"]
    assert [b.tag for b in rep.platforms] == [f"{index_tag}-amd64", f"{index_tag}-arm64"]
    assert engine.refs[f"{rep.repository}:latest"] == ids[0] and engine.refs[f"{rep.repository}:latest-arm64"] == ids[1]
    assert f"{rep.repository}:build-r1-arm64" in engine.refs  # a child's arm64 build may still name it
    drop_run_tags(ctx)
    assert not any(":build-" in ref for ref in engine.refs)  # the run's tags are gone once it ends
    assert [b.tag for b in rep.platforms] == [f"{index_tag}-amd64", f"{index_tag}-arm64"]

    assert _push(ctx, ctx.specs[MINIMAL], rep).digest == rep.digest and rep.status == Status.PUBLISHED
    listed = registry.index(rep.repository, "latest")
    assert listed == (rep.digest, {b.platform.name: b.digest for b in rep.platforms})
    assert registry.digest(rep.repository, index_tag) == rep.digest
    assert f"{rep.repository}:latest-arm64" not in registry.tags  # per-platform moving tags stay local
    assert sorted(s for _, s in registry.artifacts) == sorted(b.digest for b in rep.platforms)  # an SBOM each
    assert all(b.sbom.digest for b in rep.platforms)


def test_an_image_of_one_platform_is_its_build_s_manifest(fakes, tmp_path):
    engine, registry = fakes
    ctx, reports = _context(engine, registry, tmp_path)
    rep = _built(ctx, reports, engine, GPU, (AMD64,), tmp_path)
    immutable = taggers.immutable_tag(ctx.matrix.data.tags, "1.5.1", "3.11.2", _sha(GPU + AMD64.name))
    assert rep.publish == "manifest" and rep.tags == [immutable, "latest"] and rep.platforms[0].tag == immutable
    _push(ctx, ctx.specs[GPU], rep)
    assert rep.digest == rep.platforms[0].digest == registry.digest(rep.repository, "latest")
    assert registry.digest(rep.repository, immutable) == rep.digest and registry.index(rep.repository, "latest") is None


def test_a_job_of_a_split_run_pushes_its_build_under_per_platform_tags_only(fakes, tmp_path):
    engine, registry = fakes
    ctx, reports = _context(engine, registry, tmp_path, by_platform=True, platforms=(ARM64,))
    rep = _built(ctx, reports, engine, MINIMAL, (ARM64,), tmp_path)
    own = taggers.immutable_tag(ctx.matrix.data.tags, "1.5.1", "3.11.2", _sha(MINIMAL + ARM64.name)) + "-arm64"
    assert rep.publish == "per-platform" and rep.tags == [own, "latest-arm64"]
    assert (rep.platforms[0].framework_version, rep.platforms[0].python_version) == ("1.5.1", "3.11.2")
    assert _push(ctx, ctx.specs[MINIMAL], rep).digest is None
    assert registry.digest(rep.repository, own) == registry.digest(rep.repository, "latest-arm64") == rep.platforms[0].digest
    assert registry.digest(rep.repository, "latest") is None


def test_pushing_again_changes_nothing(fakes, tmp_path):
    engine, registry = fakes
    ctx, reports = _context(engine, registry, tmp_path)
    rep = _built(ctx, reports, engine, MINIMAL, (AMD64, ARM64), tmp_path)
    _push(ctx, ctx.specs[MINIMAL], rep)
    again = rep.model_copy(update={"status": Status.TESTED}, deep=True)
    _push(ctx, ctx.specs[MINIMAL], again)
    assert again.status == Status.UNCHANGED and again.digest == rep.digest


def test_publish_finds_the_tested_builds_by_the_tags_the_test_run_gave_them(fakes, tmp_path, monkeypatch):
    engine, registry = fakes
    ctx, reports = _context(engine, registry, tmp_path)
    tested = _built(ctx, reports, engine, MINIMAL, (AMD64, ARM64), tmp_path)
    monkeypatch.setattr("builder.run.sbom.made_for", lambda path, image_id: {"path": str(path), "components": 3})
    later = ImageReport(name=MINIMAL, publish="index", repository=tested.repository)
    found = push_step.tested_image(ctx, ctx.specs[MINIMAL], later)
    assert list(found.tags) == tested.tags and later.status == Status.PLANNED  # a value: later is not written
    found.record(later)
    assert [(b.platform, b.tag, b.image_id) for b in later.platforms] == \
        [(b.platform, b.tag, b.image_id) for b in tested.platforms]
    assert later.status == Status.TESTED and all(b.sbom.components == 3 for b in later.platforms)


def test_a_registry_that_serves_another_manifest_fails_the_push(fakes, tmp_path, monkeypatch):
    engine, registry = fakes
    ctx, reports = _context(engine, registry, tmp_path)
    rep = _built(ctx, reports, engine, GPU, (AMD64,), tmp_path)
    stored = registry.store  # the registry ends up serving another image's manifest under the tags
    monkeypatch.setattr(registry, "store", lambda repository, tag_, manifest: stored(
        repository, tag_, {**manifest, "config": {"digest": _sha("someone else's")}}))
    with pytest.raises(publish.PublishError, match="do not all name the local image"):
        _push(ctx, ctx.specs[GPU], rep)


@pytest.mark.parametrize("platforms, of_matrix, by_platform, chosen", [
    ((AMD64,), (AMD64,), False, "manifest"),
    ((AMD64, ARM64), (AMD64, ARM64), False, "index"),
    ((ARM64,), (AMD64, ARM64), True, "per-platform"),
    ((AMD64, ARM64), (AMD64, ARM64), True, "per-platform"),
    ((AMD64,), (AMD64,), True, "manifest"),  # one platform: published whole, with latest
])
def test_the_publish_policy_is_chosen_from_the_platforms_and_the_run(platforms, of_matrix, by_platform, chosen):
    assert policy.choose(platforms, of_matrix, by_platform) == chosen


@pytest.mark.parametrize("containerd_store, output", [
    (True, "type=oci,dest=-,name={ref},rewrite-timestamp=true"),
    (False, "type=image,name={ref}"),
])
def test_a_build_is_exported_as_the_image_store_can_keep_it(fakes, tmp_path, containerd_store, output):
    # containerd store: an OCI archive with rewritten timestamps on buildx's standard output, streamed
    # into the Engine (no archive on disk); classic store:
    # BuildKit's docker driver has no OCI exporter there, so the Engine's image exporter.
    ctx, _ = _context(*fakes, tmp_path)
    bases = {(MINIMAL, p): f"builder-base/debian12:{p.arch}" for p in (AMD64, ARM64)}
    ctx = dataclasses.replace(ctx, base_refs=bases, wheelhouse="wheelhouse:1", containerd_store=containerd_store)
    ref = f"{REGISTRY}/{MINIMAL}:build-r1-arm64"
    target = build_step._target(ctx, ctx.specs[MINIMAL], ARM64, 1700000000, ref)
    assert target["output"] == [output.format(ref=ref)]
    assert target["args"]["SOURCE_DATE_EPOCH"] == "1700000000"
    assert target["args"]["BASE_IMAGE"] == "builder-base/debian12:arm64"
    assert target["args"]["BUILD_BASE_IMAGE"] == "builder-base/debian12:amd64"
    assert target["platforms"] == ["linux/arm64"] and "contexts" not in target


def test_a_reference_that_breaks_the_output_csv_is_refused(fakes, tmp_path):
    ctx, _ = _context(*fakes, tmp_path)
    ctx = dataclasses.replace(ctx, base_refs={(MINIMAL, AMD64): "b:1"}, wheelhouse="w:1")
    with pytest.raises(StepFailed, match="output specification"):
        build_step._target(ctx, ctx.specs[MINIMAL], AMD64, 1, "r:t,dest=/etc/passwd")


class FakeSigner:
    """A :class:`builder.sign.Signer` that writes what it is asked into ``log`` (shared with
    the registry's tag writes); ``fail`` makes every signature fail as a bad key password does."""

    def __init__(self, log: list, fail: bool = False):
        self.log, self.fail, self.key, self.cosign = log, fail, "cosign.key", self

    def signed(self, ref: str) -> bool:
        return False

    def sign(self, ref: str, force: bool = False) -> None:
        if self.fail:
            from builder.sign import SignError
            raise SignError("cosign sign: decrypt: encrypted: decryption failed")
        self.log.append(("sign", ref.rsplit("@", 1)[1]))

    def attest(self, ref: str, predicate: Path, predicate_type: str) -> None:
        self.log.append(("attest", ref.rsplit("@", 1)[1], predicate_type, json.loads(predicate.read_text())))


def _signing(fakes, tmp_path, monkeypatch, fail: bool = False):
    engine, registry = fakes
    log: list = []
    stored = registry.store

    def store(repository, tag_, manifest):
        digest = stored(repository, tag_, manifest)
        log.append(("tag", tag_, digest))
        return digest
    monkeypatch.setattr(registry, "store", store)
    monkeypatch.setattr("builder.run.steps.sign._predicates",
                        lambda ctx, spec, rep, b: {k: {"of": b.platform.name} for k in ("https://cyclonedx.org/bom",
                                                                                 "https://slsa.dev/provenance/v1")})
    ctx, reports = _context(engine, registry, tmp_path)
    return dataclasses.replace(ctx, signer=FakeSigner(log, fail)), reports, log


def test_every_build_and_the_index_are_attested_and_signed_before_latest_moves(fakes, tmp_path, monkeypatch):
    ctx, reports, log = _signing(fakes, tmp_path, monkeypatch)
    rep = _built(ctx, reports, fakes[0], MINIMAL, (AMD64, ARM64), tmp_path)
    _push(ctx, ctx.specs[MINIMAL], rep)
    assert rep.signature == "signed" and rep.status == Status.PUBLISHED
    signed = [e[1] for e in log if e[0] == "sign"]
    assert signed == [*(b.digest for b in rep.platforms), rep.digest]  # each build, then the index
    latest = next(i for i, e in enumerate(log) if e[:2] == ("tag", "latest"))
    assert all(i < latest for i, e in enumerate(log) if e[0] in ("sign", "attest"))
    for b in rep.platforms:  # attestations first, the signature last: a signature means a whole set
        mine = [i for i, e in enumerate(log) if e[0] in ("sign", "attest") and e[1] == b.digest]
        assert log[mine[-1]][0] == "sign" and len(mine) == 3
        assert {e[3]["of"] for e in log if e[0] == "attest" and e[1] == b.digest} == {b.platform.name}


def test_a_failed_signature_leaves_latest_unpushed(fakes, tmp_path, monkeypatch):
    ctx, reports, log = _signing(fakes, tmp_path, monkeypatch, fail=True)
    rep = _built(ctx, reports, fakes[0], GPU, (AMD64,), tmp_path)
    with pytest.raises(StepFailed, match="decryption failed"):
        _push(ctx, ctx.specs[GPU], rep)
    registry = fakes[1]
    assert registry.digest(rep.repository, rep.tags[0]) is not None  # the immutable tag, by digest
    assert registry.digest(rep.repository, "latest") is None


def test_publish_attests_what_the_test_run_recorded_for_this_very_build(fakes, tmp_path):
    # `builder publish` gathers the smoke test, the base and the build arguments of the tested build
    # from the test run's report, then the real predicates (locks, test folders, JUnit XML).
    from builder.run import report
    from builder.run.report import TestRecord
    from builder.run.steps import sign as sign_step

    ctx, _ = _context(*fakes, tmp_path, images_dir=ROOT / "images", tests_root=ROOT / "tests" / "by_image")
    signer = FakeSigner([])
    signer.tools, signer.started = {"docker-engine": "26.1.5"}, "2026-12-02T10:00:00Z"
    ctx = dataclasses.replace(ctx, signer=signer)
    rep = ImageReport(name=MINIMAL, repository=f"{REGISTRY}/{MINIMAL}")
    b = rep.build(AMD64)
    b.image_id = _sha("the tested build")
    (tmp_path / "m.cdx.json").write_text('{"components": []}')
    b.sbom = SbomRecord(path=str(tmp_path / "m.cdx.json"), components=0)
    with pytest.raises(StepFailed, match="records no passed smoke test"):
        sign_step._predicates(ctx, ctx.specs[MINIMAL], rep, b)
    tested, other = rep.model_copy(deep=True), rep.model_copy(deep=True)
    for entry, image_id in ((tested, b.image_id), (other, _sha("another build"))):
        e = entry.build(AMD64)
        e.image_id, e.base, e.base_digest = image_id, "builder-base/debian12:amd64", _sha("base")
        e.test = TestRecord(outcome="3 passed in 1.0s", seconds=1.0, log="t.log")
        e.build_args = {"BASE_IMAGE": "builder-base/debian12:amd64", "SOURCE_DATE_EPOCH": "17"}
    report.write(tmp_path / "report.json", "test", [other])
    assert sign_step.earlier_build(ctx, MINIMAL, AMD64, b.image_id) is None  # another build's record
    report.write(tmp_path / "report.json", "test", [tested])
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / f"{MINIMAL}.junit.xml").write_text('<testsuite><testcase classname="c" name="t"/></testsuite>')
    b = sign_step.earlier_build(ctx, MINIMAL, AMD64, b.image_id).model_copy(update={"sbom": b.sbom})
    found = sign_step._predicates(ctx, ctx.specs[MINIMAL], rep, b)
    deps = found["https://slsa.dev/provenance/v1"]["buildDefinition"]["resolvedDependencies"]
    assert {"uri": "builder-base/debian12:amd64", "name": "base", "digest": {"sha256": _sha("base")[7:]}} in deps
    result = found["https://in-toto.io/attestation/test-result/v0.1"]
    assert result["result"] == "PASSED" and result["passedTests"] == ["c::t"]
    assert b.test.outcome == "3 passed in 1.0s"  # builder publish records it (push.tested_image)


def test_the_build_context_is_dated_after_source_date_epoch_by_content_whatever_its_checkout_time(tmp_path):
    # rewrite-timestamp clamps only newer times: an older checkout's time would reach the image. And
    # BuildKit sends a file again only when its size or time changed: same-length edits need new times.
    import os

    epoch = 1_700_000_000
    context = tmp_path / "images" / MINIMAL
    (context / "sub").mkdir(parents=True)
    for name in ("Dockerfile", "serve", "sub/f"):
        (context / name).write_text(name)
        os.utime(context / name, (1_000, 1_000))  # older than the epoch
    build_step.date_context(context, epoch)
    files = {p.name: p.stat().st_mtime for p in context.rglob("*") if p.is_file()}
    assert all(epoch < t <= epoch + 86400 for t in files.values()) and len(set(files.values())) == 3
    assert context.stat().st_mtime == (context / "sub").stat().st_mtime == epoch
    (context / "serve").write_text("serwe")  # the same length, another content
    build_step.date_context(context, epoch)
    assert (context / "serve").stat().st_mtime != files["serve"] and (context / "Dockerfile").stat().st_mtime == files["Dockerfile"]


def test_an_arm64_job_of_a_split_run_builds_its_build_stage_on_the_build_platform(fakes, tmp_path):
    # `--by-platform --platform linux/arm64` narrows the spec to arm64; its build stage still runs on
    # linux/amd64, whose apt lock the matrix cell has (the check reads the matrix, not the narrowed spec).
    ctx, _ = _context(*fakes, tmp_path, by_platform=True, platforms=(ARM64,))
    narrowed = dataclasses.replace(ctx.specs[MINIMAL], platforms=(ARM64,))
    bases = {(MINIMAL, p): f"builder-base/debian12:{p.arch}" for p in (AMD64, ARM64)}
    ctx = dataclasses.replace(ctx, base_refs=bases, wheelhouse="w:1", specs={**ctx.specs, MINIMAL: narrowed})
    args = build_step.build_args(ctx, narrowed, ARM64)
    assert args["BUILD_BASE_IMAGE"] == "builder-base/debian12:amd64" and args["BASE_IMAGE"] == "builder-base/debian12:arm64"


# Up to date (issue 22): the registry's latest names this build id, tested; nothing is built again.

ID1, ID2 = _sha("inputs one"), _sha("inputs two")


def _bid(inputs: str, platform: Platform) -> str:
    """The fake build id of one platform's build of ``inputs``."""
    return _sha(inputs + platform.name)


def _published(fakes, tmp_path, name: str, platforms: tuple[Platform, ...], **options):
    # ``name`` built with build id ID1 and pushed; then a new run's context (classic store: the
    # fake registry names each image id as its configuration) and a fresh report of the image.
    engine, registry = fakes
    ctx, reports = _context(engine, registry, tmp_path)
    ctx = dataclasses.replace(ctx, containerd_store=False)
    first = _built(ctx, reports, engine, name, platforms, tmp_path, build_id=ID1)
    _push(ctx, ctx.specs[name], first)
    again, reports = _context(engine, registry, tmp_path, **options)
    again = dataclasses.replace(again, containerd_store=False)
    choice = policy.choose(platforms, ctx.specs[name].platforms, again.options.by_platform)
    rep = reports[name] = ImageReport(name=name, publish=choice, repository=first.repository)
    for p in platforms:
        rep.build(p).build_id = _bid(ID1, p)
    return again, first, rep


@pytest.mark.parametrize("name, platforms", [(MINIMAL, (AMD64, ARM64)), (GPU, (AMD64,))])
def test_an_image_whose_build_id_the_registry_publishes_is_up_to_date(fakes, tmp_path, name, platforms):
    ctx, first, rep = _published(fakes, tmp_path, name, platforms)
    pushed = dict(fakes[1].tags)
    assert _up_to_date(ctx, ctx.specs[name], rep)
    assert rep.status == Status.UP_TO_DATE and rep.tags == first.tags and rep.digest == first.digest
    assert [(b.platform, b.digest, b.tag, b.image_id) for b in rep.platforms] == \
        [(b.platform, b.digest, b.tag, b.image_id) for b in first.platforms]
    assert all(b.compressed_bytes == 40_000_000 for b in rep.platforms)
    assert [(b.framework_version, b.python_version, b.sbom.components) for b in rep.platforms] == \
        [(b.framework_version, b.python_version, 1) for b in first.platforms]  # from the SBOM in the registry
    assert fakes[1].tags == pushed and not fakes[0].pulled  # nothing pushed, nothing pulled


def test_another_build_id_or_force_builds_again(fakes, tmp_path):
    ctx, _, rep = _published(fakes, tmp_path, MINIMAL, (AMD64, ARM64))
    other = rep.model_copy(deep=True)
    other.build(ARM64).build_id = _bid(ID2, ARM64)  # one platform's inputs changed
    assert not up_to_date.up_to_date(ctx, ctx.specs[MINIMAL], other)
    for option in ({"force": True}, {"no_cache": True}, {"keyless": True}):
        ctx, _, rep = _published(fakes, tmp_path, MINIMAL, (AMD64, ARM64), **option)
        assert up_to_date.may_skip(ctx, ctx.specs[MINIMAL], rep) is not None
        assert not up_to_date.up_to_date(ctx, ctx.specs[MINIMAL], rep) and rep.status == Status.PLANNED


def test_a_narrowed_run_and_a_build_without_registry_are_never_up_to_date(fakes, tmp_path):
    ctx, _, rep = _published(fakes, tmp_path, MINIMAL, (AMD64, ARM64))
    narrowed = dataclasses.replace(ctx.specs[MINIMAL], platforms=(AMD64,))
    assert "only some" in up_to_date.may_skip(ctx, narrowed, rep)
    assert up_to_date.may_skip(ctx, narrowed, rep.model_copy(update={"publish": "per-platform"})) is None  # latest-<arch>
    test_ctx = dataclasses.replace(ctx, options=dataclasses.replace(ctx.options, stage="test"))
    assert "--registry" in up_to_date.may_skip(test_ctx, ctx.specs[MINIMAL], rep)
    with_registry = dataclasses.replace(test_ctx.options, registry=REGISTRY)
    assert up_to_date.may_skip(dataclasses.replace(ctx, options=with_registry), ctx.specs[MINIMAL], rep) is None


def test_a_run_that_signs_wants_the_published_image_signed_by_its_key(fakes, tmp_path):
    ctx, first, rep = _published(fakes, tmp_path, MINIMAL, (AMD64, ARM64))
    checked: list[str] = []

    class Signer(FakeSigner):
        def signed(self, ref: str) -> bool:
            checked.append(ref.rsplit("@", 1)[1])
            return ref.endswith(first.platforms[0].digest) or ref.endswith(first.digest)
    unsigned = dataclasses.replace(ctx, signer=Signer([]))
    assert not up_to_date.up_to_date(unsigned, ctx.specs[MINIMAL], rep)  # the arm64 build lacks a signature
    assert first.platforms[1].digest in checked

    class All(FakeSigner):
        public_key, result = "signing-key.pub", "PASSED"

        def signed(self, ref: str) -> bool:
            return True

        def attestations(self, ref: str, public_key: str, predicate_type: str) -> list[dict]:
            # The signed test-result statement about ``ref``'s digest, as builder.sign.predicates makes it.
            tested = {"name": "tested-image", "annotations": {"outcome": "3 passed in 1.0s", "seconds": 1.5}}
            return [{"predicateType": predicate_type, "subject": [{"digest": {"sha256": ref.rsplit(":", 1)[1]}}],
                     "predicate": {"result": self.result, "configuration": [tested]}}]
    failed = All([])
    failed.result = "FAILED"
    assert not up_to_date.up_to_date(dataclasses.replace(ctx, signer=failed), ctx.specs[MINIMAL], rep)
    assert _up_to_date(dataclasses.replace(ctx, signer=All([])), ctx.specs[MINIMAL], rep)
    assert rep.signature == "signed" and all(b.attestations for b in rep.platforms)
    assert [(b.test.outcome, b.test.seconds) for b in rep.platforms] == [("3 passed in 1.0s", 1.5)] * 2
    assert all("signed test-result attestation" in b.test.log for b in rep.platforms)  # where it was read


def test_a_latest_that_is_not_the_image_s_platforms_is_not_up_to_date(fakes, tmp_path):
    ctx, first, rep = _published(fakes, tmp_path, MINIMAL, (AMD64, ARM64))
    registry = fakes[1]
    registry.store(first.repository, "latest", {"manifests": [(AMD64.name, first.platforms[0].digest)]})
    assert not up_to_date.up_to_date(ctx, ctx.specs[MINIMAL], rep)
    registry.store(first.repository, "latest", {"manifests": [(AMD64.name, first.platforms[1].digest),
                                                              (ARM64.name, first.platforms[1].digest)]})
    assert not up_to_date.up_to_date(ctx, ctx.specs[MINIMAL], rep)  # the amd64 entry's config says arm64


def test_an_up_to_date_parent_is_pulled_by_digest_for_a_child_that_builds(fakes, tmp_path):
    ctx, first, rep = _published(fakes, tmp_path, MINIMAL, (AMD64, ARM64))
    engine = fakes[0]
    engine.refs.clear()
    engine.images_by_id.clear()  # a fresh runner
    assert _up_to_date(ctx, ctx.specs[MINIMAL], rep)
    child = next(s for s in ctx.specs.values() if s.parent == MINIMAL and len(s.platforms) == 2)
    up_to_date.parent_images(ctx, child)
    assert sorted(engine.pulled) == sorted(f"{rep.repository}@{b.digest}" for b in first.platforms)
    for b in first.platforms:
        assert engine.refs[f"{rep.repository}:{b.tag}"] == b.image_id
    assert f"{rep.repository}:latest" not in engine.refs
    up_to_date.make_local(ctx, rep, [AMD64], moving=True)  # builder test: the local latest too
    assert engine.refs[f"{rep.repository}:latest"] == first.platforms[0].image_id
    assert len(engine.pulled) == 2  # already local: not pulled again


# The size gate (issue 22): more than 10 % over the catalog's size fails; --accept-size passes.

def test_an_image_that_grew_past_ten_percent_fails_the_size_gate_naming_the_layers(fakes, tmp_path):
    engine, registry = fakes
    ctx, reports = _context(engine, registry, tmp_path)
    rep = _built(ctx, reports, engine, GPU, (AMD64,), tmp_path)  # 100 MB uncompressed (fake)
    history = {f"{rep.repository}:{rep.platforms[0].tag}": [{"CreatedBy": "RUN pip install", "Size": 60_000_000},
                                                            {"CreatedBy": "COPY app", "Size": 1_000}],
               f"{rep.repository}:latest": [{"CreatedBy": "RUN pip install", "Size": 20_000_000}]}
    engine.history = lambda ref: history.get(ref, [])
    size.gate(ctx, rep, {(GPU, AMD64): (91_000_000, None)})  # +9.9 %: passes
    size.gate(ctx, rep, {(MINIMAL, AMD64): (1, None)})  # no row of its own: passes
    with pytest.raises(size.SizeGateFailed) as failed:
        size.gate(ctx, rep, {(GPU, AMD64): (80_000_000, None)})
    assert "linux/amd64: uncompressed 80 MB -> 100 MB (+25 %)" in str(failed.value)
    assert "grew most: +40 MB RUN pip install, +0 MB COPY app" in str(failed.value)
    accepting = dataclasses.replace(ctx, options=dataclasses.replace(ctx.options, accept_size=True))
    size.gate(accepting, rep, {(GPU, AMD64): (80_000_000, None)})


def test_pushed_bytes_past_ten_percent_leave_latest_where_it_was(fakes, tmp_path):
    engine, registry = fakes
    ctx, reports = _context(engine, registry, tmp_path)
    ctx = dataclasses.replace(ctx, size_baseline={(GPU, AMD64): (None, 30_000_000)})  # pushed: 40 MB
    rep = _built(ctx, reports, engine, GPU, (AMD64,), tmp_path)
    with pytest.raises(size.SizeGateFailed, match=r"compressed 30 MB -> 40 MB \(\+33 %\)"):
        _push(ctx, ctx.specs[GPU], rep)
    assert registry.digest(rep.repository, rep.tags[0]) is not None and registry.digest(rep.repository, "latest") is None
    rep.move(Status.SIZE_GATE, "grew")
    assert rep.failed


def test_layer_growth_without_an_earlier_image_names_the_largest_layers():
    new = [{"CreatedBy": "/bin/sh -c   apt-get   install", "Size": 5_000_000}, {"CreatedBy": "RUN x", "Size": 9_000_000},
           {"CreatedBy": "ENV A=1", "Size": 0}, {"CreatedBy": "", "Size": 1_000_000}]
    assert size.layer_growth(new, []) == ["+9 MB RUN x", "+5 MB /bin/sh -c apt-get install",
                                          "+1 MB (a layer without a command: the base image)"]
    assert size.layer_growth([{"CreatedBy": "RUN \x1b[31mred", "Size": 2_000_000}], []) == ["+2 MB RUN \\x1b[31mred"]


def test_dry_run_says_why_an_image_is_built_or_may_be_up_to_date(tmp_path):
    from builder.run import pipeline

    matrix = load(ROOT / "matrix.yaml")
    said: list[str] = []
    for options, expected in (({}, "up-to-date, and not built, when 127.0.0.1:5000's moving tags"),
                              ({"force": True}, "built whatever the registry holds: --force"),
                              ({"stage": "test"}, "no --registry to look in"),
                              ({"stage": "test", "registry": REGISTRY, "platforms": (AMD64,)},
                               "only some of its platforms"),
                              ({"by_platform": True, "platforms": (ARM64,)}, "up-to-date, and not built")):
        console = Console(file=open(tmp_path / "out.txt", "w"), width=300)
        pipeline.run(matrix, Options(dry_run=True, select=(MINIMAL,), build_dir=tmp_path, **options), console)
        console.file.close()
        said.append((tmp_path / "out.txt").read_text())
        assert expected in said[-1], said[-1]


def test_an_index_builder_merge_made_of_split_jobs_is_up_to_date_under_the_jobs_build_tags(fakes, tmp_path):
    engine, registry = fakes
    jobs = {}
    for platform in (AMD64, ARM64):  # each job of the split run, then the merge
        ctx, reports = _context(engine, registry, tmp_path, by_platform=True, platforms=(platform,))
        ctx = dataclasses.replace(ctx, containerd_store=False)
        jobs[platform] = _built(ctx, reports, engine, MINIMAL, (platform,), tmp_path, build_id=ID1)
        _push(ctx, ctx.specs[MINIMAL], jobs[platform])
        again, _ = _context(engine, registry, tmp_path, by_platform=True, platforms=(platform,))  # the job again
        rep = ImageReport(name=MINIMAL, publish="per-platform", repository=jobs[platform].repository)
        rep.build(platform).build_id = _bid(ID1, platform)
        job = dataclasses.replace(again.specs[MINIMAL], platforms=(platform,))  # as preparation narrows it
        assert _up_to_date(dataclasses.replace(again, containerd_store=False), job, rep)
        assert rep.tags == jobs[platform].tags and rep.platforms[0].digest == jobs[platform].platforms[0].digest
        assert (rep.platforms[0].framework_version, rep.platforms[0].python_version) == ("1.5.1", "3.11.2")
    builds = [jobs[p].platforms[0] for p in (AMD64, ARM64)]
    immutable = taggers.index_tag(ctx.matrix.data.tags, "1.5.1", "3.11.2", [b.image_id for b in builds])
    publish.push_index(registry, jobs[AMD64].repository, [immutable, "latest"], {b.platform.name: b.digest for b in builds})
    ctx, reports = _context(engine, registry, tmp_path)  # a full run of both platforms, nothing changed
    ctx = dataclasses.replace(ctx, containerd_store=False)
    rep = reports[MINIMAL] = ImageReport(name=MINIMAL, publish="index", repository=jobs[AMD64].repository)
    for p in (AMD64, ARM64):
        rep.build(p).build_id = _bid(ID1, p)
    assert _up_to_date(ctx, ctx.specs[MINIMAL], rep)
    assert rep.tags == [immutable, "latest"] and [b.tag for b in rep.platforms] == [b.tag for b in builds]


def test_a_child_records_its_parent_by_the_parent_s_own_tags_not_the_run_s(fakes, tmp_path):
    # The child built FROM the parent's run tags (before the parent had its own); once the parent is
    # tagged, the child's base and arguments (its provenance) name the parent's own tags.
    engine, registry = fakes
    ctx, reports = _context(engine, registry, tmp_path)
    parent = _built(ctx, reports, engine, MINIMAL, (AMD64, ARM64), tmp_path)
    child_name = next(s.name for s in ctx.matrix.children(MINIMAL))
    child = reports[child_name] = ImageReport(name=child_name, publish="index", repository=f"{REGISTRY}/{child_name}")
    run_ref = f"{parent.repository}:{run_tag('r1', ARM64)}"
    b = child.build(ARM64)
    b.base = run_ref
    b.build_args = {"PARENT_IMAGE": run_ref, "BUILD_PARENT_IMAGE": f"{parent.repository}:{run_tag('r1', AMD64)}",
                    "WHEELHOUSE_IMAGE": "wheels:1"}
    tag_step.rebase(ctx, ctx.specs[child_name]).record(child)
    own = {p.platform: f"{parent.repository}:{p.tag}" for p in parent.platforms}
    assert b.base == own[ARM64] and not own[ARM64].endswith(run_tag("r1", ARM64))
    assert b.build_args == {"PARENT_IMAGE": own[ARM64], "BUILD_PARENT_IMAGE": own[AMD64],
                            "WHEELHOUSE_IMAGE": "wheels:1"}


def test_a_failed_image_built_on_every_platform_keeps_its_own_tags_and_no_latest(fakes, tmp_path):
    engine, registry = fakes
    ctx, reports = _context(engine, registry, tmp_path)
    rep = reports[MINIMAL] = ImageReport(name=MINIMAL, publish="index", repository=f"{REGISTRY}/{MINIMAL}")
    for p in (AMD64, ARM64):
        engine.add(_sha(p.name), f"{rep.repository}:{run_tag('r1', p)}", {}, p)
        _record(rep, p, _sha(p.name))
        rep.build(p).build_log = str(tmp_path / "log")
    rep.move(Status.TEST_FAILED, "linux/arm64: 1 failed")
    half = reports[GPU] = ImageReport(name=GPU, publish="manifest", repository=f"{REGISTRY}/{GPU}")
    half.build(AMD64).build_log = str(tmp_path / "log")  # its build failed: no image
    half.move(Status.BUILD_FAILED, "apt")
    drop_run_tags(ctx)
    assert all(b.tag and b.tag.endswith(("-amd64", "-arm64")) for b in rep.platforms) and rep.tags
    assert sorted(engine.refs) == sorted(f"{rep.repository}:{b.tag}" for b in rep.platforms)  # no latest, no run tag
    assert half.platforms[0].tag is None and half.status == Status.BUILD_FAILED


def test_moving_tags_that_may_not_move_are_one_publish_error_naming_the_pushed_platforms(fakes, tmp_path):
    ctx, _ = _context(*fakes, tmp_path)
    rep = ImageReport.model_validate_json(json.dumps({"name": MINIMAL, "status": "built", "publish": "index",
                                      "repository": f"{REGISTRY}/{MINIMAL}", "tags": ["t", "latest"],
                                      "platforms": [{"platform": "linux/amd64", "digest": "sha256:" + "a" * 64},
                                                    {"platform": "linux/arm64"}]}))
    with pytest.raises(publish.PublishError, match=r"the image is built, pushed for linux/amd64$"):
        push_step._move(ctx, rep, ctx.policy(rep))
