"""Set-up shared by the test modules that run Triton kernels on CPU through Triton's interpreter."""

import os

import pytest


def require(gpu_script: str) -> None:
    """Import triton with TRITON_INTERPRET=1 (triton reads it when it decorates a kernel), then put the variable back
    so that other test modules of the session (torch.compile on a GPU machine) do not run interpreted; the
    `interpret` fixture turns it on again while the calling module's tests run. Skips the calling module when triton
    is not installed (CI) and on a machine with a GPU, where torch may have imported triton before the variable was
    set (one case failed so on an H100 with triton 3.6): there `gpu_script` checks the compiled kernels."""
    before = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        pytest.importorskip("triton")
    finally:
        if before is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = before
    import torch

    if torch.cuda.is_available():
        pytest.skip(f"interpreter tests run on CPU-only machines; on a GPU use {gpu_script}", allow_module_level=True)


@pytest.fixture(autouse=True)
def interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
