"""The Platform value object: parsing, the facts of each supported platform, and its suffixes."""

import dataclasses

import pydantic
import pytest

from builder.matrix.platform import DEFAULT, PLATFORMS, Platform, of_machine


def test_parse_gives_the_one_platform_of_the_table():
    assert Platform.parse("linux/arm64") is PLATFORMS["linux/arm64"]
    assert Platform.parse("linux/amd64") is DEFAULT
    assert str(Platform.parse("linux/arm64")) == "linux/arm64"


@pytest.mark.parametrize("name", ["linux/s390x", "linux/arm64/v8", "arm64", "", None, "LINUX/AMD64"])
def test_an_unknown_platform_is_one_line_naming_the_supported_ones(name):
    with pytest.raises(ValueError) as err:
        Platform.parse(name)
    assert str(err.value) == f"{name!r} is not a platform (expected one of: linux/amd64, linux/arm64)"


def test_amd64_facts():
    assert dataclasses.asdict(DEFAULT) == {
        "name": "linux/amd64", "os": "linux", "arch": "amd64", "variant": None, "machine": "x86_64",
        "uv_triple": "x86_64-manylinux_2_28", "qemu_handler": None, "runner": "ubuntu-22.04"}
    assert DEFAULT.is_default


def test_arm64_facts():
    assert dataclasses.asdict(Platform.parse("linux/arm64")) == {
        "name": "linux/arm64", "os": "linux", "arch": "arm64", "variant": None, "machine": "aarch64",
        "uv_triple": "aarch64-manylinux_2_28", "qemu_handler": "qemu-aarch64", "runner": "ubuntu-22.04-arm"}
    assert not Platform.parse("linux/arm64").is_default


def test_file_suffix_is_empty_for_the_default_platform_only_and_tag_suffix_is_never_empty():
    arm = Platform.parse("linux/arm64")
    assert (DEFAULT.suffix, arm.suffix) == ("", "-arm64")
    assert (DEFAULT.tag_suffix, arm.tag_suffix) == ("-amd64", "-arm64")


def test_the_table_lists_the_default_first_and_is_frozen():
    assert list(PLATFORMS) == ["linux/amd64", "linux/arm64"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT.arch = "arm64"


def test_of_machine_maps_uname_m_to_its_platform():
    assert of_machine("x86_64") is DEFAULT
    assert of_machine("aarch64").name == "linux/arm64"
    with pytest.raises(ValueError, match=r"^'riscv64' runs no supported platform \(expected one of: x86_64, aarch64\)$"):
        of_machine("riscv64")


def test_a_platform_never_equals_a_name_comparing_or_looking_one_up_by_name_raises():
    arm = PLATFORMS["linux/arm64"]
    assert arm == Platform.parse("linux/arm64") and arm != DEFAULT and arm != 3
    with pytest.raises(TypeError, match="compared with the string 'linux/arm64'"):
        arm == "linux/arm64"  # noqa: B015 - the comparison is the test
    with pytest.raises(TypeError):
        {arm: 1}.get("linux/arm64")  # a name looked up in a dict keyed by Platform
    with pytest.raises(TypeError):
        {("x", "linux/arm64"): 1}.get(("x", arm))  # and the other way round, inside a tuple key
    assert {("x", arm): 1}[("x", Platform.parse("linux/arm64"))] == 1


class _Holder(pydantic.BaseModel):
    platform: Platform
    platforms: list[Platform] = []


def test_a_pydantic_field_parses_a_name_and_serializes_the_name():
    got = _Holder.model_validate_json('{"platform": "linux/arm64", "platforms": ["linux/amd64"]}')
    assert got.platform is PLATFORMS["linux/arm64"] and got.platforms == [DEFAULT]
    assert _Holder(platform=DEFAULT).platform is DEFAULT
    assert got.model_dump_json() == '{"platform":"linux/arm64","platforms":["linux/amd64"]}'
    assert got.model_dump() == {"platform": "linux/arm64", "platforms": ["linux/amd64"]}


@pytest.mark.parametrize("value", ["linux/s390x", 3, None, {"name": "linux/amd64"}])
def test_a_pydantic_field_refuses_what_is_not_a_supported_name(value):
    with pytest.raises(pydantic.ValidationError, match="is not a platform"):
        _Holder.model_validate({"platform": value})
