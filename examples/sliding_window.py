"""Causal sliding-window attention, written against attnbench's attention contract (docs/contract.md) from outside
the package: it imports nothing from attnbench.

Query i (absolute position, memory included) attends to the `window` most recent keys, i − window < j <= i
(Beltagy et al. 2020, Longformer, arXiv 2004.05150, §3.1 "Sliding Window"; Mistral 7B's attention, Jiang et al. 2023,
arXiv 2310.06825, §2). Two computations of the same function:
- reference (cfg.impl == "reference"): the [T, L] scores under the band mask, written out: O(T·L) memory;
- fast: queries in blocks of S, each block against the S + window − 1 keys it can see, one fused
  scaled_dot_product_attention call over all blocks: O(T·window) memory and work.

    attnbench params --attn mha,examples/sliding_window.py:SlidingWindow
    attnbench speed --attn mha,examples/sliding_window.py:SlidingWindow --seq-len 1024,4096
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SlidingWindow(nn.Module):
    paper = "Beltagy et al. 2020 (Longformer), arXiv 2004.05150, §3.1"
    summary = "Causal sliding-window attention: each token attends to the `window` most recent tokens."
    has_positions = False  # the model adds its absolute position embedding
    has_reference = True  # built with impl="reference" it computes the same function, written out
    param_parts = {"qkv": ("q", "k", "v"), "out": ("o",)}
    window = 64  # keys each query sees, itself included (a knob of this attention alone: subclass to change it)

    def __init__(self, cfg):
        super().__init__()
        D = cfg.d_model
        self.n_heads, self.head_dim, self.dropout = cfg.n_heads, D // cfg.n_heads, cfg.dropout
        self.written_out = cfg.impl == "reference"
        self.q, self.k, self.v, self.o = (nn.Linear(D, D, bias=cfg.bias) for _ in range(4))

    @staticmethod
    def closed_form(cfg) -> dict[str, int]:
        D, b = cfg.d_model, int(cfg.bias)
        return {"qkv": 3 * (D * D + b * D), "out": D * D + b * D, "other": 0}

    def forward(self, x: torch.Tensor, mem: torch.Tensor | None = None) -> torch.Tensor:
        B, T, D = x.shape
        h = x if mem is None else torch.cat([mem.to(x.dtype), x], dim=1)  # [B, L, D], L = M + T
        nh, hs = self.n_heads, self.head_dim
        q = self.q(x).view(B, T, nh, hs).transpose(1, 2)  # [B, nh, T, hs]
        k, v = (f(h).view(B, -1, nh, hs).transpose(1, 2) for f in (self.k, self.v))  # [B, nh, L, hs]
        y = self.attend_reference(q, k, v) if self.written_out else self.attend_blocked(q, k, v)
        return self.o(y.transpose(1, 2).reshape(B, T, D))  # [B, T, D]

    def attend_reference(self, q, k, v):
        """softmax(q·kᵀ/√d + band mask)·v over every key: query i sits at absolute position M + i."""
        T, L = q.shape[-2], k.shape[-2]
        i = torch.arange(L - T, L, device=q.device)[:, None]
        j = torch.arange(L, device=q.device)[None, :]
        allowed = (j <= i) & (j > i - self.window)  # [T, L]
        att = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # [B, nh, T, L]
        att = F.dropout(att.masked_fill(~allowed, float("-inf")).softmax(-1), self.dropout, self.training)
        return att @ v

    def attend_blocked(self, q, k, v):
        """The same, by blocks: block b holds queries M + bS .. M + bS + S − 1, which see keys M + bS − (w − 1) ..
        M + bS + S − 1. Keys are padded so that padded index p holds absolute position M − (w − 1) + p; padding
        (keys before position 0, queries after T) is masked or cut off."""
        B, nh, T, hs = q.shape
        L, w = k.shape[-2], self.window
        M, S = L - T, min(w, T)
        nb = -(-T // S)  # blocks
        left = w - 1 - M  # > 0: zeros before position 0; < 0: memory older than any window, dropped
        kp, vp = (F.pad(t[:, :, max(0, -left):], (0, 0, max(0, left), nb * S - T)) for t in (k, v))
        kb, vb = (t.unfold(2, S + w - 1, S).transpose(-1, -2) for t in (kp, vp))  # [B, nh, nb, S+w-1, hs]
        qb = F.pad(q, (0, 0, 0, nb * S - T)).view(B, nh, nb, S, hs)
        r = torch.arange(S, device=q.device)[:, None]  # query within its block
        c = torch.arange(S + w - 1, device=q.device)[None, :]  # key within its block's span
        first = torch.arange(nb, device=q.device)[:, None, None] * S + M - (w - 1)  # absolute position of c = 0
        allowed = (c >= r) & (c <= r + w - 1) & (first + c >= 0)  # [nb, S, S+w-1]
        y = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=allowed,
                                           dropout_p=self.dropout if self.training else 0.0)
        return y.reshape(B, nh, nb * S, hs)[:, :, :T]  # [B, nh, T, hs]
