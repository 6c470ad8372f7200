"""What the speed and memory sweeps measure: one attention (or a bare SDPA baseline) on random inputs of the
benchmark shape. Its own module so that the fresh-process memory worker (measure/memory.py) and the sweeps
(bench.py) both import it, and neither imports the other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from attnbench.config import AttnConfig

BASELINE = "sdpa"  # bare scaled_dot_product_attention(is_causal=True) on [B, n, T, d]
BASELINE_PROJ = "sdpa+proj"  # the same call with bare F.linear Q|K|V (one GEMM) and O: MHA's cost, no module code
BASELINES = (BASELINE, BASELINE_PROJ)
BASELINE_SUMMARY = {BASELINE: "bare scaled_dot_product_attention(q, k, v, is_causal=True) on [B, n, T, d]",
                    BASELINE_PROJ: "the same call with bare F.linear projections (Q|K|V, O): mha without module code"}


@dataclass
class Workload:
    """One thing to time: forward() -> tensor, the tensors whose gradients are reset, its FLOP shape."""

    name: str
    impl: str
    forward: Callable[[], Any]
    leaves: list
    params: list
    inputs: list
    core_heads: int | None  # None: the attention declares no core_heads (core FLOPs n/a)
    head_dim: int
    module: Any = None
    config: dict = field(default_factory=dict)
    linear_fwd_flops: float | None = None  # known in closed form for the baselines; else counted with hooks
    activations: dict[str, int] | None = None  # estimated bytes kept for backward, by tensor group; None: n/a


def baseline_activations(name: str, batch: int, seq_len: int, d_model: int, heads: int,
                         dtype_bytes: int) -> dict[str, int]:
    """The bytes a baseline keeps for backward, by tensor group: the bare kernel its output and log-sum-exp;
    sdpa+proj what MHA keeps (the same tensors)."""
    if name == BASELINE:
        elems = batch * heads * seq_len
        return {"out B*n*T*d": elems * (d_model // heads) * dtype_bytes, "lse B*n*T (fp32)": 4 * elems}
    from attnbench.attention import get

    return get("mha").activation_estimate(AttnConfig(d_model=d_model, n_heads=heads), batch, seq_len, dtype_bytes)


def build_workload(name: str, impl: str, batch: int, seq_len: int, d_model: int, heads: int, kv_heads: int | None,
                   device: str, dtype, compile: bool = False, d_pos: int | None = None) -> Workload:
    """The attention `name` (or the bare SDPA baseline) on random inputs of the benchmark shape."""
    import torch
    import torch.nn.functional as F

    if name == BASELINE:
        d = d_model // heads
        q, k, v = (torch.randn(batch, heads, seq_len, d, device=device, dtype=dtype, requires_grad=True)
                   for _ in range(3))  # [B, n, T, d]

        def fwd():
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

        fn = torch.compile(fwd) if compile else fwd
        est = baseline_activations(name, batch, seq_len, d_model, heads, dtype.itemsize)
        return Workload(name, "fast", fn, [q, k, v], [], [q, k, v], heads, d,
                        config={"shape": "[B, n, T, d]", "is_causal": True}, linear_fwd_flops=0.0, activations=est)
    if name == BASELINE_PROJ:
        d = d_model // heads
        x = torch.randn(batch, seq_len, d_model, device=device, dtype=dtype, requires_grad=True)  # [B, T, D]
        ws = [(torch.randn(n * d_model, d_model, device=device, dtype=dtype) / d_model**0.5).requires_grad_(True)
              for n in (3, 1)]  # W_qkv [3D, D], W_o [D, D]

        def fwd_proj():
            B, T, D = x.shape
            # one GEMM for Q|K|V split into views, as the fast attentions do (indexing a [B, T, 3, n, d] view
            # instead costs the backward three zero-filled full-size gradients: 1.14x mha at T=4096 on an H100)
            q, k, v = (t.view(B, T, heads, d).transpose(1, 2) for t in F.linear(x, ws[0]).split(D, dim=-1))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return F.linear(y.transpose(1, 2).reshape(B, T, D), ws[1])  # [B, T, D]

        fn = torch.compile(fwd_proj) if compile else fwd_proj
        est = baseline_activations(name, batch, seq_len, d_model, heads, dtype.itemsize)
        return Workload(name, "fast", fn, [x, *ws], ws, [x], heads, d,
                        config={"shape": "[B, T, D]", "is_causal": True, "projections": "F.linear: Q|K|V fused, O; no bias"},
                        linear_fwd_flops=4 * 2.0 * batch * seq_len * d_model * d_model, activations=est)
    from attnbench.attention import build, get

    cls = get(name)
    cfg = AttnConfig.from_kwargs(d_model=d_model, n_heads=heads, kv_heads=kv_heads, impl=impl, d_pos=d_pos)
    mod = build(name, cfg=cfg).to(device=device, dtype=dtype)
    x = torch.randn(batch, seq_len, d_model, device=device, dtype=dtype, requires_grad=True)  # [B, T, D]
    call = torch.compile(mod) if compile else mod
    params = list(mod.parameters())
    core_heads = cls.core_heads(cfg) if hasattr(cls, "core_heads") else None
    est = cls.activation_estimate(cfg, batch, seq_len, dtype.itemsize) if hasattr(cls, "activation_estimate") else None
    return Workload(name, impl, lambda: call(x), [x, *params], params, [x], core_heads, cfg.head_dim, mod,
                    cfg.to_dict(), activations=est)
