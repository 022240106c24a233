"""The compatibility table: reading CUDA/cuDNN from resolved wheels, and the refresh's bookkeeping
(the resolver itself is replaced here; `builder compat refresh` runs the real one)."""

import pytest

from builder.matrix.platform import PLATFORMS
from builder.matrix import compat
from builder.matrix.inputs import ConfigError

AMD64, ARM64 = PLATFORMS["linux/amd64"], PLATFORMS["linux/arm64"]

TORCH_PINS = {"torch": "2.13.0", "nvidia-cuda-runtime": "13.0.96", "nvidia-cudnn-cu13": "9.20.0.48",
              "nvidia-nccl-cu13": "2.29.7", "sympy": "1.14.0"}


def test_gpu_entry_reads_cuda_and_cudnn_from_the_nvidia_wheels():
    entry = compat.gpu_entry(TORCH_PINS)
    assert (entry.cuda, entry.cudnn) == ("13.0", "9.20")
    assert entry.wheels == {"nvidia-cuda-runtime": "13.0.96", "nvidia-cudnn-cu13": "9.20.0.48",
                            "nvidia-nccl-cu13": "2.29.7"}


def test_gpu_entry_falls_back_to_the_cu_suffix_and_none_without_nvidia_wheels():
    assert compat.gpu_entry({"xgboost": "3.2.0", "nvidia-nccl-cu12": "2.32.3"}).cuda == "12"
    assert compat.gpu_entry({"onnxruntime-gpu": "1.31.1", "numpy": "2.4.6"}) is None


def test_requirement_and_package(root):
    table = compat.load(root / "compat.yaml")
    assert table.requirement("pytorch", "cpu", "2.13.0") == "torch==2.13.0+cpu"
    assert table.requirement("tensorflow", "gpu", "2.21.0") == "tensorflow[and-cuda]==2.21.0"
    assert table.package("tensorflow", "gpu") == "tensorflow"
    assert table.requirement("sklearn", "gpu", "1.9.1") is None


def test_refresh_keeps_packages_and_rewrites_versions(tmp_path, root, monkeypatch):
    path = tmp_path / "compat.yaml"
    path.write_text((root / "tests" / "fixtures" / "compat.yaml").read_text())
    calls = []

    def fake_compile(requirement: str, python: str, platform: str = AMD64):
        calls.append((requirement, python, platform))
        if requirement == "xgboost==3.2.0":
            return {"xgboost": "3.2.0", "nvidia-nccl-cu12": "2.40.0"} if platform == AMD64 else None
        if platform == ARM64:
            return {"scikit-learn": "1.9.1"} if python == "3.13" and requirement.startswith("scikit-learn") else None
        return {"scikit-learn": "1.9.1"} if python in ("3.12", "3.13") else None

    monkeypatch.setattr(compat, "_compile", fake_compile)
    compat.refresh(path, {"sklearn": ["1.9.1"], "xgboost": ["3.2.0"]}, log=lambda line: None)
    table = compat.load(path)
    assert table.packages["xgboost"]["gpu"].requirement == "xgboost"
    assert table.versions["sklearn"]["1.9.1"].python == ["3.12", "3.13"]
    assert table.versions["sklearn"]["1.9.1"].pythons(ARM64) == ["3.13"]
    assert table.versions["xgboost"]["3.2.0"].gpu.wheels == {"nvidia-nccl-cu12": "2.40.0"}
    assert table.versions["xgboost"]["3.2.0"].platforms == {}  # no arm64 wheels: no entry
    assert ("xgboost==3.2.0", "3.12", AMD64) in calls
    assert path.read_text().startswith("# compat.yaml")


def test_driver_floors_are_read_by_cuda_major(root):
    table = compat.load(root / "compat.yaml")
    assert table.driver_min("13.5") == table.driver_min("13") == table.drivers["13"]
    assert table.driver_min("12.9") == table.drivers["12"]
    assert table.driver_min("11.8") is None


@pytest.mark.parametrize("key", ["13.5", "x", "013", ""])
def test_a_driver_floor_not_keyed_by_a_cuda_major_is_refused(tmp_path, root, key):
    path = tmp_path / "compat.yaml"
    text = (root / "compat.yaml").read_text().replace("  '13': 580.65.06", f"  '{key}': 580.65.06")
    assert text != (root / "compat.yaml").read_text()
    path.write_text(text)
    with pytest.raises(ConfigError, match="drivers"):
        compat.load(path)


def test_refresh_keeps_the_hand_kept_driver_floors(tmp_path, root, monkeypatch):
    path = tmp_path / "compat.yaml"
    path.write_text((root / "tests" / "fixtures" / "compat.yaml").read_text() + "drivers: {'12': 525.60.13}\n")
    monkeypatch.setattr(compat, "_compile", lambda requirement, python, platform=AMD64: (
        {"xgboost": "3.2.0", "nvidia-nccl-cu12": "2.32.3"} if platform == AMD64 else None))
    compat.refresh(path, {"xgboost": ["3.2.0"]}, log=lambda line: None)
    assert compat.load(path).drivers == {"12": "525.60.13"}
    assert compat.DRIVERS_SOURCE in path.read_text()
