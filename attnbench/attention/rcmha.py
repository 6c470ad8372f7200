"""RCMHA: relative convolutional multi-head attention (Sugiharto et al. 2023, arXiv 2308.03429;
attention.md, RCMHA): RMHA with MDHA's causal depth-wise convolution on Q, K and V after their projections.
Its squared ReLU belongs to the FFN of the RCMHA model preset, not to the attention."""

from __future__ import annotations

from torch import nn

from attnbench.attention._common import (QKVO_PARTS, CausalDepthwiseConv, HeadSharedConv, convolved_qkv, init_linear,
                                         labml_convolved_qkv, merge_heads, saved_activations, scale_for, split_heads,
                                         with_memory)
from attnbench.attention._relative import RelativePositions
from attnbench.config import AttnConfig


class RCMHA(nn.Module):
    paper = "Sugiharto et al. 2023, arXiv 2308.03429"
    summary = "RMHA plus Primer's causal depth-wise convolution (width 3) on Q, K and V; relu² in the model's FFN."
    has_positions = True
    has_reference = True
    settings = ("conv_width", "pos", "d_pos", "max_rel", "flavour")
    param_parts = QKVO_PARTS
    # Sugiharto et al. 2023, Tiny Shakespeare (attention.md, RCMHA): accuracy, average GPU memory in the paper's
    # "GB" (it does not say 10^9 or 2^30 bytes), training time 2 h 02 min.
    paper_figures = {"acc": 0.572, "avg_memory_gb": 2.98, "train_time_s": 2 * 3600 + 2 * 60}

    def __init__(self, cfg: AttnConfig):
        super().__init__()
        self.cfg = cfg
        C, labml = cfg.n_heads * cfg.head_dim, cfg.flavour == "labml"
        # the authors' RelativeMultiHeadAttention: no bias on Q and K, one on V and O; PyTorch's initialisation
        self.q = nn.Linear(cfg.d_model, C, bias=cfg.bias)
        self.k = nn.Linear(cfg.d_model, C, bias=cfg.bias)
        self.v = nn.Linear(cfg.d_model, C, bias=cfg.bias or labml)
        self.o = nn.Linear(C, cfg.d_model, bias=cfg.bias or labml)
        if labml:  # one kernel per head channel, shared by the heads, with a bias
            self.q_conv, self.k_conv, self.v_conv = (HeadSharedConv(cfg.head_dim, cfg.n_heads, cfg.conv_width)
                                                     for _ in range(3))
        else:
            init_linear(self.q, self.k, self.v, self.o)
            self.q_conv = CausalDepthwiseConv(C, cfg.conv_width)
            self.k_conv = CausalDepthwiseConv(C, cfg.conv_width)
            self.v_conv = CausalDepthwiseConv(C, cfg.conv_width)
        self.rel = RelativePositions(cfg)

    @staticmethod
    def closed_form(cfg: AttnConfig) -> dict[str, int]:
        D, C, b = cfg.d_model, cfg.n_heads * cfg.head_dim, int(cfg.bias)
        labml = cfg.flavour == "labml"
        vo = int(cfg.bias or labml)
        conv = HeadSharedConv.count(cfg.head_dim, cfg.conv_width) if labml else C * cfg.conv_width
        other = 3 * conv + RelativePositions.closed_form(cfg)
        return {"qkv": 3 * D * C + (2 * b + vo) * C, "out": C * D + vo * D, "other": other}

    @staticmethod
    def core_heads(cfg: AttnConfig) -> int:
        return cfg.n_heads

    @staticmethod
    def activation_estimate(cfg: AttnConfig, batch: int, seq_len: int, dtype_bytes: int) -> dict[str, int]:
        """MHA's, plus the convolution inputs and the relative path's tensors; the fast prologue reads q back from
        q_aug, so the convolved q and k are not kept."""
        cfg = RelativePositions.path_config(cfg)
        parts = saved_activations(cfg, batch, seq_len, dtype_bytes)
        parts["conv inputs"] = parts["q,k,v"]
        parts.update(RelativePositions.activation_estimate(cfg, batch, seq_len, dtype_bytes))
        if cfg.impl != "reference":
            parts["minus the convolved q and k"] = -2 * batch * seq_len * cfg.n_heads * cfg.head_dim * dtype_bytes
        return parts

    def forward(self, x, mem=None):
        h = with_memory(x, mem)  # [B, L, D]
        T, nh, impl = x.shape[1], self.cfg.n_heads, self.cfg.impl
        if self.cfg.flavour == "labml":
            q, k, v = labml_convolved_qkv(self, x, h, impl)  # the query over the segment only: [B, T, C]
        else:
            q, k, v = convolved_qkv(self, h, impl)  # [B, L, C] each
            # convolved over [mem; x], queries of x kept; sliced only with memory (a full slice's backward copies dq)
            q = q[:, -T:] if q.shape[1] > T else q  # [B, T, C]
        y = self.rel(split_heads(q, nh), split_heads(k, nh), split_heads(v, nh), scale_for(self.cfg.head_dim),
                     self.cfg.dropout, self.training, impl)
        return self.o(merge_heads(y))
