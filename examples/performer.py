"""A causal Performer (Choromanski et al. 2021, "Rethinking Attention with Performers", arXiv 2009.14794) for attnbench,
adapted from lucidrains' performer-pytorch (pip install performer-pytorch; not an attnbench dependency).

    attnbench speed --attn mha,examples/performer.py:PerformerReLU --seq-len 1024,4096

Two classes:
- PerformerReLU: FAVOR+ with the ReLU kernel (the paper's "Performer-ReLU", §4 and Fig. 5), prefix sums over time:
  causal, so attnbench measures it.
- PerformerSoftmax: the positive random features that approximate softmax (the paper's default). performer-pytorch
  stabilises the key features with a maximum over the whole sequence (softmax_kernel, is_query=False), so a later
  token changes earlier outputs (lucidrains/performer-pytorch issue #82): attnbench refuses it as not causal.

Memory (Transformer-XL): [mem; x] is attended as one causal sequence and the outputs of x are kept. The random
projection is a buffer, not a parameter. No reference path (no fast-vs-reference check), no core_heads (its core is
not softmax attention: no FLOPs under attnbench's convention), no activation_estimate: those cells read n/a.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import torch
from torch import nn

with warnings.catch_warnings():  # its imports warn about distutils and torch.cuda.amp on recent versions
    warnings.simplefilter("ignore")
    from performer_pytorch import SelfAttention


class PerformerReLU(nn.Module):
    paper = "Choromanski et al. 2021 (Performer), arXiv 2009.14794; performer-pytorch"
    summary = "Causal linear attention with FAVOR+ ReLU random features (performer-pytorch's SelfAttention)."
    has_positions = False  # the model adds its absolute position embedding
    param_parts = {"qkv": ("attn.to_q", "attn.to_k", "attn.to_v"), "out": ("attn.to_out",)}
    generalized_attention = True  # ReLU kernel

    def __init__(self, cfg):
        super().__init__()
        with contextlib.redirect_stdout(io.StringIO()):  # without its CUDA extension it prints a notice
            self.attn = SelfAttention(dim=cfg.d_model, heads=cfg.n_heads, dim_head=cfg.d_model // cfg.n_heads,
                                      causal=True, dropout=cfg.dropout, qkv_bias=cfg.bias, attn_out_bias=cfg.bias,
                                      generalized_attention=self.generalized_attention)

    @staticmethod
    def closed_form(cfg) -> dict[str, int]:
        D, b = cfg.d_model, int(cfg.bias)
        return {"qkv": 3 * (D * D + b * D), "out": D * D + b * D, "other": 0}

    def forward(self, x: torch.Tensor, mem: torch.Tensor | None = None) -> torch.Tensor:
        if mem is None or mem.shape[1] == 0:
            return self.attn(x)
        return self.attn(torch.cat([mem.to(x.dtype), x], dim=1))[:, -x.shape[1]:]  # [B, T, D]


class PerformerSoftmax(PerformerReLU):
    summary = "Causal FAVOR+ with softmax random features (performer-pytorch); its key stabiliser looks ahead."
    generalized_attention = False
