"""MHA: multi-head attention (Vaswani et al. 2017, eq. 1 and §3.2.2; attention.md, MHA)."""

from __future__ import annotations

from torch import nn

from attnbench.attention._common import (QKVO_PARTS, attend, init_linear, merge_heads, project_qkv, saved_activations,
                                         scale_for, split_heads, with_memory)
from attnbench.config import AttnConfig


class MHA(nn.Module):
    paper = "Vaswani et al. 2017, arXiv 1706.03762"
    summary = "Multi-head attention: n heads, each with its own Q/K/V projection of width d = D/n."
    has_positions = False
    has_reference = True
    settings = ("flavour",)
    param_parts = QKVO_PARTS
    # the RCMHA paper's Tiny Shakespeare accuracy for MHA (Sugiharto et al. 2023; attention.md, RCMHA)
    paper_figures = {"acc": 0.566}

    def __init__(self, cfg: AttnConfig):
        super().__init__()
        self.cfg = cfg
        C, b = cfg.n_heads * cfg.head_dim, MHA.biased(cfg)
        self.q = nn.Linear(cfg.d_model, C, bias=b)
        self.k = nn.Linear(cfg.d_model, C, bias=b)
        self.v = nn.Linear(cfg.d_model, C, bias=b)
        self.o = nn.Linear(C, cfg.d_model, bias=b)
        if cfg.flavour != "labml":  # labml keeps PyTorch's initialisation
            init_linear(self.q, self.k, self.v, self.o)

    @staticmethod
    def biased(cfg: AttnConfig) -> bool:
        """labml's MultiHeadAttention gives Q, K, V and O a bias (bias=True by default)."""
        return cfg.bias or cfg.flavour == "labml"

    @staticmethod
    def closed_form(cfg: AttnConfig) -> dict[str, int]:
        D, C, b = cfg.d_model, cfg.n_heads * cfg.head_dim, int(MHA.biased(cfg))
        return {"qkv": 3 * (D * C + b * C), "out": C * D + b * D, "other": 0}

    @staticmethod
    def core_heads(cfg: AttnConfig) -> int:
        return cfg.n_heads

    @staticmethod
    def activation_estimate(cfg: AttnConfig, batch: int, seq_len: int, dtype_bytes: int) -> dict[str, int]:
        return saved_activations(cfg, batch, seq_len, dtype_bytes)

    def forward(self, x, mem=None):
        h = with_memory(x, mem)  # [B, L, D]
        nh = self.cfg.n_heads
        q, k, v = project_qkv(x, h, self.q, self.k, self.v, fused=self.cfg.impl != "reference")
        q, k, v = split_heads(q, nh), split_heads(k, nh), split_heads(v, nh)  # [B, nh, T|L, hs]
        y = attend(self.cfg.impl, q, k, v, scale_for(self.cfg.head_dim), self.cfg.dropout, self.training)
        return self.o(merge_heads(y))  # [B, T, D]
