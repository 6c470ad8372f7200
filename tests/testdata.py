"""Where the tests find Tiny Shakespeare: $ATTNBENCH_TEST_CORPUS, else shared/data/tinyshakespeare/input.txt beside
the repository (the team's copy next to the main checkout) or inside it (what a copy of the repository on a GPU
machine may carry). Tests that need it are skipped, with this path in the reason, when it is nowhere (as in a
worktree under /work/wt, whose landing runs stay short that way)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_TAIL = Path("shared", "data", "tinyshakespeare", "input.txt")


def _corpus() -> Path:
    if os.environ.get("ATTNBENCH_TEST_CORPUS"):
        return Path(os.environ["ATTNBENCH_TEST_CORPUS"])
    here = [ROOT.parent / _TAIL, ROOT / _TAIL]
    return next((p for p in here if p.is_file()), here[0])


CORPUS = _corpus()
