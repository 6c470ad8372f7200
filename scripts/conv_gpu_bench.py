"""GPU check of the Triton causal depth-wise conv (attnbench/kernels/causal_conv.py): fwd+bwd time against the
cuDNN conv1d path, effective bandwidth, and the error against the float32 reference; then MHA vs MDHA, the whole
module fwd+bwd (the goal: MDHA <= 1.1x MHA). Median of CUDA-event timings after warm-up.

    python scripts/conv_gpu_bench.py
"""

from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from attnbench.measure.timing import benchmark  # noqa: E402
from attnbench.attention import build  # noqa: E402
from attnbench.attention._common import CausalDepthwiseConv  # noqa: E402
from attnbench.kernels.causal_conv import causal_conv  # noqa: E402

dev, dt = "cuda", torch.bfloat16


def bench(fn):
    """Median ms of `fn` by attnbench's own timing rules (warm-up until stable, adaptive repeats, CUDA events)."""
    return benchmark(fn, device=dev).median_ms


def conv_cudnn(x, w):
    """The CPU fallback of CausalDepthwiseConv.fast: grouped conv1d on a transposed copy."""
    C, W = w.shape
    y = F.conv1d(F.pad(x.transpose(1, 2), (W - 1, 0)), w.flip(-1).unsqueeze(1).to(x.dtype), groups=C)
    return y.transpose(1, 2).contiguous()


def fwd_bwd(conv, x, w, g):
    return lambda: torch.autograd.grad(conv(x, w), (x, w), g)


def rel_err(got, want):
    return ((got.float() - want).norm() / want.norm()).item()


def main():
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    B, C, W = 4, 1024, 3
    print(f"conv fwd+bwd, B={B} C={C} W={W} bf16 (x, g bf16; w float32)")
    print(f"{'L':>6} {'triton ms':>10} {'cudnn ms':>9} {'speed-up':>8} {'triton GB/s':>11} "
          f"{'err y':>8} {'err dx':>8} {'err dw':>8}")
    for L in (4096, 16384):
        torch.manual_seed(0)
        m = CausalDepthwiseConv(C, W).to(dev)
        with torch.no_grad():
            m.weight.normal_()
        w = m.weight
        x = torch.randn(B, L, C, device=dev, dtype=dt, requires_grad=True)
        g = torch.randn(B, L, C, device=dev, dtype=dt)
        t_tri = bench(fwd_bwd(causal_conv, x, w, g))
        t_cud = bench(fwd_bwd(conv_cudnn, x, w, g))
        y = causal_conv(x, w)
        dx, dw = torch.autograd.grad(y, (x, w), g)
        x32 = x.detach().float().requires_grad_()
        yr = m.reference(x32)
        dxr, dwr = torch.autograd.grad(yr, (x32, w), g.float())
        gbs = 5 * x.numel() * x.element_size() / (t_tri * 1e-3) / 1e9  # fwd: read x, write y; bwd: g, x, dx
        print(f"{L:>6} {t_tri:>10.3f} {t_cud:>9.3f} {t_cud / t_tri:>7.1f}x {gbs:>11.0f} "
              f"{rel_err(y, yr):>8.1e} {rel_err(dx, dxr):>8.1e} {rel_err(dw, dwr):>8.1e}", flush=True)

    D, nh = 1024, 16
    print(f"\nmodule fwd+bwd, B={B} D={D} heads={nh} bf16, impl=fast")
    print(f"{'T':>6} {'mha ms':>8} {'mdha ms':>8} {'mdha/mha':>8}")
    for T in (4096, 16384):
        times = {}
        for name in ("mha", "mdha"):
            mod = build(name, d_model=D, n_heads=nh, impl="fast").to(dev, dt)
            x = torch.randn(B, T, D, device=dev, dtype=dt, requires_grad=True)
            g = torch.randn(B, T, D, device=dev, dtype=dt)
            times[name] = bench(lambda: torch.autograd.grad(mod(x), [x, *mod.parameters()], g))
            del mod, x, g
        print(f"{T:>6} {times['mha']:>8.3f} {times['mdha']:>8.3f} {times['mdha'] / times['mha']:>7.2f}x", flush=True)


if __name__ == "__main__":
    main()
