"""GQA: grouped-query attention (Ainslie et al. 2023, arXiv 2305.13245; attention.md, Baselines): g K/V heads,
each shared by n/g query heads. The default g is the divisor of n with 1 < g < n whose group size n/g is nearest 4
(config.default_kv_heads: 6 heads -> 2, 8 -> 2, 16 -> 4); g = 1 is MQA and g = n is MHA, which `degenerate` names."""

from __future__ import annotations

from torch import nn

from attnbench.attention._common import (QKVO_PARTS, attend_fast, attend_reference, init_linear, merge_heads,
                                         project_qkv, saved_activations, scale_for, split_heads, with_memory)
from attnbench.config import AttnConfig, default_kv_heads


class GQA(nn.Module):
    paper = "Ainslie et al. 2023, arXiv 2305.13245"
    summary = "Grouped-query attention: g K/V heads (--kv-heads), each shared by n/g query heads."
    has_positions = False
    has_reference = True
    settings = ("kv_heads",)
    param_parts = QKVO_PARTS

    @staticmethod
    def kv_heads(cfg: AttnConfig) -> int:
        return cfg.kv_heads

    @staticmethod
    def degenerate(cfg: AttnConfig) -> str | None:
        """One line when this setting makes GQA another attention (g = 1: MQA, g = n: MHA), else None."""
        n, g = cfg.n_heads, cfg.kv_heads
        if default_kv_heads(n) == 1 and g == 1:
            return f"gqa with {n} heads is MQA: no divisor 1 < g < {n}"
        if g == 1:
            return "gqa with kv-heads 1 is MQA"
        if g == n:
            return f"gqa with kv-heads = heads ({n}) is MHA"
        return None

    @staticmethod
    def core_heads(cfg: AttnConfig) -> int:
        return cfg.n_heads

    @classmethod
    def activation_estimate(cls, cfg: AttnConfig, batch: int, seq_len: int, dtype_bytes: int) -> dict[str, int]:
        return saved_activations(cfg, batch, seq_len, dtype_bytes, kv_heads=cls.kv_heads(cfg))

    def __init__(self, cfg: AttnConfig):
        super().__init__()
        self.cfg = cfg
        D, C, g = cfg.d_model, cfg.n_heads * cfg.head_dim, self.kv_heads(cfg)
        self.q = nn.Linear(D, C, bias=cfg.bias)
        self.k = nn.Linear(D, g * cfg.head_dim, bias=cfg.bias)
        self.v = nn.Linear(D, g * cfg.head_dim, bias=cfg.bias)
        self.o = nn.Linear(C, D, bias=cfg.bias)
        init_linear(self.q, self.k, self.v, self.o)

    @classmethod
    def closed_form(cls, cfg: AttnConfig) -> dict[str, int]:
        D, C, b = cfg.d_model, cfg.n_heads * cfg.head_dim, int(cfg.bias)
        G = cls.kv_heads(cfg) * cfg.head_dim
        return {"qkv": D * C + b * C + 2 * (D * G + b * G), "out": C * D + b * D, "other": 0}

    def forward(self, x, mem=None):
        h = with_memory(x, mem)
        nh, g = self.cfg.n_heads, self.kv_heads(self.cfg)
        q, k, v = project_qkv(x, h, self.q, self.k, self.v, fused=self.cfg.impl != "reference")
        q, k, v = split_heads(q, nh), split_heads(k, g), split_heads(v, g)  # [B, nh|g, T|L, hs]
        scale = scale_for(self.cfg.head_dim)
        if self.cfg.impl == "reference":
            # query head i uses K/V head i // (n/g): repeat each K/V head n/g times
            k, v = k.repeat_interleave(nh // g, dim=1), v.repeat_interleave(nh // g, dim=1)
            y = attend_reference(q, k, v, scale, self.cfg.dropout, self.training)
        else:
            y = attend_fast(q, k, v, scale, self.cfg.dropout, self.training, enable_gqa=g != nh)
        return self.o(merge_heads(y))
