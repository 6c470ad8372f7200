"""What every cheat here shares: one-head softmax attention over [mem; x] whose boolean mask the cheat bends
(docs/contract.md's contract: Class(AttnConfig), forward(x, mem=None) -> x's shape)."""

import torch
import torch.nn.functional as F
from torch import nn


class Masked(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x, mem=None):
        h = x if mem is None else torch.cat([mem, x], dim=1)
        D, T, L = x.shape[-1], x.shape[1], h.shape[1]
        q, (k, v) = self.qkv(x)[..., :D], self.qkv(h)[..., D:].chunk(2, dim=-1)
        return self.out(F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask(T, L, x.device)))

    def mask(self, T, L, device):
        """Query i (position M + i of [mem; x]) sees keys j <= M + i."""
        return torch.ones(T, L, dtype=torch.bool, device=device).tril(L - T)
