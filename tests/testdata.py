"""Where the tests find Tiny Shakespeare: $ATTNBENCH_TEST_CORPUS, else shared/data/tinyshakespeare/input.txt in the
repository (what a copy of it on a GPU machine may carry) or in the nearest folder above it that has one (the team's
copy beside the main checkout, or above a worktree). Tests that need it are skipped, with this path in the reason,
when it is nowhere."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_TAIL = Path("shared", "data", "tinyshakespeare", "input.txt")


def _corpus() -> Path:
    if os.environ.get("ATTNBENCH_TEST_CORPUS"):
        return Path(os.environ["ATTNBENCH_TEST_CORPUS"])
    here = [d / _TAIL for d in (ROOT, *ROOT.parents)]
    return next((p for p in here if p.is_file()), ROOT.parent / _TAIL)


CORPUS = _corpus()
