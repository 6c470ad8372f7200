"""MDHA: multi-DConv-head attention (Primer, So et al. 2021, arXiv 2109.08668, §2; attention.md, MDHA)."""

from __future__ import annotations

from torch import nn

from attnbench.attention._common import (QKVO_PARTS, CausalDepthwiseConv, HeadSharedConv, attend, convolved_qkv,
                                         init_linear, labml_convolved_qkv, merge_heads, saved_activations, scale_for,
                                         split_heads, with_memory)
from attnbench.config import AttnConfig


class MDHA(nn.Module):
    paper = "So et al. 2021 (Primer), arXiv 2109.08668"
    summary = "MHA plus a causal depth-wise convolution (width 3) after each of the Q, K and V projections."
    has_positions = False
    has_reference = True
    settings = ("conv_width", "flavour")
    param_parts = QKVO_PARTS
    paper_figures = {"acc": 0.557}  # in the RCMHA paper (Sugiharto et al. 2023; attention.md, RCMHA)

    def __init__(self, cfg: AttnConfig):
        super().__init__()
        self.cfg = cfg
        C, labml = cfg.n_heads * cfg.head_dim, cfg.flavour == "labml"
        b = cfg.bias or labml  # labml's MultiDConvHeadAttention: MultiHeadAttention's biases on Q, K, V and O
        self.q = nn.Linear(cfg.d_model, C, bias=b)
        self.k = nn.Linear(cfg.d_model, C, bias=b)
        self.v = nn.Linear(cfg.d_model, C, bias=b)
        self.o = nn.Linear(C, cfg.d_model, bias=b)
        if labml:  # PyTorch's initialisation; one kernel per head channel, shared by the heads, with a bias
            self.q_conv, self.k_conv, self.v_conv = (HeadSharedConv(cfg.head_dim, cfg.n_heads, cfg.conv_width)
                                                     for _ in range(3))
            return
        init_linear(self.q, self.k, self.v, self.o)
        self.q_conv = CausalDepthwiseConv(C, cfg.conv_width)
        self.k_conv = CausalDepthwiseConv(C, cfg.conv_width)
        self.v_conv = CausalDepthwiseConv(C, cfg.conv_width)

    @staticmethod
    def closed_form(cfg: AttnConfig) -> dict[str, int]:
        D, C, labml = cfg.d_model, cfg.n_heads * cfg.head_dim, cfg.flavour == "labml"
        b = int(cfg.bias or labml)
        conv = HeadSharedConv.count(cfg.head_dim, cfg.conv_width) if labml else C * cfg.conv_width
        return {"qkv": 3 * (D * C + b * C), "out": C * D + b * D, "other": 3 * conv}

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
        if self.cfg.flavour == "labml":
            q, k, v = labml_convolved_qkv(self, x, h, impl)  # q [B, T, C]; k, v [B, L, C]
            y = attend(impl, split_heads(q, nh), split_heads(k, nh), split_heads(v, nh),
                       scale_for(self.cfg.head_dim), self.cfg.dropout, self.training)
            return self.o(merge_heads(y))
        q, k, v = convolved_qkv(self, h, impl)  # [B, L, C] each
        # Queries are convolved over [mem; x] too, so the first positions see the true previous tokens. Sliced
        # only with memory: even a full slice costs its backward a zero-filled copy of dq.
        q = q[:, -T:] if q.shape[1] > T else q  # [B, T, C]
        y = attend(impl, split_heads(q, nh), split_heads(k, nh), split_heads(v, nh), scale_for(self.cfg.head_dim),
                   self.cfg.dropout, self.training)
        return self.o(merge_heads(y))
