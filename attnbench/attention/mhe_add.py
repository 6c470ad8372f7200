"""MHE-ADD: multi-head embedding attention, additive (Xue & Aletras 2023, arXiv 2310.07911; attention.md, MHE):
one shared projection per Q, K, V of width d, plus one learned embedding per head and per Q/K/V:
q_h = x·W_q + e^q_h (likewise k, v); heads attended as in MHA, concatenated to n·d, then W_o.

The fast path comes in several forms, all exact (tests/test_mhe_fast.py); FAST_PATH picks one, and
scripts/mhe_gpu_probe.py times them all against MHA:
- "broadcast":   shared projection [B, 1, L, hs] combined with [1, nh, 1, hs] by broadcasting; autograd's backward
                 of the broadcast (a full-size product and two reductions per Q/K/V) and many small kernels.
- "weight":      one effective weight per Q/K/V, D -> nh·hs, so each of Q, K, V is one GEMM as in MHA (for ADD the
                 weight is W repeated nh times and the bias carries e); the same GEMM FLOPs as MHA.
- "weight-qkv":  "weight" with Q, K, V (K, V with memory) in one GEMM of the concatenated weights (MHA uses three).
- "combine":     per Q/K/V one custom autograd node (AddHeads / MulHeads): the shared projection D -> hs and the
                 combine in the forward; a backward that reduces the head gradients in a few kernels without
                 writing anything full-size (ADD: two sums; MUL: two GEMMs), then the projection's two GEMMs.
- "combine-qkv": "combine" with the three shared projections in one D -> 3·hs GEMM, one combine kernel, one node
                 (K, V together and Q apart with memory)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attnbench.attention._common import (attend_fast, attend_reference, init_linear, merge_heads, saved_activations,
                                         scale_for, with_memory)
from attnbench.config import AttnConfig
from attnbench.errors import AttnbenchError
from attnbench.kernels import batched

FAST_PATHS = ("broadcast", "weight", "weight-qkv", "combine", "combine-qkv")
FAST_PATH = "combine-qkv"  # the form MHEAdd's fast path takes (mhe_mul.py has its own); see the docstring


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a GEMM on x runs in: autocast's where it is on (bf16 training), else x's."""
    dev = x.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype


def project_heads(ctx, inp, emb, first, n, params, combine):
    """The forward of AddHeads/MulHeads: c = n shared projections of `inp` in one GEMM (attention.md, MHE),
    p = inp·[W_1; ..; W_c]ᵀ + b [B, L, c, hs], combined with emb[first : first + c] [c, nh, hs] in one kernel
    into a [B, L, c, nh, hs] buffer (MHA's fused-QKV layout); returns c views [B, nh, L, hs]."""
    Ws, bs = params[:n], params[n:]
    W = torch.cat(Ws) if n > 1 else Ws[0]  # [c·hs, D]
    b = (torch.cat(bs) if n > 1 else bs[0]) if bs else None
    B, L = inp.shape[:2]
    p = F.linear(inp, W, b).view(B, L, n, -1)  # [B, L, c, hs]
    e = emb[first:first + n]  # [c, nh, hs]
    y = combine(p[:, :, :, None], e)  # [B, L, c, nh, hs]
    ctx.save_for_backward(inp, W, p, e)
    ctx.first, ctx.has_bias, ctx.emb_shape = first, bool(bs), emb.shape
    return tuple(y[:, :, i].transpose(1, 2) for i in range(n))


def project_heads_backward(ctx, gs, reduce_heads):
    """The backward of AddHeads/MulHeads: reduce_heads(gs, p, e, dp, de) fills dp [B, L, c, hs] and de [c, nh, hs]
    from the head gradients gs (c x [B, nh, L, hs]); then the GEMM's backward, two GEMMs as in nn.Linear."""
    inp, W, p, e = ctx.saved_tensors
    B, L, c, hs = p.shape
    dp, de = p.new_empty(B, L, c, hs), e.new_empty(e.shape)
    reduce_heads(gs, p, e, dp, de)
    dp2, x2 = dp.view(B * L, c * hs), inp.reshape(B * L, -1)  # [R, c·hs], [R, D]
    d_inp = (dp2 @ W).view(inp.shape) if ctx.needs_input_grad[0] else None
    dWs = (dp2.t() @ x2).split(hs)  # c x [hs, D]
    dbs = dp2.sum(0).split(hs) if ctx.has_bias else ()
    d_emb = de
    if c != ctx.emb_shape[0]:  # q alone, or k and v alone (with memory): the other rows get no gradient here
        d_emb = de.new_zeros(ctx.emb_shape)
        d_emb[ctx.first:ctx.first + c] = de
    return d_inp, d_emb, None, None, *dWs, *dbs


