"""MHE-ADD: multi-head embedding attention, additive (Xue & Aletras 2023, arXiv 2310.07911; attention.md, MHE):
one shared projection per Q, K, V of width d, plus one learned embedding per head and per Q/K/V:
q_h = x·W_q + e^q_h (likewise k, v); heads attended as in MHA, concatenated to n·d, then W_o."""

from __future__ import annotations

import torch
from torch import nn

from attnbench.attention._common import attend_fast, attend_reference, init_linear, merge_heads, scale_for, with_memory
from attnbench.config import AttnConfig


class MHEAdd(nn.Module):
    paper = "Xue & Aletras 2023, arXiv 2310.07911"
    summary = "One shared Q/K/V projection of head width d plus a learned per-head embedding, added."
    has_positions = False
    init_center = 0.0  # embeddings start around 0 with noise, so heads differ from the start

    def __init__(self, cfg: AttnConfig):
        super().__init__()
        self.cfg = cfg
        D, nh, hs = cfg.d_model, cfg.n_heads, cfg.head_dim
        self.q = nn.Linear(D, hs, bias=cfg.bias)
        self.k = nn.Linear(D, hs, bias=cfg.bias)
        self.v = nn.Linear(D, hs, bias=cfg.bias)
        self.o = nn.Linear(nh * hs, D, bias=cfg.bias)
        init_linear(self.q, self.k, self.v, self.o)
        self.emb = nn.Parameter(self.init_center + 0.1 * torch.randn(3, nh, hs))  # e^q, e^k, e^v per head

    @staticmethod
    def closed_form(cfg: AttnConfig) -> dict[str, int]:
        D, nh, hs, b = cfg.d_model, cfg.n_heads, cfg.head_dim, int(cfg.bias)
        # MHE paper's abstract: 3nd beyond single-head attention of width d (the embeddings count as Q/K/V).
        return {"qkv": 3 * (D * hs + b * hs) + 3 * nh * hs, "out": nh * hs * D + b * D, "other": 0}

    @staticmethod
    def combine(p: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return p + e

    def forward(self, x, mem=None):
        h = with_memory(x, mem)
        eq, ek, ev = (e.to(x.dtype)[None, :, None, :] for e in self.emb)  # [1, nh, 1, hs]
        sq, sk, sv = self.q(x)[:, None], self.k(h)[:, None], self.v(h)[:, None]  # shared: [B, 1, L, hs]
        scale, impl = scale_for(self.cfg.head_dim), self.cfg.impl
        if impl == "reference":
            heads = [attend_reference(self.combine(sq, eq[:, i:i + 1]), self.combine(sk, ek[:, i:i + 1]),
                                      self.combine(sv, ev[:, i:i + 1]), scale, self.cfg.dropout, self.training)
                     for i in range(self.cfg.n_heads)]  # one head at a time, written out
            y = torch.cat(heads, dim=1)
        else:
            y = attend_fast(self.combine(sq, eq), self.combine(sk, ek), self.combine(sv, ev), scale,
                            self.cfg.dropout, self.training)  # broadcast over heads, one fused call
        return self.o(merge_heads(y))
