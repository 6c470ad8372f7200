"""MHE-MUL: multi-head embedding attention, multiplicative (Xue & Aletras 2023, arXiv 2310.07911; attention.md,
MHE): q_h = (x·W_q) ⊙ e^q_h, likewise k and v. Same parameters as MHE-ADD; only the combination differs."""

from __future__ import annotations

import torch

from attnbench.attention.mhe_add import MHEAdd


class MHEMul(MHEAdd):
    summary = "One shared Q/K/V projection of head width d times a learned per-head embedding."
    init_center = 1.0  # embeddings start around 1 with noise

    @staticmethod
    def combine(p: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return p * e
