"""RMHA: relative multi-head attention (Transformer-XL, Dai et al. 2019, arXiv 1901.02860, §3.3;
attention.md, RMHA). The positional scoring lives in _relative.py, shared with RCMHA."""

from __future__ import annotations

from torch import nn

from attnbench.attention._common import (QKVO_PARTS, init_linear, merge_heads, project_qkv, saved_activations, scale_for,
                                         split_heads, with_memory)
from attnbench.attention._relative import RelativePositions
from attnbench.config import AttnConfig


class RMHA(nn.Module):
    paper = "Dai et al. 2019 (Transformer-XL), arXiv 1901.02860"
    summary = "MHA scored with Transformer-XL relative positions (u, v, W_R and a sinusoid); no absolute positions."
    has_positions = True
    has_reference = True
    settings = ("pos", "d_pos", "max_rel", "flavour")
    param_parts = QKVO_PARTS
    paper_figures = {"acc": 0.555}  # in the RCMHA paper (Sugiharto et al. 2023; attention.md, RCMHA)

    def __init__(self, cfg: AttnConfig):
        super().__init__()
        self.cfg = cfg
        C, labml = cfg.n_heads * cfg.head_dim, cfg.flavour == "labml"
        # labml's RelativeMultiHeadAttention: no bias on Q and K, one on V and O; PyTorch's initialisation
        self.q = nn.Linear(cfg.d_model, C, bias=cfg.bias)
        self.k = nn.Linear(cfg.d_model, C, bias=cfg.bias)
        self.v = nn.Linear(cfg.d_model, C, bias=cfg.bias or labml)
        self.o = nn.Linear(C, cfg.d_model, bias=cfg.bias or labml)
        if not labml:
            init_linear(self.q, self.k, self.v, self.o)
        self.rel = RelativePositions(cfg)

    @staticmethod
    def closed_form(cfg: AttnConfig) -> dict[str, int]:
        D, C, b = cfg.d_model, cfg.n_heads * cfg.head_dim, int(cfg.bias)
        vo = int(cfg.bias or cfg.flavour == "labml")
        return {"qkv": 3 * D * C + (2 * b + vo) * C, "out": C * D + vo * D, "other": RelativePositions.closed_form(cfg)}

    @staticmethod
    def core_heads(cfg: AttnConfig) -> int:
        return cfg.n_heads

    @staticmethod
    def activation_estimate(cfg: AttnConfig, batch: int, seq_len: int, dtype_bytes: int) -> dict[str, int]:
        cfg = RelativePositions.path_config(cfg)
        parts = saved_activations(cfg, batch, seq_len, dtype_bytes)
        return {**parts, **RelativePositions.activation_estimate(cfg, batch, seq_len, dtype_bytes)}

    def forward(self, x, mem=None):
        h = with_memory(x, mem)  # [B, L, D]
        nh = self.cfg.n_heads
        q, k, v = project_qkv(x, h, self.q, self.k, self.v, fused=self.cfg.impl != "reference")
        q, k, v = split_heads(q, nh), split_heads(k, nh), split_heads(v, nh)  # [B, nh, T|L, hs]
        y = self.rel(q, k, v, scale_for(self.cfg.head_dim), self.cfg.dropout, self.training, self.cfg.impl)
        return self.o(merge_heads(y))
