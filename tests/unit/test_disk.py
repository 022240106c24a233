"""Disk: the preflight estimate and its refusal, the choice of superseded local builds, and what
`builder prune` counts as the builder's own (offline; the real Engine is in the engine tests)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from repo import ROOT
from typer.testing import CliRunner

from builder.matrix.platform import PLATFORMS
from builder import files, matrix
from builder.cli import app
from builder.engine import disk, prune, superseded
from builder.engine.registry import Registry, RegistryError
from builder.matrix.inputs import ConfigError

AMD64, ARM64 = PLATFORMS["linux/amd64"], PLATFORMS["linux/arm64"]

M = matrix.load(ROOT / "matrix.yaml")
MINIMAL = M.image("minimal-debian12-py311-cpu-inference")
SKLEARN = M.image("sklearn-1.9-debian12-py311-cpu-inference")


def test_catalog_sizes_come_from_the_committed_catalog():
    sizes = disk.catalog_sizes(ROOT / "docs" / "images.json")
    assert sizes[MINIMAL.name, AMD64] > 100_000_000 and (MINIMAL.name, ARM64) in sizes


@pytest.mark.parametrize("text, words", [
    ("[", "images.json"), ('{"images": [{"name": 3}]}', "name"), ('{"images": {}}', "images"),
    ('{"images": [{"name": "x", "uncompressed_bytes": -1}]}', "uncompressed_bytes"), ("[" * 100_000, "images.json")])
def test_a_hostile_catalog_is_one_line(tmp_path, text, words):
    path = tmp_path / "images.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        disk.catalog_sizes(path)
    assert len(exc.value.lines) == 1 and words in exc.value.lines[0] and "\n" not in exc.value.lines[0]


def test_the_estimate_uses_the_catalog_then_the_locks_and_skips_unchanged_images():
    sizes = {(MINIMAL.name, AMD64): 200_000_000}
    packages = lambda spec, platform: 10
    one = disk.image_size(MINIMAL, ARM64, sizes, packages, disk.BASE_SIZE)
    assert one == 200_000_000  # the amd64 entry stands in for a platform without one
    assert disk.image_size(SKLEARN, AMD64, sizes, packages, 1) == 1 + 10 * disk.BYTES_PER_PACKAGE
    cold = disk.estimate([MINIMAL], sizes, set(), packages, disk.BASE_SIZE, pushing_locally=True)
    factor = disk.ENGINE_FACTOR + disk.CACHE_FACTOR
    assert cold == (int(2 * 200e6 * factor), int(2 * 200e6 * disk.REGISTRY_FACTOR))
    both = {(MINIMAL.name, p) for p in MINIMAL.platforms}
    assert disk.estimate([MINIMAL], sizes, both, packages, disk.BASE_SIZE, False) == (0, 0)
    assert disk.estimate([MINIMAL], sizes, both, packages, disk.BASE_SIZE, True) == (0, cold[1])  # pushed anew
    assert disk.estimate([MINIMAL], sizes, {(MINIMAL.name, AMD64)}, packages, disk.BASE_SIZE, True) == (
        int(200e6 * factor), cold[1])  # arm64 still to build
    assert disk.estimate([MINIMAL], sizes, set(), packages, 0, pushing_locally=False)[1] == 0


def test_an_image_is_unchanged_only_with_its_inputs_and_its_parents_per_platform():
    want = lambda spec: {"cell": spec.name, "lock": "L"}
    held = {(MINIMAL.name, "amd64"): [{"cell": MINIMAL.name, "lock": "old"},
                                      {"cell": MINIMAL.name, "lock": "L", "x": "y"}],
            (SKLEARN.name, "amd64"): [{"cell": SKLEARN.name, "lock": "L"}],
            (SKLEARN.name, "arm64"): [{"cell": SKLEARN.name, "lock": "L"}]}
    amd64 = {(MINIMAL.name, AMD64), (SKLEARN.name, AMD64)}
    assert disk.unchanged([MINIMAL, SKLEARN], held, want) == amd64  # minimal has no arm64 build: nor its child
    held[MINIMAL.name, "arm64"] = [{"cell": MINIMAL.name, "lock": "L"}]
    assert disk.unchanged([MINIMAL, SKLEARN], held, want) == amd64 | {(MINIMAL.name, ARM64),
                                                                      (SKLEARN.name, ARM64)}
    held[MINIMAL.name, "amd64"] = held[MINIMAL.name, "amd64"][:1]  # the root's lock changed: its child rebuilds
    assert disk.unchanged([MINIMAL, SKLEARN], held, want) == {(MINIMAL.name, ARM64),
                                                              (SKLEARN.name, ARM64)}
    assert disk.unchanged([MINIMAL, SKLEARN], {}, want) == set()


def test_the_full_matrix_needs_what_was_measured():
    # 2026-12-03, Engine 26.1.5, containerd store, `builder all --prune-cache` of the 16 images: the
    # file system grew at most 49.7 GB beside 17.7 GB of uv's cache mount and 0.6 GB of bases there
    # before: 68.0 GB from nothing.
    sizes = disk.catalog_sizes(ROOT / "docs" / "images.json")
    engine_bytes, registry_bytes = disk.estimate(M.images(), sizes, set(), lambda s, p: 0, 0, True,
                                                 prune_cache=True, factors=disk.CONTAINERD)
    assert 66e9 < engine_bytes + registry_bytes < 71e9
    held = disk.estimate(M.images(), sizes, set(), lambda s, p: 0, 0, True, prune_cache=True,
                         factors=disk.CONTAINERD, mounts_held=int(17.7e9))
    assert held[0] == engine_bytes - int(17.7e9)  # the wheels already in uv's cache mount need no space


def test_a_run_that_cannot_fit_is_refused_in_one_line(tmp_path):
    needs = disk.needs(10**18, 0, tmp_path, tmp_path / "build")
    assert len(needs) == 1 and needs[0].where == (tmp_path, tmp_path / "build")  # one file system, summed
    with pytest.raises(ConfigError) as exc:
        disk.check(needs)
    line = exc.value.lines[0]
    assert "needs about 1000000000.0 GB" in line and "GB free" in line and "--no-space-check" in line
    disk.check(disk.needs(1, 1, tmp_path, tmp_path))  # fits: no error
    assert disk.needs(10**18, 0, None, tmp_path)[0].need == 0  # a remote Engine's data root is not checked


def test_a_growth_ceiling_caps_the_engine_s_share_never_the_registry_s(tmp_path):
    assert disk.capped(10**18, 40 * 10**9) == 40 * 10**9 and disk.capped(5, None) == 5
    found = disk.needs(disk.capped(60 * 10**9, 40 * 10**9), 11 * 10**9, tmp_path, tmp_path / "build")
    assert [n.need for n in found] == [51 * 10**9]  # one file system: the registry's pushes still count


def test_a_build_larger_than_the_growth_ceiling_is_refused_in_one_line():
    needs = {(MINIMAL.name, AMD64): 2 * 10**9, (SKLEARN.name, ARM64): 30 * 10**9}
    disk.check_largest(needs, 30 * 10**9)  # fits exactly
    disk.check_largest({}, 1)
    with pytest.raises(ConfigError) as exc:
        disk.check_largest(needs, 29 * 10**9)
    (line,) = exc.value.lines
    assert f"the build of {SKLEARN.name} (linux/arm64) alone needs about 30.0 GB" in line
    assert "--max-disk-growth 29.0 GB" in line


@pytest.mark.parametrize("value, expected", [
    ("45GB", 45 * 10**9), ("40GiB", 40 * 2**30), ("1000000000", 10**9), ("1 PB", 10**15), (None, None)])
def test_the_growth_option_reads_sizes(value, expected):
    from builder.cli.common import byte_size
    assert byte_size(value) == expected


@pytest.mark.parametrize("value", ["12", "-45GB", "--dry-run", "45 parsecs", "0.5GB", "2PB", "9" * 40, "45GB\n"])
def test_the_growth_option_refuses_what_is_not_a_size_in_one_line(value, tmp_path):
    result = CliRunner().invoke(app, ["all", "--dry-run", "--build-dir", str(tmp_path / "b"), "--max-disk-growth", value])
    assert result.exit_code == 2 and "--max-disk-growth" in result.output and "expected a size" in result.output
    assert not (tmp_path / "b").exists()


def test_with_a_build_waiting_the_cache_pruner_takes_the_run_s_cache_mounts_too():
    from builder.run import space
    client = FakeCache({"old": "regular", "old-uv": "exec.cachemount", "uv": "exec.cachemount", "layer": "regular"}, {})
    lines = []
    assert space.CachePruner(client, {"old", "old-uv"}, lines.append).after_image("minimal", mounts=True) == 20
    assert set(client.records) == {"old", "old-uv"}  # what was there before the run stays
    assert lines == ["BuildKit cache removed after minimal: 0.00 GB (uv's cache mount too: a build waits for space)"]


def _build(id_, tags, created, arch="amd64"):
    return superseded.LocalBuild(id_, tuple(tags), created, arch, 1)


def test_superseded_keeps_the_current_latest_used_newest_and_concurrent():
    builds = [_build("new", ["r:2"], 300), _build("latest", ["r:1", "r:latest"], 100),
              _build("arm", ["r:0-arm64", "r:latest-arm64"], 50, "arm64"), _build("used", ["r:u"], 200),
              _build("old1", ["r:o1"], 90), _build("old2", ["r:o2"], 80),
              _build("other-platform", ["r:o3-arm64"], 10, "arm64"), _build("concurrent", ["r:c"], 1000),
              _build("in-flight", ["r:build-0123abcd"], 95)]
    gone = lambda current, keep: [b.id for b in superseded.superseded(builds, current, keep, ("latest",), {"used"}, 500)]
    assert gone({"new"}, 1) == ["old1", "old2"]  # an arm64 build is not superseded by an amd64 one,
    # nor one another run is still making (its temporary tag build-<run id>)
    assert gone({"new"}, 2) == ["old2"]
    assert gone({"new", "arm"}, 1) == ["old1", "old2", "other-platform"]
    assert [b.id for b in superseded.superseded(builds, {"new"}, 1, ("latest",), set(), 500)] == ["used", "old1", "old2"]


def test_only_the_builders_images_are_its_own():
    prefix = M.data.project.label_prefix
    mine = SimpleNamespace(labels={f"{prefix}.cell-digest": "x", "org.opencontainers.image.title": MINIMAL.name}, tags=[])
    foreign = SimpleNamespace(labels={"org.opencontainers.image.title": MINIMAL.name}, tags=["someone/minimal:1"])
    base = SimpleNamespace(labels={}, tags=["builder-base/debian12:abc"])
    names = {s.name for s in M.images()}
    assert prune.ours(mine, names, prefix) and prune.ours(base, names, prefix)
    pulled = SimpleNamespace(labels=mine.labels, tags=[f"ghcr.io/org/{MINIMAL.name}:1", f"127.0.0.1:5000/ns/{MINIMAL.name}:2"])
    assert prune.own_tags(pulled, names, ("127.0.0.1:5000",)) == [f"127.0.0.1:5000/ns/{MINIMAL.name}:2"]
    assert prune.own_tags(base, names, ("127.0.0.1:5000",), keep_bases=True) == []
    assert not prune.ours(foreign, names, prefix)
    assert not prune.ours(SimpleNamespace(labels={f"{prefix}.cell-digest": "x", "org.opencontainers.image.title": "other"},
                                          tags=[]), names, prefix)


def test_a_build_folder_is_the_builders_only_when_it_made_it(tmp_path):
    made = files.claim_folder(tmp_path / "b")
    assert files.owned_folder(made)
    (tmp_path / "mine").mkdir()
    assert files.claim_folder(tmp_path / "mine") and not files.owned_folder(tmp_path / "mine")
    (tmp_path / "link").symlink_to(made)
    assert not files.owned_folder(tmp_path / "link")


def test_prune_refuses_a_build_folder_it_did_not_make(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "keep.txt").write_text("user data")
    r = CliRunner().invoke(app, ["prune", "--build-dir", str(folder), "--matrix", str(ROOT / "matrix.yaml")])
    assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1 and "not made by `builder`" in r.stderr
    assert (folder / "keep.txt").read_text() == "user data"


def test_the_ledger_records_only_a_runs_new_cache_records(tmp_path):
    ledger = tmp_path / "state" / "ids"
    assert prune.record_cache({"a", "b"}, {"a", "b", "c", "d"}, ledger) == 2
    assert prune.record_cache({"a"}, {"a"}, ledger) == 0
    assert ledger.read_text() == "c\nd\n"
    assert prune.record_cache(None, {"e"}, ledger) == 0 and ledger.read_text() == "c\nd\n"


def test_with_prune_cache_the_estimate_is_the_measured_peak_or_the_largest_build_whole():
    f = disk.Factors(engine=1.0, cache=2.0, registry=0.5, mounts=0.25, peak=1.5)
    few = {(MINIMAL.name, AMD64): 100, (MINIMAL.name, ARM64): 300}
    kept = disk.estimate([MINIMAL], few, set(), lambda s, p: 0, 0, False, factors=f)
    assert kept == (int(400 * 3.0 + 400 * 0.25), 0)
    pruned = disk.estimate([MINIMAL], few, set(), lambda s, p: 0, 0, False, prune_cache=True, factors=f)
    assert pruned == (int(300 * 3.0 + 400 * 0.25), 0)  # the larger build, image and cache, outweighs the peak
    many = {(s.name, p): 100 for s in M.images() for p in s.platforms}
    count = len(many)
    assert disk.estimate(M.images(), many, set(), lambda s, p: 0, 0, False, prune_cache=True, factors=f) == (
        int(count * 100 * 1.5 + count * 100 * 0.25), 0)
    assert disk.estimate([MINIMAL], few, set(), lambda s, p: 0, 0, False, factors=f, mounts_held=10**9)[0] == 1200


class FakeCache:
    """BuildKit's cache records as the Engine API shows them: a record goes only once nothing is
    built on it (its children gone) and nothing uses it."""

    def __init__(self, records: dict[str, str], parents: dict[str, str], in_use: set[str] = frozenset()):
        self.records, self.parents, self.in_use, self.pruned = dict(records), parents, set(in_use), []
        self.api = SimpleNamespace(prune_builds=self.prune_builds)

    def df(self):
        return {"BuildCache": [{"ID": i, "Type": t} for i, t in self.records.items()]}

    def prune_builds(self, filters, all):
        (record,) = filters["id"]
        if record in self.in_use or any(self.parents.get(c) == record for c in self.records):
            return {"SpaceReclaimed": 0}
        self.records.pop(record, None)
        self.pruned.append(record)
        return {"SpaceReclaimed": 10}


def test_remove_records_takes_passes_until_the_records_built_on_are_gone():
    client = FakeCache({"base": "regular", "mid": "regular", "top": "regular", "other": "regular"},
                       {"mid": "base", "top": "mid"})
    freed, left = prune.remove_records(client, {"base", "mid", "top"})
    assert (freed, left) == (30, set()) and set(client.records) == {"other"}
    busy = FakeCache({"a": "regular", "b": "regular"}, {}, in_use={"b"})
    assert prune.remove_records(busy, {"a", "b"}) == (10, {"b"})


def test_the_cache_pruner_removes_the_runs_records_but_cache_mounts_and_older_ones():
    from builder.run import space
    client = FakeCache({"old": "regular", "uv": "exec.cachemount", "layer": "regular", "context": "source.local",
                        "busy": "regular"}, {}, in_use={"busy"})
    lines = []
    pruner = space.CachePruner(client, {"old"}, lines.append)
    assert pruner.after_image("minimal") == 20
    assert set(client.records) == {"old", "uv", "busy"} and lines == ["BuildKit cache removed after minimal: 0.00 GB"]
    assert space.CachePruner(client, None, lines.append).after_image("x") == 0 and set(client.records) == {"old", "uv", "busy"}


def test_the_preflight_reads_the_bytes_cache_mounts_already_hold():
    client = SimpleNamespace(df=lambda: {"BuildCache": [{"ID": "a", "Type": "exec.cachemount", "Size": 5},
                                                        {"ID": "b", "Type": "regular", "Size": 7}]})
    assert prune.cache_mount_bytes(client) == 5
    assert prune.cache_records(client) == {"a": "exec.cachemount", "b": "regular"}


@pytest.mark.parametrize("store, version, expected", [
    (False, "28.5.2+dfsg4", "CLASSIC"), (True, "28.5.2+dfsg4", "CONTAINERD_28"), (True, "29.0.1", "CONTAINERD_28"),
    (True, "26.1.5+dfsg1", "CONTAINERD"), (True, "27.5.1", "CONTAINERD"), (True, "dev", "CONTAINERD")])
def test_the_factors_are_the_ones_measured_on_that_engine_and_store(store, version, expected):
    assert disk.factors_for(store, version) is getattr(disk, expected)
    assert disk.CONTAINERD_28.engine > disk.CONTAINERD.engine  # containerd 2's store keeps more per image


def test_a_growth_ceiling_without_the_disk_schedule_is_refused_in_one_line(tmp_path):
    result = CliRunner().invoke(app, ["all", "--dry-run", "--build-dir", str(tmp_path / "b"),
                                      "--max-disk-growth", "45GB", "--no-space-check"])
    assert result.exit_code == 2 and "--max-disk-growth: leave out --no-space-check" in result.output
    assert not (tmp_path / "b").exists()


def test_the_schedule_s_floor_is_the_free_bytes_at_its_start_less_the_growth(tmp_path, monkeypatch):
    from builder.run import space
    monkeypatch.setattr(space.engine, "data_root", lambda client: tmp_path)
    monkeypatch.setattr(space, "free_of", lambda root: lambda: 100 * 10**9)
    budget, watch = space.budget(None, {}, print, 45 * 10**9)
    assert budget.floor == 55 * 10**9 and watch.path == tmp_path
    from builder.run.disk_budget import FLOOR
    assert space.budget(None, {}, print)[0].floor == FLOOR
    monkeypatch.setattr(space.engine, "data_root", lambda client: None)
    assert space.budget(None, {}, print, 45 * 10**9) == (None, None)  # an Engine on another machine


class FakeRegistry:
    """The registry reads the preflight makes: manifests by tag or digest, image configurations."""

    def __init__(self, docs: dict[str, dict], configs: dict[str, dict]):
        self.docs, self.configs = docs, configs

    def manifest(self, repository, reference):
        key = f"{repository}:{reference}" if not reference.startswith("sha256:") else reference
        return (key, self.docs[key]) if key in self.docs else None

    index_entries = staticmethod(Registry.index_entries)

    def config(self, repository, manifest):
        if manifest["config"]["digest"] not in self.configs:
            raise RegistryError("no such blob")
        return self.configs[manifest["config"]["digest"]]


def test_the_preflight_counts_builds_the_registry_publishes_with_the_same_inputs(monkeypatch):
    from builder.run import space
    repo = lambda name: f"127.0.0.1:5000/{name}"  # noqa: E731
    d = lambda c: "sha256:" + c * 64  # noqa: E731
    docs = {f"{repo(MINIMAL.name)}:latest": {"manifests": [
                {"digest": d("a"), "platform": {"os": "linux", "architecture": "amd64"}},
                {"digest": d("b"), "platform": {"os": "linux", "architecture": "arm64"}}]},
            d("a"): {"config": {"digest": d("c")}}, d("b"): {"config": {"digest": d("e")}},
            f"{repo(SKLEARN.name)}:latest": {"config": {"digest": d("f")}}}  # its config is missing
    title = {"org.opencontainers.image.title": MINIMAL.name, "x.cell-digest": "sha256:1"}
    configs = {d("c"): {"architecture": "amd64", "config": {"Labels": title}},
               d("e"): {"architecture": "arm64", "config": {"Labels": {**title, "org.opencontainers.image.title": "other"}}}}
    monkeypatch.setattr(space, "answers", lambda host: True)
    found = space._published_labels(M, "127.0.0.1:5000", [MINIMAL, SKLEARN], lambda host: FakeRegistry(docs, configs))
    assert found == {(MINIMAL.name, "amd64"): [title]}  # arm64's labels name another image; sklearn's config is unread
    monkeypatch.setattr(space, "answers", lambda host: False)
    assert space._published_labels(M, "127.0.0.1:5000", [MINIMAL], lambda host: FakeRegistry(docs, configs)) == {}


def test_the_preflight_reads_only_the_index_entries_of_the_image_s_platforms_and_survives_any_error(monkeypatch):
    from builder.run import space
    d = lambda c: "sha256:" + c * 64  # noqa: E731
    read: list[str] = []

    class Reader(FakeRegistry):
        def manifest(self, repository, reference):
            read.append(reference)
            return super().manifest(repository, reference)
    docs = {f"127.0.0.1:5000/{MINIMAL.name}:latest": {"manifests": [
        {"digest": d("a"), "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": d("9"), "platform": {"os": "linux", "architecture": "s390x"}}]}, d("a"): {"config": {"digest": d("c")}}}
    configs = {d("c"): {"architecture": "amd64", "config": {"Labels": {"org.opencontainers.image.title": MINIMAL.name}}}}
    monkeypatch.setattr(space, "answers", lambda host: True)
    assert list(space._published_labels(M, "127.0.0.1:5000", [MINIMAL], lambda h: Reader(docs, configs))) == [(MINIMAL.name, "amd64")]
    assert d("9") not in read  # an entry for a platform the image does not have is never fetched

    def broken(host):
        raise AttributeError("an oras-py token backend's surprise")
    assert space._published_labels(M, "127.0.0.1:5000", [MINIMAL], broken) == {}


def test_a_registry_that_stalls_gives_the_preflight_nothing_after_its_deadline(monkeypatch):
    import threading
    from builder.run import space
    never = threading.Event()

    class Stalled:
        def manifest(self, repository, reference):
            never.wait()
    monkeypatch.setattr(space, "answers", lambda host: True)
    assert space._published_labels(M, "127.0.0.1:5000", [MINIMAL], lambda h: Stalled(), deadline=0.2) == {}


@pytest.mark.parametrize("change, counts", [
    ({}, True), ({"stage": "test"}, False), ({"force": True}, False), ({"no_cache": True}, False),
    ({"keyless": True}, False), ({"by_platform": True}, False), ({"platforms": (AMD64,)}, False)])
def test_published_builds_count_only_where_the_up_to_date_step_skips_them(change, counts):
    from builder.run import space
    from builder.run.context import Options
    assert space.published_counts(Options(**{"stage": "all", **change})) is counts


def test_a_published_build_counts_as_nothing_in_the_estimate_but_reserves_in_full(monkeypatch, tmp_path):
    from builder.run import space
    from builder.run.context import Options
    labels = {"x": "1"}
    monkeypatch.setattr(space, "_held_labels", lambda client, matrix, registry: {})
    monkeypatch.setattr(space, "_published_labels", lambda matrix, registry, specs: {(MINIMAL.name, "amd64"): [labels]})
    monkeypatch.setattr(space, "_expected_labels", lambda matrix, images, vcs: lambda spec: labels)
    monkeypatch.setattr(space.engine, "containerd_store", lambda client: True)
    monkeypatch.setattr(space.engine, "data_root", lambda client: None)
    monkeypatch.setattr(space.prune, "cache_mount_bytes", lambda client: 0)
    seen = {}
    estimate = disk.estimate
    def spy(specs, sizes, same, *args):
        seen["same"] = same
        return estimate(specs, sizes, same, *args)
    monkeypatch.setattr(space.disk, "estimate", spy)
    client = SimpleNamespace(version=lambda: {"Version": "28.5.2"})
    opt = Options(stage="all", images_dir=ROOT / "images", build_dir=tmp_path / "b", catalog=ROOT / "docs" / "images.json")
    needs = space.check(client, M, opt, "127.0.0.1:5000", [MINIMAL], {})
    assert seen["same"] == {(MINIMAL.name, AMD64)} and needs[MINIMAL.name, AMD64] > 0 and needs[MINIMAL.name, ARM64] > 0
    space.check(client, M, Options(stage="test", images_dir=ROOT / "images", build_dir=tmp_path / "b",
                                   catalog=ROOT / "docs" / "images.json"), "127.0.0.1:5000", [MINIMAL], {})
    assert seen["same"] == set()  # a stage that does not publish builds them all
