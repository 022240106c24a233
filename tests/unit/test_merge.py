"""``builder merge``'s decisions over the reports of a run split by platform (the index itself is
made against a real registry in tests/integration/test_by_platform.py)."""

import json

import pytest
from repo import ROOT
from typer.testing import CliRunner

from builder.cli import app
from builder.matrix import load
from builder.matrix.inputs import ConfigError
from builder.matrix.platform import PLATFORMS, Platform
from builder.run import merge, publish, report_file, taggers
from builder.run.report import ImageReport, Status

AMD64, ARM64 = PLATFORMS["linux/amd64"], PLATFORMS["linux/arm64"]

MINIMAL = "minimal-debian12-py311-cpu-inference"
GPU = "xgboost-3.2-debian12-py311-cuda12-gpu-inference"


@pytest.fixture(scope="module")
def matrix():
    return load(ROOT / "matrix.yaml")


def _job(platform: Platform, status: str = "published", **facts) -> ImageReport:
    arch = platform.arch
    n = "1" if arch == "amd64" else "2"
    one = {"platform": platform.name, "image_id": f"sha256:{n * 64}", "tag": f"1.5.1-py3.11.2-x-{arch}",
           "digest": f"sha256:{'d' * 63}{n}", "framework_version": "1.5.1", "python_version": "3.11.2", **facts}
    return ImageReport.model_validate_json(json.dumps(
        {"name": MINIMAL, "parent": None, "status": status, "publish": "per-platform",
         "repository": "127.0.0.1:5000/" + MINIMAL, "tags": [one["tag"], f"latest-{arch}"],
         "platforms": [one] if status in ("published", "unchanged", "up-to-date") else []}))


REGISTRY = object()  # the registry client merge hands to push_index (replaced below)


@pytest.fixture
def made(monkeypatch):
    calls = []

    def push_index(registry, repository, tags, digests):
        assert registry is REGISTRY
        calls.append((repository, tags, digests))
        return publish.PublishResult(repository, tags, "sha256:" + "e" * 64, pushed=True)

    monkeypatch.setattr(publish, "push_index", push_index)
    return calls


def test_every_platform_pushed_gives_one_index_named_from_both_builds(matrix, made):
    entries = merge.merge(matrix, {MINIMAL: [_job(ARM64), _job(AMD64)]}, REGISTRY, log=lambda line: None)
    (only,) = entries
    expected = taggers.index_tag(matrix.data.tags, "1.5.1", "3.11.2", ["sha256:" + "1" * 64, "sha256:" + "2" * 64])
    builds = {AMD64.name: "sha256:" + "d" * 63 + "1", ARM64.name: "sha256:" + "d" * 63 + "2"}
    # the immutable tag first, then (once it would be signed) latest: the same index
    assert made == [(only.repository, [expected], builds), (only.repository, ["latest"], builds)]
    assert only.status == "published" and only.tags == [expected, "latest"] and only.publish == "index"
    assert [b.platform for b in only.platforms] == [AMD64, ARM64] and only.digest == "sha256:" + "e" * 64


def test_index_tag_depends_on_every_platform_build():
    policy = load(ROOT / "matrix.yaml").data.tags
    a = taggers.index_tag(policy, "1.5.1", "3.11.2", ["sha256:" + "1" * 64, "sha256:" + "2" * 64])
    assert a != taggers.index_tag(policy, "1.5.1", "3.11.2", ["sha256:" + "1" * 64, "sha256:" + "3" * 64])
    assert a.startswith("1.5.1-py3.11.2-")


@pytest.mark.parametrize("arm64", ["test-failed", None])
def test_a_platform_failed_or_missing_moves_no_latest(matrix, made, arm64):
    jobs = [_job(AMD64)] + ([_job(ARM64, arm64)] if arm64 else [])
    (only,) = merge.merge(matrix, {MINIMAL: jobs}, REGISTRY, log=lambda line: None)
    assert made == []
    assert only.status == "publish-failed" and ARM64.name in only.error and only.digest is None
    assert "latest" not in only.tags


def test_platforms_that_disagree_on_versions_are_not_merged(matrix, made):
    jobs = [_job(AMD64), _job(ARM64, python_version="3.11.9")]
    (only,) = merge.merge(matrix, {MINIMAL: jobs}, REGISTRY, log=lambda line: None)
    assert made == [] and only.status == "publish-failed" and "python version" in only.error


