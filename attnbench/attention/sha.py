"""SHA: single-head attention of head width d = D/n (the MHE paper's baseline; attention.md, Baselines):
Q/K/V D -> d, W_o d -> D."""

from __future__ import annotations

from torch import nn

from attnbench.attention._common import (QKVO_PARTS, attend, init_linear, merge_heads, project_qkv, saved_activations,
                                         scale_for, split_heads, with_memory)
from attnbench.config import AttnConfig


class SHA(nn.Module):
    paper = "Xue & Aletras 2023, arXiv 2310.07911 (baseline)"
    summary = "Single-head attention of width d = D/n: the width of MHE's shared projections."
    has_positions = False
    has_reference = True
    settings = ()
    param_parts = QKVO_PARTS

    def __init__(self, cfg: AttnConfig):
        super().__init__()
        self.cfg = cfg
        D, hs = cfg.d_model, cfg.head_dim
        self.q = nn.Linear(D, hs, bias=cfg.bias)
        self.k = nn.Linear(D, hs, bias=cfg.bias)
        self.v = nn.Linear(D, hs, bias=cfg.bias)
        self.o = nn.Linear(hs, D, bias=cfg.bias)
        init_linear(self.q, self.k, self.v, self.o)

    @staticmethod
    def closed_form(cfg: AttnConfig) -> dict[str, int]:
        D, hs, b = cfg.d_model, cfg.head_dim, int(cfg.bias)
        return {"qkv": 3 * (D * hs + b * hs), "out": hs * D + b * D, "other": 0}

    @staticmethod
    def core_heads(cfg: AttnConfig) -> int:
        return 1

    @staticmethod
    def activation_estimate(cfg: AttnConfig, batch: int, seq_len: int, dtype_bytes: int) -> dict[str, int]:
        return saved_activations(cfg, batch, seq_len, dtype_bytes, heads=1)

    def forward(self, x, mem=None):
        h = with_memory(x, mem)
        q, k, v = project_qkv(x, h, self.q, self.k, self.v, fused=self.cfg.impl != "reference")
        q, k, v = split_heads(q, 1), split_heads(k, 1), split_heads(v, 1)  # [B, 1, T|L, hs]
        y = attend(self.cfg.impl, q, k, v, scale_for(self.cfg.head_dim), self.cfg.dropout, self.training)
        return self.o(merge_heads(y))
