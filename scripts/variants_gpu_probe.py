"""GPU probe: which implementation of the two slow pieces is fastest (median of CUDA-event timings, one run).

1. the causal depth-wise convolution (MDHA, RCMHA) on [B, T, C], fwd+bwd: cuDNN conv1d on a transposed copy,
   shifted adds, and shifted adds under torch.compile;
2. the modules mha, rmha, rcmha, mdha, fwd+bwd (an earlier version compared the relative prologue eager/compiled
   x bf16/fp32 on an H100: eager bf16 won, 4.85 ms at T=4096 against 5.35-6.18 ms for the others);
plus the floor: SDPA alone at QK width 64 and 128 (V width 64).

    python scripts/variants_gpu_probe.py
"""

from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from attnbench.measure.timing import benchmark  # noqa: E402
from attnbench.attention import build  # noqa: E402

dev = "cuda"
dt = torch.bfloat16


def bench(fn):
    """Median ms of `fn` by attnbench's own timing rules (warm-up until stable, adaptive repeats, CUDA events)."""
    return benchmark(fn, device=dev).median_ms


def conv_cudnn(x, w):
    C, W = w.shape
    y = F.conv1d(F.pad(x.transpose(1, 2), (W - 1, 0)), w.flip(-1).unsqueeze(1), groups=C)
    return y.transpose(1, 2).contiguous()


def conv_shift(x, w):
    y = x * w[:, 0]
    for k in range(1, w.shape[1]):
        y = y + F.pad(x[:, :-k], (0, 0, k, 0)) * w[:, k]
    return y


conv_shift_compiled = torch.compile(conv_shift)


def main():
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    B, C = 4, 1024
    ok = True
    for T in (4096, 16384):
        x = torch.randn(B, T, C, device=dev, dtype=dt, requires_grad=True)
        w = torch.randn(C, 3, device=dev, dtype=dt, requires_grad=True)
        g = torch.randn(B, T, C, device=dev, dtype=dt)
        ref = conv_cudnn(x.float(), w.float())
        for name, fn in [("conv cudnn", conv_cudnn), ("conv shift eager", conv_shift),
                         ("conv shift compiled", conv_shift_compiled)]:
            err = ((fn(x, w).float() - ref).norm() / ref.norm()).item()
            ok &= err < 3e-2  # bf16 against the float32 cuDNN convolution

            def run():
                x.grad = w.grad = None
                fn(x, w).backward(g)
            print(f"T={T:6d} {name:28s} {bench(run):8.3f} ms  rel err {err:.1e}", flush=True)
    n, d = 16, 64
    for T in (4096, 16384):
        for width in (64, 128):
            q = torch.randn(B, n, T, width, device=dev, dtype=dt, requires_grad=True)
            k = torch.randn(B, n, T, width, device=dev, dtype=dt, requires_grad=True)
            v = torch.randn(B, n, T, d, device=dev, dtype=dt, requires_grad=True)
            go = torch.randn(B, n, T, d, device=dev, dtype=dt)

            def run():
                q.grad = k.grad = v.grad = None
                F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=d ** -0.5).backward(go)
            print(f"T={T:6d} sdpa core qk={width:3d} v=64          {bench(run):8.3f} ms", flush=True)
        x = torch.randn(B, T, n * d, device=dev, dtype=dt, requires_grad=True)
        gx = torch.randn_like(x)
        for label, name in [("mha module", "mha"), ("rmha module", "rmha"), ("rcmha module", "rcmha"),
                            ("mdha module", "mdha")]:
            m = build(name, d_model=n * d, n_heads=n).to(dev, dt)

            def run():
                m.zero_grad(set_to_none=True)
                x.grad = None
                m(x).backward(gx)
            print(f"T={T:6d} {label:28s} {bench(run):8.3f} ms", flush=True)
    print("convolutions agree with cuDNN" if ok else "FAIL: a convolution differs from cuDNN by 3e-2 or more")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
