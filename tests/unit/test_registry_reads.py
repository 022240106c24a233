"""The registry client's reads against hostile answers: manifests, image configurations and tag
lists that are too big, not JSON objects, or send the client elsewhere (a fake oras session; the
real registry is read in tests/integration/test_pipeline.py)."""

from __future__ import annotations

import hashlib
import json

import pytest
import requests

from builder.engine import registry
from builder.engine.registry import REFERENCE_TYPE, Registry, RegistryError

REPO = "127.0.0.1:5000/team/minimal"


class Answer:
    """A requests.Response as oras' do_request returns it: status, body, Link header."""

    def __init__(self, body: bytes | dict | list, status: int = 200, next_url: str | None = None):
        self.content = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.status_code, self.headers = status, {}
        self.links = {"next": {"url": next_url}} if next_url else {}

    def iter_content(self, size: int):
        return (self.content[i:i + size] for i in range(0, len(self.content), size))

    def close(self) -> None:
        pass


class Session:
    def __init__(self, answers: dict[str, Answer]):
        self.answers, self.asked = answers, []

    def do_request(self, url: str, method: str, headers: dict | None = None, stream: bool = False):
        self.asked.append(url)
        for part, answer in self.answers.items():
            if part in url:
                return answer
        raise requests.ConnectionError(url)


def _registry(monkeypatch, answers: dict[str, Answer]) -> tuple[Registry, Session]:
    session = Session(answers)
    r = Registry("127.0.0.1:5000")
    monkeypatch.setattr(r, "_client", lambda repository: session)
    return r, session


def test_tags_are_read_page_by_page_and_bad_names_dropped(monkeypatch):
    r, session = _registry(monkeypatch, {  # the first part a URL holds picks the answer
        "last=latest": Answer({"tags": ["-bad", "x" * 200, "2.0-def"]}),
        "n=1000": Answer({"tags": ["1.0-abc", "latest"]}, next_url="/v2/team/minimal/tags/list?last=latest&n=1000")})
    assert r.list_tags(REPO) == ["1.0-abc", "latest", "2.0-def"]
    assert len(session.asked) == 2


def test_a_tag_page_that_leads_to_another_host_is_refused(monkeypatch):
    r, session = _registry(monkeypatch, {"n=1000": Answer({"tags": ["a"]}, next_url="https://elsewhere.example/v2/x")})
    with pytest.raises(RegistryError, match="elsewhere"):
        r.list_tags(REPO)
    assert not any("elsewhere" in u for u in session.asked)


def test_a_tag_list_that_never_ends_is_cut_off(monkeypatch):
    r, _ = _registry(monkeypatch, {"tags/list": Answer({"tags": ["a"]}, next_url="/v2/team/minimal/tags/list?n=1000")})
    with pytest.raises(RegistryError, match="pages"):
        r.list_tags(REPO, max_pages=5)


@pytest.mark.parametrize("body", [{"tags": "latest"}, ["latest"], b"not json"])
def test_a_tag_list_of_another_shape_is_refused(monkeypatch, body):
    r, _ = _registry(monkeypatch, {"tags/list": Answer(body)})
    with pytest.raises(RegistryError, match="tag list|cannot list"):
        r.list_tags(REPO)


def test_a_repository_the_registry_does_not_know_has_no_tags(monkeypatch):
    r, _ = _registry(monkeypatch, {"tags/list": Answer({"errors": []}, status=404)})
    assert r.list_tags(REPO) == []


@pytest.mark.parametrize("body", [b"[1, 2]", b"\"text\"", b"{", b"{}" + b" " * (registry.MAX_MANIFEST + 1)])
def test_a_manifest_that_is_not_one_json_object_of_bounded_size_is_refused(monkeypatch, body):
    r, _ = _registry(monkeypatch, {"manifests/latest": Answer(body)})
    with pytest.raises(RegistryError):
        r.manifest(REPO, "latest")


def test_an_image_configuration_must_match_its_digest_and_be_an_object(monkeypatch):
    good, listed = b'{"os": "linux"}', b"[1]"
    digest = "sha256:" + hashlib.sha256(good).hexdigest()
    r, _ = _registry(monkeypatch, {digest: Answer(good)})
    assert r.config(REPO, {"config": {"digest": digest}}) == {"os": "linux"}
    r, _ = _registry(monkeypatch, {digest: Answer(b'{"os": "other"}')})
    with pytest.raises(RegistryError, match="other bytes"):
        r.config(REPO, {"config": {"digest": digest}})
    other = "sha256:" + hashlib.sha256(listed).hexdigest()
    r, _ = _registry(monkeypatch, {other: Answer(listed)})
    with pytest.raises(RegistryError, match="not a JSON object"):
        r.config(REPO, {"config": {"digest": other}})


class Endless(Answer):
    """A body that never ends, and says no length."""

    def iter_content(self, size: int):
        while True:
            yield b" " * size


def test_a_body_that_never_ends_is_cut_off_at_the_limit(monkeypatch):
    r, _ = _registry(monkeypatch, {"manifests/latest": Endless(b"")})
    with pytest.raises(RegistryError, match="over"):
        r.manifest(REPO, "latest")
    big = Answer(b"{}")
    big.headers["Content-Length"] = str(registry.MAX_MANIFEST + 1)
    r, _ = _registry(monkeypatch, {"manifests/latest": big})
    with pytest.raises(RegistryError, match="would send"):
        r.manifest(REPO, "latest")


def test_an_index_s_images_leave_out_buildkit_s_attestation_manifests_and_a_bad_entry_is_none():
    image = {"digest": "sha256:" + "a" * 64, "platform": {"os": "linux", "architecture": "arm64"}}
    attestation = {"digest": "sha256:" + "b" * 64, "platform": {"os": "unknown", "architecture": "unknown"},
                   "annotations": {REFERENCE_TYPE: "attestation-manifest"}}
    assert Registry.index_entries({"manifests": [image, attestation]}) == {"linux/arm64": "sha256:" + "a" * 64}
    assert Registry.index_entries({"manifests": [attestation]}) == {}
    for bad in ({"manifests": "x"}, {"manifests": [{"digest": "--x", "platform": image["platform"]}]},
                {"manifests": [{"digest": image["digest"]}]}, {"manifests": [None]}, {}):
        assert Registry.index_entries(bad) is None


def test_labels_of_a_configuration_are_an_object_or_empty():
    assert Registry.labels({"config": {"Labels": {"a": "b"}}}) == {"a": "b"}
    for config in ({}, {"config": None}, {"config": {"Labels": ["a"]}}, {"config": {"Labels": None}}, None):
        assert Registry.labels(config) == {}
