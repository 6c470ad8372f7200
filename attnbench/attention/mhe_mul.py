"""MHE-MUL: multi-head embedding attention, multiplicative (Xue & Aletras 2023, arXiv 2310.07911; attention.md,
MHE): q_h = (x·W_q) ⊙ e^q_h, likewise k and v. Same parameters and fast paths as MHE-ADD (mhe_add.py's docstring);
only the combination differs: the broadcast product, its custom backward and the effective weight."""

from __future__ import annotations

import torch

from attnbench.attention.mhe_add import MHEAdd

FAST_PATH = "combine-qkv"  # the form MHEMul's fast path takes; one of mhe_add.FAST_PATHS


class MulHeads(torch.autograd.Function):
    """p [B, L, c, hs] ⊙ e [c, nh, hs] (attention.md, MHE-MUL) -> c tensors [B, nh, L, hs], views of one
    [B, L, c, nh, hs] buffer. Backward, per tensor, two GEMMs over g as an [R, nh·hs] matrix (R = B·L) with fp32
    accumulation and nothing full-size written: dp = g·E with E[(h, j), j'] = e_hj·δ_jj' (Σ_h g_h ⊙ e_h), and
    de_hj = (pᵀ·g)[j, (h, j)] (Σ_{B,L} g_h ⊙ p, the diagonal of an [hs, nh·hs] product)."""

    @staticmethod
    def forward(ctx, p, e):
        ctx.save_for_backward(p, e)
        y = p[:, :, :, None] * e  # [B, L, c, nh, hs]: one kernel
        return tuple(y[:, :, i].transpose(1, 2) for i in range(p.shape[2]))  # c x [B, nh, L, hs]

    @staticmethod
    def backward(ctx, *gs):
        p, e = ctx.saved_tensors
        B, L, c, hs = p.shape
        nh = e.shape[1]
        E = torch.diag_embed(e).to(gs[0].dtype)  # [c, nh, hs, hs]: E[i, h, j, j'] = e[i, h, j]·δ_jj'
        dp = p.new_empty(B, L, c, hs)
        de = e.new_empty(c, nh, hs)
        for i, g in enumerate(gs):
            G = g.transpose(1, 2).reshape(B * L, nh * hs)  # [R, nh·hs]; a view for SDPA's usual grad layouts
            torch.mm(G, E[i].view(nh * hs, hs), out=dp[:, :, i].view(B * L, hs))
            P = p[:, :, i].reshape(B * L, hs)  # [R, hs]
            de[i] = (P.t() @ G).view(hs, nh, hs).diagonal(dim1=0, dim2=2)  # [nh, hs]
        return dp, de


class MHEMul(MHEAdd):
    summary = "One shared Q/K/V projection of head width d times a learned per-head embedding."
    init_center = 1.0  # embeddings start around 1 with noise
    combine_heads = MulHeads

    @staticmethod
    def fast_path() -> str:
        return FAST_PATH

    @staticmethod
    def combine(p: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return p * e

    @staticmethod
    def effective_weight(W, b, e):
        """(x·W_c + b_c) ⊙ e_ch = x·(e_ch ⊙ W_c) + e_ch ⊙ b_c: W [c, hs, D], b [c, hs] | None, e [c, nh, hs] ->
        W_eff [c·nh·hs, D] (rows (c, h, j) = e_chj·W_c[j]), b_eff [c·nh·hs] | None."""
        W_eff = (e[..., None] * W[:, None]).reshape(-1, W.shape[-1])
        return W_eff, None if b is None else (e * b[:, None]).reshape(-1)
