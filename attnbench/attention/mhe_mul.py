"""MHE-MUL: multi-head embedding attention, multiplicative (Xue & Aletras 2023, arXiv 2310.07911; attention.md,
MHE): q_h = (x·W_q) ⊙ e^q_h, likewise k and v. Same parameters and fast paths as MHE-ADD (mhe_add.py's docstring);
only the combination differs: the broadcast product, its custom backward and the effective weight."""

from __future__ import annotations

import torch

from attnbench.attention.mhe_add import MHEAdd, project_heads, project_heads_backward

FAST_PATH = "auto"  # one of mhe_add.FAST_PATHS, or "auto": by size (MHEMul.fast_path)
SMALL_ROWS = 8192  # "auto", eager calls: weight-qkv up to this many input rows B·L, combine-qkv above


class MulHeads(torch.autograd.Function):
    """q_h = (x·W_q + b_q) ⊙ e^q_h for every head h, and likewise k, v (attention.md, MHE-MUL), as one autograd
    node: apply(inp, emb, first, c, W_1..W_c, [b_1..b_c]) -> c tensors [B, nh, L, hs]. Backward, per tensor, two
    GEMMs over g as an [R, nh·hs] matrix (R = B·L), fp32 accumulation and nothing full-size written:
    dp = g·E with E[(h, j), j'] = e_hj·δ_jj' (that is Σ_h g_h ⊙ e_h), and de_hj = (pᵀ·g)[j, (h, j)] (that is
    Σ_{B,L} g_h ⊙ p, the diagonal blocks of an [hs, nh·hs] product); then the projection's two GEMMs."""

    @staticmethod
    def forward(ctx, inp, emb, first, n, *params):
        return project_heads(ctx, inp, emb, first, n, params, torch.mul)

    @staticmethod
    def backward(ctx, *gs):
        return project_heads_backward(ctx, gs, MulHeads.reduce_heads)

    @staticmethod
    def reduce_heads(gs, p, e, dp, de):
        B, L, c, hs = p.shape
        nh = e.shape[1]
        E = torch.diag_embed(e)  # [c, nh, hs, hs]: E[i, h, j, j'] = e[i, h, j]·δ_jj'
        M = p.new_empty(c, hs, nh * hs)
        for i, g in enumerate(gs):
            G = g.transpose(1, 2).reshape(B * L, nh * hs)  # [R, nh·hs]; a view for SDPA's usual grad layouts
            torch.mm(G, E[i].view(nh * hs, hs), out=dp[:, :, i].view(B * L, hs))
            torch.mm(p[:, :, i].reshape(B * L, hs).t(), G, out=M[i])  # [hs, nh·hs]
        de.copy_(M.view(c, hs, nh, hs).diagonal(dim1=1, dim2=3))  # [c, nh, hs]


class MHEMul(MHEAdd):
    summary = "One shared Q/K/V projection of head width d times a learned per-head embedding."
    init_center = 1.0  # embeddings start around 1 with noise
    combine_heads = MulHeads

    @staticmethod
    def fast_path(rows: int) -> str:
        """H100, bf16, D=1024, n=16, B=4 (scripts/mhe_gpu_probe.py, results/h100/probes/mhe-a1fa1c9.txt), eager
        calls, x mha at T = 1024 / 4096 / 16384: weight-qkv 0.96 / 1.03 / 1.00, combine-qkv 1.41 / 0.87 / 0.93.
        Launch-bound small inputs favour the fewer kernels of weight-qkv, large ones the cheaper projection of
        combine-qkv. Under CUDA-graph capture (train's graphed step, `speed --cuda-graph`) launches cost nothing
        on replay, so the path with the least GPU work, combine-qkv, is taken at every size."""
        if FAST_PATH == "auto":
            small = rows <= SMALL_ROWS and not (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing())
            return "weight-qkv" if small else "combine-qkv"
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
