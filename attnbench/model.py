"""A pre-LayerNorm decoder-only character language model whose attention comes from the registry (issue 4, Model).

embedding (+ learned absolute positions only when the attention has none of its own) -> N blocks -> final norm ->
output tied to the embedding. Optional Transformer-XL memory (Dai et al. 2019, §3.2): each block also receives the
detached inputs it saw in the previous segment, [B, M, D], and attends over [mem; x]
(attention.md, notation). Shapes: B batch, T segment, M memory, D width, V vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attnbench.config import ACTS, AttnConfig, ModelConfig
from attnbench.errors import AttnbenchError


def activation(name: str):
    """gelu, relu, or relu2 = relu(x)² (Primer, So et al. 2021, §2; attention.md, RCMHA)."""
    if name == "gelu":
        return F.gelu
    if name == "relu":
        return F.relu
    if name == "relu2":
        return lambda x: F.relu(x).square()
    raise AttnbenchError(f"activation must be one of {', '.join(ACTS)}, got {name!r}")


class FeedForward(nn.Module):
    def __init__(self, D: int, d_ff: int, act: str, dropout: float):
        super().__init__()
        self.up, self.down = nn.Linear(D, d_ff), nn.Linear(d_ff, D)
        self.act, self.drop = activation(act), nn.Dropout(dropout)

    def forward(self, x):
        return self.drop(self.down(self.act(self.up(x))))


class Block(nn.Module):
    """x + attn(LN(x) over [LN(mem); LN(x)]), then x + FFN(LN(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        from attnbench.attention import build

        D = cfg.attn_cfg.d_model
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.attn = build(cfg.attn, cfg=cfg.attn_cfg)
        self.ffn = FeedForward(D, cfg.d_ff, cfg.act, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, mem=None):
        m = None if mem is None else self.ln1(mem)
        x = x + self.drop(self.attn(self.ln1(x), mem=m))
        return x + self.ffn(self.ln2(x))


class CharLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        from attnbench.attention import get

        self.cfg = cfg
        D = cfg.attn_cfg.d_model
        self.tok = nn.Embedding(cfg.vocab, D)
        # optional in the contract (docs/contract.md): an attention that declares nothing has no positions
        self.pos = None if getattr(get(cfg.attn), "has_positions", False) else nn.Embedding(cfg.ctx, D)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(D)
        for emb in (self.tok, self.pos):
            if emb is not None:
                nn.init.normal_(emb.weight, std=0.02)
        for b in self.blocks:
            for lin in (b.ffn.up, b.ffn.down):
                nn.init.normal_(lin.weight, std=0.02)
                nn.init.zeros_(lin.bias)

    def n_params(self) -> int:
        """Every parameter once (the tied output shares the embedding's)."""
        return sum(p.numel() for p in self.parameters())

    def attn_params(self) -> int:
        """The attention modules' parameters, every block (the figure MHE's retention ratio is set beside)."""
        return sum(p.numel() for b in self.blocks for p in b.attn.parameters())

    def forward(self, idx: torch.Tensor, mems: list[torch.Tensor] | None = None, at: torch.Tensor | None = None):
        """idx [B, T] -> (logits [B, T, V], new memories: one [B, M', D] per block, detached, or None). With `at`
        [B, k], positions of each row, the output layer runs there alone: logits [B, k, V] (a synthetic task's
        scored positions in training: members.scored_positions)."""
        h, new_mems = self.features(idx, mems)
        if at is not None:
            h = h.gather(1, at[..., None].expand(-1, -1, h.shape[-1]))
        return self.logits(h), new_mems

    def features(self, idx: torch.Tensor, mems: list[torch.Tensor] | None = None):
        """idx [B, T] -> (the final normalised states [B, T, D], new memories): forward without the output layer,
        for scoring a few positions only (evaluation.evaluate_task)."""
        B, T = idx.shape
        if self.pos is not None and T > self.cfg.ctx:
            raise AttnbenchError(f"segment of {T} tokens exceeds the position table ({self.cfg.ctx})")
        x = self.tok(idx)  # [B, T, D]
        if self.pos is not None:
            x = x + self.pos(torch.arange(T, device=idx.device))
        x = self.drop(x)
        new_mems = [] if self.cfg.mem_len > 0 else None
        for i, block in enumerate(self.blocks):
            mem = None if mems is None else mems[i]
            if new_mems is not None:
                seen = x if mem is None else torch.cat([mem, x], dim=1)  # [B, M+T, D]
                new_mems.append(seen[:, -self.cfg.mem_len:].detach())
            x = block(x, mem)
        return self.ln_f(x), new_mems

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.tok.weight)  # tied output: [B, T, V]


def lm_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) over the scored [B, T] targets, computed in float32; a target of -100
    (tasks.IGNORE, cross_entropy's ignore_index) is not scored: a synthetic task's unqueried positions."""
    return F.cross_entropy(logits.float().flatten(0, 1), y.flatten())


def build_model(attn: str, vocab: int, *, n_layers: int, d_model: int, n_heads: int, d_ff: int, ctx: int,
                dropout: float, act: str, mem_len: int = 0, **attn_settings) -> CharLM:
    """A CharLM; attention dropout equals the model's dropout; attention settings pass through AttnConfig."""
    for name, v in (("layers", n_layers), ("d-ff", d_ff), ("ctx", ctx)):
        if v <= 0:
            raise AttnbenchError(f"{name} must be positive, got {v}")
    if mem_len < 0:
        raise AttnbenchError(f"mem-len must be >= 0, got {mem_len}")
    activation(act)
    acfg = AttnConfig.from_kwargs(d_model=d_model, n_heads=n_heads, dropout=dropout, **attn_settings)
    return CharLM(ModelConfig(vocab=vocab, attn=attn, attn_cfg=acfg, n_layers=n_layers, d_ff=d_ff, ctx=ctx,
                              dropout=dropout, act=act, mem_len=mem_len))