def test_an_image_published_whole_by_its_job_passes_through(matrix, made):
    whole = ImageReport(name=GPU, status=Status.PUBLISHED, tags=["x", "latest"])
    assert merge.merge(matrix, {GPU: [whole]}, REGISTRY, log=lambda line: None) == [whole] and made == []


def test_a_foreign_report_is_refused(tmp_path):
    (tmp_path / "r.json").write_text("[]")
    with pytest.raises(ConfigError):
        report_file.read_all([tmp_path / "r.json"])


@pytest.mark.parametrize("existing", ["# my notes\n", '{"images": "not a list"}', None])
def test_merge_never_replaces_a_file_it_did_not_write(tmp_path, existing):
    (tmp_path / "job.json").write_text(json.dumps({"images": [_job(AMD64).model_dump(mode="json")]}))
    out = tmp_path / "notes.md"
    if existing is None:  # a symlink, whatever it points at
        (tmp_path / "target.json").write_text('{"images": []}')
        out.symlink_to(tmp_path / "target.json")
    else:
        out.write_text(existing)
    before = out.read_text()
    r = CliRunner().invoke(app, ["merge", "--report", str(tmp_path / "job.json"), "--out", str(out),
                                 "--matrix", str(ROOT / "matrix.yaml")])
    assert r.exit_code == 2 and "refusing to replace" in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert out.read_text() == before


def test_an_index_is_signed_only_over_builds_signed_with_the_same_key(matrix, made):
    class Signer:
        def __init__(self, signed):
            self.signed_refs, self.made = signed, []

        def signed(self, ref):
            return ref.rsplit("@", 1)[1] in self.signed_refs

        def sign(self, ref):
            self.made.append(ref)
    jobs = {MINIMAL: [_job(ARM64), _job(AMD64)]}
    amd64 = "sha256:" + "d" * 63 + "1"
    half = Signer({amd64})
    (only,) = merge.merge(matrix, jobs, REGISTRY, log=lambda line: None, signer=half)
    assert only.status == "publish-failed" and ARM64.name in only.error and "not signed" in only.error
    assert made == [] and half.made == []  # no index, nothing signed
    both = Signer({amd64, "sha256:" + "d" * 63 + "2"})
    (only,) = merge.merge(matrix, jobs, REGISTRY, log=lambda line: None, signer=both)
    assert only.status == "published" and only.signature == "signed"
    assert both.made == [f"{only.repository}@{only.digest}"] and [tags for _, tags, _ in made] == [[only.tags[0]], ["latest"]]


def test_up_to_date_jobs_whose_signed_index_the_registry_has_merge_into_an_unchanged_image(matrix, monkeypatch):
    made = []

    def push_index(registry, repository, tags, digests):  # every tag already names this index
        made.append(tags)
        return publish.PublishResult(repository, tags, "sha256:" + "e" * 64, pushed=False)
    monkeypatch.setattr(publish, "push_index", push_index)

    class Signer:  # the builds and the index: signed by an earlier release
        made: list = []

        def signed(self, ref):
            return True

        def sign(self, ref):
            self.made.append(ref)
    signer = Signer()
    jobs = {MINIMAL: [_job(ARM64, "up-to-date"), _job(AMD64, "up-to-date")]}
    (only,) = merge.merge(matrix, jobs, REGISTRY, log=lambda line: None, signer=signer)
    assert only.status == "unchanged" and only.signature == "signed" and signer.made == []
    assert [b.platform for b in only.platforms] == [AMD64, ARM64] and len(made) == 2


@pytest.mark.parametrize("arm64, moves", [("published", ["tested", "published"]), (None, ["tested", "publish-failed"])])
def test_merge_moves_the_status_through_the_state_machine_only(matrix, made, monkeypatch, arm64, moves):
    # The merged record is a new one: tested (its jobs tested their builds), then published or
    # publish-failed, each move along report.MOVES; never a job's published status overwritten.
    seen, move = [], ImageReport.move

    def recorded(rep, status, error=None):
        seen.append(str(status))
        move(rep, status, error)
    monkeypatch.setattr(ImageReport, "move", recorded)
    jobs = [_job(AMD64)] + ([_job(ARM64, arm64)] if arm64 else [])
    (only,) = merge.merge(matrix, {MINIMAL: jobs}, REGISTRY, log=lambda line: None)
    assert seen == moves and str(only.status) == moves[-1]
    assert [j.status for j in jobs] == [Status.PUBLISHED] * len(jobs)  # the jobs' reports are left as read
