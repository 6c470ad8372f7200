"""MDHA: multi-DConv-head attention (Primer, So et al. 2021, arXiv 2109.08668, §2; attention.md, MDHA)."""

from __future__ import annotations

from torch import nn

from attnbench.attention._common import (QKVO_PARTS, CausalDepthwiseConv, attend, convolved_qkv, init_linear,
                                         merge_heads, saved_activations, scale_for, split_heads, with_memory)
from attnbench.config import AttnConfig


class MDHA(nn.Module):
    paper = "So et al. 2021 (Primer), arXiv 2109.08668"
    summary = "MHA plus a causal depth-wise convolution (width 3) after each of the Q, K and V projections."
    has_positions = False
    has_reference = True
    settings = ("conv_width",)
    param_parts = QKVO_PARTS
    paper_figures = {"acc": 0.557}  # in the RCMHA paper (Sugiharto et al. 2023; attention.md, RCMHA)

    def __init__(self, cfg: AttnConfig):
        super().__init__()
        self.cfg = cfg
        C = cfg.n_heads * cfg.head_dim
        self.q = nn.Linear(cfg.d_model, C, bias=cfg.bias)
        self.k = nn.Linear(cfg.d_model, C, bias=cfg.bias)
        self.v = nn.Linear(cfg.d_model, C, bias=cfg.bias)
        self.o = nn.Linear(C, cfg.d_model, bias=cfg.bias)
        init_linear(self.q, self.k, self.v, self.o)
        self.q_conv = CausalDepthwiseConv(C, cfg.conv_width)
        self.k_conv = CausalDepthwiseConv(C, cfg.conv_width)
        self.v_conv = CausalDepthwiseConv(C, cfg.conv_width)

    @staticmethod
    def closed_form(cfg: AttnConfig) -> dict[str, int]:
        D, C, b = cfg.d_model, cfg.n_heads * cfg.head_dim, int(cfg.bias)
        return {"qkv": 3 * (D * C + b * C), "out": C * D + b * D, "other": 3 * C * cfg.conv_width}

    @staticmethod
    def core_heads(cfg: AttnConfig) -> int:
        return cfg.n_heads

    @staticmethod
    def activation_estimate(cfg: AttnConfig, batch: int, seq_len: int, dtype_bytes: int) -> dict[str, int]:
        """MHA's, plus the convolution inputs (a second Q, K, V)."""
        parts = saved_activations(cfg, batch, seq_len, dtype_bytes)
        parts["conv inputs"] = parts["q,k,v"]
        return parts

    def forward(self, x, mem=None):
        h = with_memory(x, mem)  # [B, L, D]
        T, nh, impl = x.shape[1], self.cfg.n_heads, self.cfg.impl
        q, k, v = convolved_qkv(self, h, impl)  # [B, L, C] each
        # Queries are convolved over [mem; x] too, so the first positions see the true previous tokens. Sliced
        # only with memory: even a full slice costs its backward a zero-filled copy of dq.
        q = q[:, -T:] if q.shape[1] > T else q  # [B, T, C]
        y = attend(impl, split_heads(q, nh), split_heads(k, nh), split_heads(v, nh), scale_for(self.cfg.head_dim),
                   self.cfg.dropout, self.training)
        return self.o(merge_heads(y))
