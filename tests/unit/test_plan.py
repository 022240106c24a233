"""Build order and cycle detection."""

from builder.matrix.platform import PLATFORMS
from builder.matrix import plan

AMD64, ARM64 = PLATFORMS["linux/amd64"], PLATFORMS["linux/arm64"]


def test_parents_come_first_and_ties_keep_matrix_order():
    deps = {"child-b": ["root"], "root": [], "child-a": ["root"], "grandchild": ["child-a"]}
    assert plan.build_order(deps) == ["root", "child-b", "child-a", "grandchild"]


def test_find_cycle_names_the_cycle():
    assert plan.find_cycle({"a": ["b"], "b": ["a"], "c": []}) in (["a", "b", "a"], ["b", "a", "b"])
    assert plan.find_cycle({"a": [], "b": ["a"]}) is None


def test_tree_groups_keep_build_order_and_put_every_descendant_with_its_root():
    parents = {"root-a": None, "root-b": None, "a1": "root-a", "b1": "root-b", "a1x": "a1"}
    assert plan.tree_groups(parents) == {"root-a": ["root-a", "a1", "a1x"], "root-b": ["root-b", "b1"]}
    assert plan.ci_matrix(parents) == {"include": [{"root": "root-a", "images": "root-a a1 a1x"},
                                                   {"root": "root-b", "images": "root-b b1"}]}


def test_ci_matrix_split_by_platform_gives_one_job_per_tree_and_platform_with_its_runner():
    parents = {"root-a": None, "root-b": None, "a1": "root-a", "a2": "root-a", "b1": "root-b"}
    platforms = {"root-a": (AMD64, ARM64), "a1": (AMD64,), "a2": (AMD64, ARM64),
                 "root-b": (AMD64,), "b1": (AMD64,)}
    assert plan.ci_matrix(parents, platforms) == {"include": [
        {"root": "root-a", "platform": "linux/amd64", "arch": "amd64", "runner": "ubuntu-22.04", "images": "root-a a1 a2"},
        {"root": "root-a", "platform": "linux/arm64", "arch": "arm64", "runner": "ubuntu-22.04-arm", "images": "root-a a2"},
        {"root": "root-b", "platform": "linux/amd64", "arch": "amd64", "runner": "ubuntu-22.04", "images": "root-b b1"}]}
