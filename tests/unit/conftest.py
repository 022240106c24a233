from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "tests" / "fixtures" / "matrix-small.yaml"


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def small_matrix_data() -> dict:
    """The small fixture matrix as a dict, for tests that mutate it."""
    return yaml.safe_load(SMALL.read_text())
