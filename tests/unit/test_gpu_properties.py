"""What the GPU smoke tests record (gpu.* JUnit properties) is read back strictly into the run's
report (builder.run.smoke.gpu_properties, builder.run.report.TestRecord.gpu): only the known keys,
only values of their grammar, and a GPU test's "verified-on: gpu" wins."""

import pytest
from pydantic import ValidationError

from builder.run import smoke
from builder.run.report import TestRecord


def _junit(tmp_path, *props: tuple[str, str]) -> object:
    body = "".join(f'<property name="{n}" value="{v}"/>' for n, v in props)
    path = tmp_path / "junit.xml"
    path.write_text(f'<testsuites><testsuite name="pytest"><properties>{body}</properties></testsuite></testsuites>')
    return path


def test_the_gpu_tests_properties_are_read(tmp_path):
    path = _junit(tmp_path, ("seconds_to_healthy", "1.5"), ("gpu.cuda", "13.5"), ("gpu.cudnn", "9.28.1"),
                  ("gpu.arch", "sm_75 sm_80 compute_90"), ("gpu.verified-on", "cpu"))
    assert smoke.gpu_properties(path) == {"cuda": "13.5", "cudnn": "9.28.1", "arch": "sm_75 sm_80 compute_90",
                                          "verified-on": "cpu"}


def test_a_passed_gpu_test_makes_it_gpu_verified_whatever_the_order(tmp_path):
    for order in ((("gpu.verified-on", "cpu"), ("gpu.verified-on", "gpu")),
                  (("gpu.verified-on", "gpu"), ("gpu.verified-on", "cpu"))):
        assert smoke.gpu_properties(_junit(tmp_path, *order))["verified-on"] == "gpu"


@pytest.mark.parametrize("name, value", [("gpu.cuda", "13.5; rm -rf /"), ("gpu.arch", "sm_80 &lt;b&gt;"),
                                         ("gpu.verified-on", "maybe"), ("gpu.colour", "13.5"), ("cuda", "13.5"),
                                         ("gpu.nccl", "2" * 500)])
def test_an_unknown_key_or_a_value_of_another_shape_is_left_out(tmp_path, name, value):
    assert smoke.gpu_properties(_junit(tmp_path, (name, value))) == {}


def test_a_missing_or_broken_file_gives_nothing(tmp_path):
    assert smoke.gpu_properties(tmp_path / "none.xml") == {}
    (tmp_path / "half.xml").write_text("<testsuites><testsuite><properties><property name=")
    assert smoke.gpu_properties(tmp_path / "half.xml") == {}


def test_the_report_refuses_gpu_facts_read_back_out_of_shape():
    ok = {"outcome": "1 passed", "seconds": 1.0, "log": "x", "gpu": {"cuda": "12.9", "verified-on": "gpu"}}
    assert TestRecord.model_validate(ok).gpu == {"cuda": "12.9", "verified-on": "gpu"}
    for bad in ({"cuda": "12.9 | x"}, {"colour": "12.9"}, {"arch": "sm_80\nx"}):
        with pytest.raises(ValidationError):
            TestRecord.model_validate({**ok, "gpu": bad})
