"""Tag policy: a pure function of the real versions and the image id."""

import pytest

from builder.matrix import naming
from builder.matrix.schema import TagPolicy
from builder.run import taggers

POLICY = TagPolicy(moving=["latest"], immutable="{framework_version}-py{python_version}-{image_id}")


def test_immutable_tag_uses_real_versions_and_the_image_id():
    assert taggers.immutable_tag(POLICY, "1.9.1", "3.11.2", "sha256:0123456789abcdef" + "0" * 48) == \
        "1.9.1-py3.11.2-0123456789ab"


def test_a_different_image_gets_a_different_immutable_tag():
    a = taggers.immutable_tag(POLICY, "1.9.1", "3.11.2", "sha256:" + "a" * 64)
    b = taggers.immutable_tag(POLICY, "1.9.1", "3.11.2", "sha256:" + "b" * 64)
    assert a != b


def test_local_version_plus_is_not_a_valid_tag_character():
    assert taggers.immutable_tag(POLICY, "2.13.0+cpu", "3.11.2", "sha256:" + "c" * 64) == "2.13.0-cpu-py3.11.2-cccccccccccc"


@pytest.mark.parametrize("raw,clean", [("a/b:c", "a-b-c"), (".hidden", "hidden"), ("x" * 200, "x" * 128)])
def test_sanitize_follows_the_docker_tag_grammar(raw, clean):
    assert taggers.sanitize(raw) == clean


def test_sanitize_refuses_an_empty_tag():
    with pytest.raises(ValueError):
        taggers.sanitize("...")


def test_repository_is_registry_qualified():
    assert naming.repository("127.0.0.1:5000/team/", "minimal") == "127.0.0.1:5000/team/minimal"
    assert naming.repository("", "minimal") == "minimal"


def test_an_earlier_immutable_tag_of_the_same_image_is_found_again():
    image_id = "sha256:" + "c" * 64
    earlier = taggers.immutable_tag(POLICY, "2.13.0+cpu", "3.11.2", image_id)
    assert taggers.existing_immutable(POLICY, ["latest", earlier], image_id) == earlier
    # another image's tag, or a tag the policy did not make, is not taken
    assert taggers.existing_immutable(POLICY, [taggers.immutable_tag(POLICY, "2.13.0", "3.11.2", "sha256:" + "d" * 64)],
                                  image_id) is None
    assert taggers.existing_immutable(POLICY, ["latest", "cccccccccccc"], image_id) is None