class AddHeads(torch.autograd.Function):
    """q_h = x·W_q + b_q + e^q_h for every head h, and likewise k, v (attention.md, MHE-ADD), as one autograd node:
    apply(inp, emb, first, c, W_1..W_c, [b_1..b_c]) -> c tensors [B, nh, L, hs]. Backward: dp = Σ_h g_h and
    de_h = Σ_{B,L} g_h (two reductions per tensor, nothing full-size written), then the projection's two GEMMs."""

    @staticmethod
    def forward(ctx, inp, emb, first, n, *params):
        return project_heads(ctx, inp, emb, first, n, params, torch.add)

    @staticmethod
    def backward(ctx, *gs):
        return project_heads_backward(ctx, gs, AddHeads.reduce_heads)

    @staticmethod
    def reduce_heads(gs, p, e, dp, de):
        for i, g in enumerate(gs):
            g = g.transpose(1, 2)  # [B, L, nh, hs]
            torch.sum(g, dim=2, out=dp[:, :, i])
            torch.sum(g, dim=(0, 1), out=de[i])


class MHEAdd(nn.Module):
    paper = "Xue & Aletras 2023, arXiv 2310.07911"
    summary = "One shared Q/K/V projection of head width d plus a learned per-head embedding, added."
    has_positions = False
    has_reference = True
    settings = ()
    param_parts = {"qkv": ("q", "k", "v", "emb"), "out": ("o",)}  # the head embeddings count as Q/K/V (MHE abstract)
    init_center = 0.0  # embeddings start around 0 with noise, so heads differ from the start
    combine_heads = AddHeads

    def __init__(self, cfg: AttnConfig):
        super().__init__()
        self.cfg = cfg
        D, nh, hs = cfg.d_model, cfg.n_heads, cfg.head_dim
        self.q = nn.Linear(D, hs, bias=cfg.bias)
        self.k = nn.Linear(D, hs, bias=cfg.bias)
        self.v = nn.Linear(D, hs, bias=cfg.bias)
        self.o = nn.Linear(nh * hs, D, bias=cfg.bias)
        init_linear(self.q, self.k, self.v, self.o)
        self.emb = nn.Parameter(self.init_center + 0.1 * torch.randn(3, nh, hs))  # e^q, e^k, e^v per head

    @staticmethod
    def closed_form(cfg: AttnConfig) -> dict[str, int]:
        D, nh, hs, b = cfg.d_model, cfg.n_heads, cfg.head_dim, int(cfg.bias)
        # MHE paper's abstract: 3nd beyond single-head attention of width d (the embeddings count as Q/K/V).
        return {"qkv": 3 * (D * hs + b * hs) + 3 * nh * hs, "out": nh * hs * D + b * D, "other": 0}

    @staticmethod
    def core_heads(cfg: AttnConfig) -> int:
        return cfg.n_heads

    @staticmethod
    def activation_estimate(cfg: AttnConfig, batch: int, seq_len: int, dtype_bytes: int) -> dict[str, int]:
        """MHA's, plus the three shared projections (B·T·d each)."""
        parts = saved_activations(cfg, batch, seq_len, dtype_bytes)
        parts["shared projections"] = 3 * batch * seq_len * cfg.head_dim * dtype_bytes
        return parts

    @staticmethod
    def fast_path(rows: int) -> str:
        """The fast path's form for `rows` = B·L input rows. H100, bf16, D=1024, n=16 (scripts/mhe_gpu_probe.py,
        results/h100/probes/mhe-a1fa1c9.txt): combine-qkv 0.95x / 0.89x / 0.92x mha at T = 1024 / 4096 / 16384 (B=4)."""
        return FAST_PATH

    @staticmethod
    def combine(p: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return p + e

    @staticmethod
    def effective_weight(W, b, e):
        """x·W_eff + b_eff = [x·W_c + b_c + e_ch for c, h]: W [c, hs, D], b [c, hs] | None, e [c, nh, hs] ->
        W_eff [c·nh·hs, D] (W repeated per head), b_eff [c·nh·hs] (e, plus b)."""
        c, hs, D = W.shape
        b_eff = e if b is None else e + b[:, None]
        return W[:, None].expand(c, e.shape[1], hs, D).reshape(-1, D), b_eff.reshape(-1)

    def forward(self, x, mem=None):
        h = with_memory(x, mem)
        scale, impl = scale_for(self.cfg.head_dim), self.cfg.impl
        if impl == "reference":
            eq, ek, ev = (e.to(x.dtype)[None, :, None, :] for e in self.emb)  # [1, nh, 1, hs]
            sq, sk, sv = self.q(x)[:, None], self.k(h)[:, None], self.v(h)[:, None]  # shared: [B, 1, L, hs]
            heads = [attend_reference(self.combine(sq, eq[:, i:i + 1]), self.combine(sk, ek[:, i:i + 1]),
                                      self.combine(sv, ev[:, i:i + 1]), scale, self.cfg.dropout, self.training)
                     for i in range(self.cfg.n_heads)]  # one head at a time, written out
            y = torch.cat(heads, dim=1)
        else:
            path = self.fast_path(h.shape[0] * h.shape[1])
            if path.startswith("combine") and batched(x, f"{type(self).__name__} {path} (autograd.Function): "
                                                         f"weight-qkv"):
                path = "weight-qkv"  # the same function without a custom autograd node, which vmap cannot batch
            q, k, v = self.heads(x, h, path)
            y = attend_fast(q, k, v, scale, self.cfg.dropout, self.training)  # one fused call over all heads
        return self.o(merge_heads(y))

    def heads(self, x, h, path: str):
        """q [B, nh, T, hs], k and v [B, nh, L, hs] by the fast path `path` (see the module docstring)."""
        if path == "broadcast":
            eq, ek, ev = (e.to(x.dtype)[None, :, None, :] for e in self.emb)  # [1, nh, 1, hs]
            sq, sk, sv = self.q(x)[:, None], self.k(h)[:, None], self.v(h)[:, None]  # shared: [B, 1, L, hs]
            return self.combine(sq, eq), self.combine(sk, ek), self.combine(sv, ev)
        if path not in FAST_PATHS:
            raise AttnbenchError(f"MHE fast path must be one of {', '.join(FAST_PATHS)}, got {path!r}")
        if not path.endswith("-qkv"):
            groups = [(x, 0, 1), (h, 1, 1), (h, 2, 1)]  # (input, first of q/k/v, how many)
        elif h is x:
            groups = [(x, 0, 3)]
        else:
            groups = [(x, 0, 1), (h, 1, 2)]  # q from x; k, v from [mem; x]
        layers = (self.q, self.k, self.v)
        e = self.emb.to(x.dtype)  # [3, nh, hs]
        out = []
        for inp, first, c in groups:
            group = layers[first:first + c]
            if path.startswith("combine"):
                biases = [m.bias for m in group] if self.cfg.bias else []
                # one dtype throughout the node, as autocast would give its GEMM (its backward runs outside autocast)
                dt = compute_dtype(inp)
                with torch.autocast(inp.device.type, enabled=False):
                    out += self.combine_heads.apply(inp.to(dt), e.to(dt), first, c,
                                                    *(m.weight.to(dt) for m in group), *(b.to(dt) for b in biases))
                continue
            W = torch.cat([m.weight for m in group]) if c > 1 else group[0].weight  # [c·hs, D]
            b = (torch.cat([m.bias for m in group]) if c > 1 else group[0].bias) if self.cfg.bias else None
            B, L, hs = inp.shape[0], inp.shape[1], self.cfg.head_dim
            W_eff, b_eff = self.effective_weight(W.view(c, hs, -1), None if b is None else b.view(c, hs),
                                                e[first:first + c])
            y = F.linear(inp, W_eff, b_eff).view(B, L, c, -1, hs)  # [B, L, c, nh, hs]
            parts = y.unbind(2) if c > 1 else (y.view(B, L, -1, hs),)  # unbind's backward: one stack
            out += [t.transpose(1, 2) for t in parts]  # [B, nh, L, hs]
        return out
