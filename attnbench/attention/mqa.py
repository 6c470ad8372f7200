"""MQA: multi-query attention (Shazeer 2019, arXiv 1911.02150; attention.md, Baselines): one K/V head shared by
all n query heads, i.e. GQA with g = 1."""

from __future__ import annotations

from attnbench.attention.gqa import GQA
from attnbench.config import AttnConfig


class MQA(GQA):
    paper = "Shazeer 2019, arXiv 1911.02150"
    summary = "Multi-query attention: one K/V head shared by all query heads."
    settings = ()  # one K/V head whatever kv_heads says

    @staticmethod
    def kv_heads(cfg: AttnConfig) -> int:
        return 1

    @staticmethod
    def degenerate(cfg: AttnConfig) -> None:
        return None  # one K/V head is what MQA is, not a degenerate setting of it
