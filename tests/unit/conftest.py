from pathlib import Path

import pytest
import yaml
from repo import ROOT
from yaml_dump import dump

SMALL = ROOT / "tests" / "fixtures" / "matrix-small.yaml"


@pytest.fixture(autouse=True)
def no_engine_line(monkeypatch):
    """Unit tests see no ``BUILDER_ENGINE`` (CI runs ``BUILDER_ENGINE=28.5 make test``): a test that
    wants a line sets it itself."""
    monkeypatch.delenv("BUILDER_ENGINE", raising=False)


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def small_matrix_data() -> dict:
    """The small fixture matrix as a dict, for tests that mutate it."""
    return yaml.safe_load(SMALL.read_text())



@pytest.fixture
def dump_yaml():
    """``dump_yaml(data) -> str``: YAML without aliases (anchors and ``*refs``), which loaders refuse."""
    return dump
