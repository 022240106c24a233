"""Build order and cycle detection."""

from builder import plan


def test_parents_come_first_and_ties_keep_matrix_order():
    deps = {"child-b": ["root"], "root": [], "child-a": ["root"], "grandchild": ["child-a"]}
    assert plan.build_order(deps) == ["root", "child-b", "child-a", "grandchild"]


def test_find_cycle_names_the_cycle():
    assert plan.find_cycle({"a": ["b"], "b": ["a"], "c": []}) in (["a", "b", "a"], ["b", "a", "b"])
    assert plan.find_cycle({"a": [], "b": ["a"]}) is None
