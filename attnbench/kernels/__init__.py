"""Hand-written GPU kernels (Triton), each optional: imported lazily, with a PyTorch fallback. The helpers below
are shared by the kernel modules; none of them imports triton unless asked whether it can."""

from __future__ import annotations

import functools
import os

import torch


def interpreting() -> bool:
    """TRITON_INTERPRET=1: kernels run on CPU tensors through Triton's interpreter (the tests do so)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.cache
def triton_importable() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def available(x: torch.Tensor) -> bool:
    """True when a Triton path can run on x: triton importable and x on CUDA (or the interpreter is on)."""
    return (x.is_cuda or interpreting()) and triton_importable()


# Fast paths that took their PyTorch path inside torch.func.vmap in this process (a stacked training group,
# training/members.py): the engine clears it before a group and writes it into the group's records.
STACKED_FALLBACKS: set[str] = set()


def batched(x: torch.Tensor, what: str) -> bool:
    """True when x is a member-batched tensor inside torch.func.vmap, where `what` (a Triton kernel or a custom
    autograd Function, neither with a batching rule) cannot run: the caller takes its PyTorch path, noted here."""
    if torch._C._functorch.is_batchedtensor(x):
        STACKED_FALLBACKS.add(what)
        return True
    return False


def cdiv(a: int, b: int) -> int:
    return -(-a // b)
