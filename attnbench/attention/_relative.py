"""Transformer-XL relative positional scoring, shared by RMHA and RCMHA (attention.md, RMHA).

Score for query i (absolute position i' = M + i in [mem; x]) and key j, both forms scaled by 1/√d:

- sinusoid (Transformer-XL, Dai et al. 2019, §3.3, the A^rel equation):
      A[i,j] = (q_i + u)·k_j + (q_i + v)·(W_R · R[i'−j]),   R[p] = [sin(pω); cos(pω)]
- learned (the RCMHA authors' labml code):
      A[i,j] = (q_i + u)·k_j + q_i·P[j−i'] + S[j−i']

Three computations of the same function:
- `reference`: the paper's code, materialising [B, nh, T, L] score tensors with the relative shift;
- `fast` (sinusoid only): the angle-difference identity of attention.md ("A fast exact path exists"):
      (q_i+v)·W_R R[i'−j] = Q'_i · K'_j,  a = W_Rᵀ(q_i+v) = [a_s; a_c],
      Q'_i = [a_s ⊙ sin(i'ω) + a_c ⊙ cos(i'ω); a_c ⊙ sin(i'ω) − a_s ⊙ cos(i'ω)],  K'_j = [cos(jω); sin(jω)]
  so the whole score is one dot product of [q_i+u; Q'_i] and [k_j; K'_j], and a fused causal kernel
  (scaled_dot_product_attention) computes attention in O(T) memory; its QK width is d + d_R.
  On CUDA the prologue building both sides is one Triton kernel each way (attnbench/kernels/relpos_prologue.py);
  `augment` below is the CPU path and the kernel's oracle.
- the learned form has no fused path: `fast` runs the reference computation for it.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from attnbench.attention._common import attend_fast, attend_reference, rel_shift, sinusoid, sinusoid_freqs
from attnbench.config import AttnConfig
from attnbench.errors import AttnbenchError


class RelativePositions(nn.Module):
    """The positional parameters of one relative attention and the attention computed with them."""

    def __init__(self, cfg: AttnConfig):
        super().__init__()
        self.cfg = cfg
        nh, hs = cfg.n_heads, cfg.head_dim
        self.u = nn.Parameter(torch.zeros(nh, hs))  # content bias (Transformer-XL's r_w_bias)
        if cfg.pos == "sinusoid":
            self.w_r = nn.Linear(cfg.d_pos, nh * hs, bias=False)  # W_R: d_R -> n·d
            nn.init.normal_(self.w_r.weight, std=0.02)
            self.v = nn.Parameter(torch.zeros(nh, hs))  # position bias (r_r_bias)
        else:
            self.p_table = nn.Parameter(torch.zeros(2 * cfg.max_rel, nh, hs))  # P, labml key_pos_embeddings
            self.s_table = nn.Parameter(torch.zeros(2 * cfg.max_rel, nh))  # S, labml key_pos_bias

    @staticmethod
    def closed_form(cfg: AttnConfig) -> int:
        nh, hs = cfg.n_heads, cfg.head_dim
        if cfg.pos == "sinusoid":
            return cfg.d_pos * nh * hs + 2 * nh * hs  # W_R, u, v
        return 2 * cfg.max_rel * nh * hs + 2 * cfg.max_rel * nh + nh * hs  # P, S, u

    @staticmethod
    def path_config(cfg: AttnConfig) -> AttnConfig:
        """cfg with impl naming the path that runs: the learned form has no fused path, its `fast` is the reference."""
        return replace(cfg, impl="reference") if cfg.pos == "learned" else cfg

    @staticmethod
    def activation_estimate(cfg: AttnConfig, batch: int, seq_len: int, dtype_bytes: int) -> dict[str, int]:
        """Bytes kept beyond MHA's: the reference path keeps a second B·n·T² score tensor and the biased queries;
        the fast (sinusoid) path the augmented query and key of its fused kernel, B·T·n·(d+d_R) each."""
        B, T, n, d = batch, seq_len, cfg.n_heads, cfg.head_dim
        if cfg.impl == "reference":
            return {"position scores B*n*T^2, q+u, q+v": (B * n * T * T + 2 * B * T * n * d) * dtype_bytes}
        return {"augmented q, k B*T*n*(d+d_R) each": 2 * B * T * n * (d + cfg.d_pos) * dtype_bytes}

    def forward(self, q, k, v, scale: float, dropout: float, training: bool, impl: str):
        """q [B, nh, T, hs]; k, v [B, nh, L, hs] over [mem; x] -> [B, nh, T, hs]."""
        if self.cfg.pos == "learned" and k.shape[-2] > self.cfg.max_rel:
            raise AttnbenchError(f"memory + segment length {k.shape[-2]} exceeds the learned relative table "
                                 f"(max-rel {self.cfg.max_rel})")
        if impl == "fast" and self.cfg.pos == "sinusoid":
            return self.fast(q, k, v, scale, dropout, training)
        return self.reference(q, k, v, scale, dropout, training)

    def _bd_columns(self, q: torch.Tensor, L: int) -> torch.Tensor:
        """Positional scores before the shift: column c is distance L−1−c. [B, nh, T, L]."""
        nh, hs = self.cfg.n_heads, self.cfg.head_dim
        if self.cfg.pos == "sinusoid":
            dist = torch.arange(L - 1, -1, -1, device=q.device)
            r = self.w_r(sinusoid(dist, self.cfg.d_pos).to(q.dtype)).view(L, nh, hs)  # W_R R[p]
            return torch.einsum("bhid,jhd->bhij", q + self.v[:, None].to(q.dtype), r)
        # labml rows: index max_rel + (j − i'), i.e. distance p = i' − j sits at row max_rel − p.
        rows = slice(self.cfg.max_rel - L + 1, self.cfg.max_rel + 1)  # distances L−1 .. 0
        bd = torch.einsum("bhid,jhd->bhij", q, self.p_table[rows].to(q.dtype))
        return bd + self.s_table[rows].to(q.dtype).t()[None, :, None, :]

    def reference(self, q, k, v, scale, dropout, training):
        L = k.shape[-2]
        bd = rel_shift(self._bd_columns(q, L))  # bd[..., i, j] = positional score at distance i' − j
        return attend_reference(q + self.u[:, None].to(q.dtype), k, v, scale, dropout, training, bias=bd * scale)

    def fast(self, q, k, v, scale, dropout, training):
        """On CUDA with triton: attnbench.kernels.relpos_prologue builds [q+u; Q'] and [k; K'] in one kernel each way
        (the eager `augment` is ~20 small kernels: an H100, B=4, nh=16, hs=d_R=64, T=4096, bf16, fwd+bwd: rmha
        1.95x mha, of which SDPA at QK width 128 is 1.39x). Elsewhere the eager `augment`."""
        from attnbench.kernels import batched
        from attnbench.kernels import relpos_prologue as kernel

        w_r, M = self.w_r.weight, k.shape[-2] - q.shape[-2]
        fused = kernel.supported(q, k, w_r) and not batched(q, "relpos_prologue (Triton): eager augment")
        prologue = kernel.augment if fused else augment
        q_aug, k_aug = prologue(q, k, self.u, self.v, w_r, M)
        return attend_fast(q_aug, k_aug, v, scale, dropout, training)


def augment(q, k, u, v, w_r, M: int):
    """[q_i+u; Q'_i] and [k_j; K'_j] of the identity in the module docstring. q [B,nh,T,hs], k [B,nh,L,hs],
    w_r [nh·hs, d_R]; query i sits at absolute position M + i.

    Eager, in the input's dtype, with broadcasting matmuls and one concatenation per side: measured on an H100
    (scripts/variants_gpu_probe.py) this beat a float32 prologue and torch.compile of it, at T=4096 and 16384."""
    B, nh, T, hs = q.shape
    L, d_pos = k.shape[-2], w_r.shape[1]
    half = d_pos // 2
    w = w_r.view(nh, hs, d_pos)  # W_R per head
    # a = W_Rᵀ(q + v), the bias term W_Rᵀv computed once, in at least float32: [B, nh, T, d_R]
    acc = torch.promote_types(q.dtype, torch.float32)
    a = torch.matmul(q, w.to(q.dtype)) + torch.matmul(v.to(acc)[:, None], w.to(acc)).to(q.dtype)
    a_s, a_c = a[..., :half], a[..., half:]
    omega = sinusoid_freqs(d_pos, q.device)
    ang_q = torch.arange(M, L, device=q.device, dtype=torch.float64)[:, None] * omega  # i'·ω [T, d_R/2]
    ang_k = torch.arange(L, device=q.device, dtype=torch.float64)[:, None] * omega  # j·ω [L, d_R/2]
    sin_q, cos_q = ang_q.sin().to(q.dtype), ang_q.cos().to(q.dtype)
    k_pos = torch.cat([ang_k.cos(), ang_k.sin()], dim=-1).to(q.dtype)  # K' [L, d_R]
    q_aug = torch.cat([q + u[:, None].to(q.dtype), a_s * sin_q + a_c * cos_q, a_c * sin_q - a_s * cos_q], dim=-1)
    k_aug = torch.cat([k, k_pos.expand(B, nh, L, d_pos)], dim=-1)  # [B, nh, L, hs + d_R]
    return q_aug, k_aug  # q_aug: [B, nh, T, hs + d_R]
