"""Rewrite the golden files under tests/golden/ from the builder's current templates and renderers.

    python tests/update_golden.py      (or: make golden)

The unit tests only compare against these files; run this when a change to what they hold is
meant, then review `git diff tests/golden` before committing. Prints each file it changed.
"""

from __future__ import annotations

import sys
from pathlib import Path

# this checkout's builder (not another one a virtual environment may point at), and golden_files and
# repo as the tests import them
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

import golden_files as g  # noqa: E402

from builder import files  # noqa: E402
from builder.generate import render  # noqa: E402


def main() -> int:
    before = {p: p.read_bytes() for p in g.ROOT.joinpath("tests", "golden").rglob("*") if p.is_file()}
    render.write(g.rendered_small(), g.SMALL)  # the whole folder: files no longer rendered disappear
    files.write_atomic(g.SMALL_BAKE, g.bake_small())
    for example in g.EXAMPLES:
        files.write_atomic(g.extend_golden(example), g.extend_dockerfile(example))
    for stale in set(g.EXTEND.glob("*.Dockerfile")) - {g.extend_golden(e) for e in g.EXAMPLES}:
        stale.unlink()  # its example is gone
    after = {p: p.read_bytes() for p in g.ROOT.joinpath("tests", "golden").rglob("*") if p.is_file()}
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    for p in changed:
        print(f"{'removed' if p not in after else 'added' if p not in before else 'changed'}: {p.relative_to(g.ROOT)}")
    print(f"{len(changed)} golden file(s) changed" if changed else "golden files already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
