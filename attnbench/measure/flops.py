"""FLOP conventions (../shared/docs/benchmarking.md, "FLOPs and rates") and a measured matmul ceiling.

Attention core, causal: forward 4·B·n·T²·d / 2 (QKᵀ and PV, each 2·B·n·T²·d, halved by the causal mask);
backward 2.5× forward (two matmuls forward, five backward); forward+backward 3.5×.
Linear layers: 2·tokens·in·out each forward; backward 2× forward (input and weight gradients), fwd+bwd 3×.
Element-wise work (softmax, convolutions of width 3, embeddings, optimizer) is not counted.
"""

from __future__ import annotations

from typing import Any, Callable

CONVENTION = ("FLOPs: causal core fwd = 4*B*n*T^2*d/2, bwd = 2.5x fwd, fwd+bwd = 3.5x fwd; "
              "linear layers 2*tokens*in*out fwd, bwd 2x, fwd+bwd 3x; element-wise work not counted; "
              "step counted as fwd+bwd")

CORE_FACTOR = {"fwd": 1.0, "bwd": 2.5, "fwd+bwd": 3.5, "step": 3.5}
LINEAR_FACTOR = {"fwd": 1.0, "bwd": 2.0, "fwd+bwd": 3.0, "step": 3.0}


def core_flops(batch: int, heads: int, seq_len: int, head_dim: int, mode: str = "fwd", causal: bool = True) -> float:
    """Attention-core FLOPs of one call under the convention above (query heads `heads`)."""
    fwd = 4.0 * batch * heads * seq_len**2 * head_dim
    if causal:
        fwd /= 2
    return fwd * CORE_FACTOR[mode]


def linear_flops_fwd(module: Any, run_forward: Callable[[], Any]) -> float:
    """Forward FLOPs of every F.linear call in one forward pass (2·rows·in·out each): nn.Linear modules and the
    fused Q|K|V GEMMs that call F.linear on concatenated weights alike (caught as a torch function mode)."""
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    class Count(TorchFunctionMode):
        total = 0.0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is F.linear:
                x, w = args[0], (args[1] if len(args) > 1 else kwargs["weight"])
                self.total += 2.0 * (x.numel() // x.shape[-1]) * w.shape[0] * w.shape[1]
            return func(*args, **kwargs)

    with torch.no_grad(), Count() as count:
        run_forward()
    return count.total


def matmul_ceiling(device, dtype, size: int | None = None, policy=None) -> dict[str, Any]:
    """TFLOP/s of a square matrix product measured here and now: the ceiling rates are related to."""
    import torch

    from attnbench.measure.timing import TimingPolicy, benchmark

    cuda = torch.device(device).type == "cuda"
    size = size or (8192 if cuda else 512)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    t = benchmark(lambda: torch.mm(a, b), device=device, policy=policy or TimingPolicy(max_time_s=1.0))
    flops = 2.0 * size**3
    return {"ceiling_tflops": flops / (t.median_ms * 1e-3) / 1e12, "ceiling_size": size,
            "ceiling_dtype": str(dtype).replace("torch.", ""), "ceiling_median_ms": t.median_ms}
