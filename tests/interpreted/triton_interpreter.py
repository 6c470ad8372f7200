"""Set-up shared by the test modules that run Triton kernels on CPU through Triton's interpreter.

These modules run only in a process of their own that starts with TRITON_INTERPRET=1 (tests/test_interpreted.py
starts it; tests/conftest.py keeps this folder out of the main collection). In the main pytest process the
interpreter must never be switched on: it patches `triton.language` for the whole process, and a GPU machine's
compiled kernels in later tests then failed on a Triton assertion (issue 14)."""

import os

import pytest


def require() -> None:
    """Skip the calling module unless this process was started with TRITON_INTERPRET=1 (triton reads it when it
    decorates a kernel), and when triton is not installed (CI)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("Triton interpreter tests run in their own process: python -m pytest tests/test_interpreted.py",
                    allow_module_level=True)
    pytest.importorskip("triton")
