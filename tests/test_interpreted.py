"""The Triton kernels' interpreter tests (tests/interpreted/), each module in a fresh Python process started with
TRITON_INTERPRET=1 and no visible GPU. Isolated because the interpreter patches `triton.language` for its whole
process: run inside this one, it broke the compiled kernels of the GPU tests that came after (issue 14).
Skipped when triton is not installed (CI)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
MODULES = sorted(p.name for p in (HERE / "interpreted").glob("test_*.py"))


def test_the_folder_holds_the_interpreter_modules():
    assert {"test_causal_conv_kernel.py", "test_relpos_prologue.py"} <= set(MODULES)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed (CI)")
@pytest.mark.parametrize("module", MODULES)
def test_interpreted_module_passes_in_its_own_process(module):
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))}
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider", "-rs",
                        str(HERE / "interpreted" / module)], cwd=HERE.parent, env=env, capture_output=True,
                       text=True, timeout=900)
    tail = (p.stdout + p.stderr)[-4000:]
    assert p.returncode == 0, tail
    summary = p.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and "skipped" not in summary, tail


def test_the_main_process_never_interprets():
    """Nothing in this process switched the interpreter on (it would leak into compiled kernels)."""
    assert os.environ.get("TRITON_INTERPRET", "0") != "1"
