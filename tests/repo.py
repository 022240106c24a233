"""The repository the tests run in: ``ROOT`` (one definition; the test folders import it)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
