"""The repository the tests run in: ``ROOT`` (one definition; the test folders import it)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Where the small test matrix's golden files and committed locks live.
GOLDEN_SMALL = ROOT / "tests" / "golden" / "small"


def seed_locks(images: Path, source: Path = GOLDEN_SMALL) -> Path:
    """Copy the locks under ``source`` (``<name>/requirements[.<arch>].lock``, ``<name>/apt.<arch>.lock``) into
    ``images``, and the base locks beside ``source`` (``bases/<key>.<arch>.lock``, where there are any) beside
    ``images``, as `builder lock` would have left them, so `builder render` and a build can run there.
    Returns ``images``."""
    for lock in [*source.glob("*/requirements*.lock"), *source.glob("*/apt.*.lock")]:
        (images / lock.parent.name).mkdir(parents=True, exist_ok=True)
        (images / lock.parent.name / lock.name).write_text(lock.read_text())
    for lock in source.parent.glob("bases/*.lock"):
        (images.parent / "bases").mkdir(parents=True, exist_ok=True)
        (images.parent / "bases" / lock.name).write_text(lock.read_text())
    return images
