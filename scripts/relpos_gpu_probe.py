"""GPU probe for issue 5: exactness (bf16 fast path vs float32 reference, outputs and every gradient) and the
cost of the fused relative path against SDPA MHA, per SDPA backend. Prints one table; writes JSON to $OUT.

    python scripts/relpos_gpu_probe.py
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from attnbench.measure.timing import benchmark  # noqa: E402
from attnbench.attention import build  # noqa: E402

dev = os.environ.get("PROBE_DEVICE", "cuda")
out_dir = os.environ.get("OUT", ".")
rows = []
TOL = 3e-2  # bf16 fast path vs float32 reference, max norm-relative error (bench.CHECK_TOL for bfloat16)


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def check(name, T, M, d_model=256, n_heads=4, d_pos=None, B=2):
    torch.manual_seed(0)
    ref = build(name, d_model=d_model, n_heads=n_heads, impl="reference", d_pos=d_pos).to(dev).float()
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn_like(p) * 0.05 + (0.5 if p.ndim == 2 and p.shape[1] == 3 else 0))
    fast = build(name, d_model=d_model, n_heads=n_heads, impl="fast", d_pos=d_pos).to(dev)
    fast.load_state_dict(ref.state_dict())
    fast = fast.to(torch.bfloat16)
    x = torch.randn(B, T, d_model, device=dev)
    mem = torch.randn(B, M, d_model, device=dev) if M else None
    w = torch.randn(B, T, d_model, device=dev)
    xr = x.clone().requires_grad_()
    xf = x.to(torch.bfloat16).requires_grad_()
    yr = ref(xr, mem)
    yf = fast(xf, None if mem is None else mem.to(torch.bfloat16))
    gr = torch.autograd.grad((yr * w).sum(), [xr, *ref.parameters()])
    gf = torch.autograd.grad((yf.float() * w).sum(), [xf, *fast.parameters()])
    errs = {"out": rel_err(yf, yr)}
    for (n, _), a, b in zip([("x", None), *ref.named_parameters()], gf, gr):
        errs["grad_" + n] = rel_err(a, b)
    worst = max(errs, key=errs.get)
    rows.append({"check": name, "T": T, "M": M, "d_pos": d_pos, "max_rel_err": errs[worst], "worst": worst,
                 "errs": errs})
    print(f"check {name:6s} T={T:5d} M={M:3d} d_pos={d_pos}: max rel err {errs[worst]:.2e} ({worst})", flush=True)


def timeit(fn):
    """Median ms of `fn` by attnbench's own timing rules (warm-up until stable, adaptive repeats, CUDA events)."""
    return benchmark(fn, device=dev).median_ms


def fwd_bwd(module, x):
    def run():
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).backward(gout)
    gout = torch.randn_like(x)
    return run


def bench_modules(T, B=4, n=16, d=64, backends=None):
    D = n * d
    x = torch.randn(B, T, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
    res = {}
    for label, name, kw in [("mha", "mha", {}), ("rmha d_pos=64", "rmha", {"d_pos": 64}),
                            ("rcmha d_pos=64", "rcmha", {"d_pos": 64}), ("rmha d_pos=1024", "rmha", {"d_pos": 1024}),
                            ("rmha reference", "rmha", {"impl": "reference"})]:
        if T > 4096 and "reference" in label:
            continue
        m = build(name, d_model=D, n_heads=n, **kw).to(dev, torch.bfloat16)
        for bk in backends or [None]:
            key = f"{label} [{bk}]" if bk else label
            try:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                if bk:
                    with sdpa_kernel([getattr(SDPBackend, bk)]):
                        ms = timeit(fwd_bwd(m, x))
                else:
                    ms = timeit(fwd_bwd(m, x))
                peak = (torch.cuda.max_memory_allocated() - base) / 2**20
                res[key] = (ms, peak)
            except Exception as e:  # noqa: BLE001
                res[key] = (None, f"{type(e).__name__}: {str(e).splitlines()[0][:80]}")
            print(f"T={T:6d} {key:40s} {res[key]}", flush=True)
        del m
    return res


def main():
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    for name in ("rmha", "rcmha"):
        for T, M in [(64, 0), (200, 0), (333, 17), (1000, 64)]:
            check(name, T, M)
        check(name, 300, 32, d_pos=256)
    timings = {}
    for T in (1024, 4096, 16384):
        bks = ["FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION"] if T == 4096 else None
        timings[T] = bench_modules(T, backends=bks)
        if bks:
            timings[f"{T}-auto"] = bench_modules(T)
    with open(os.path.join(out_dir, "relpos_probe.json"), "w") as f:
        json.dump({"checks": rows, "timings": {str(k): v for k, v in timings.items()}}, f, indent=1, default=str)
    failed = [r for r in rows if not r["max_rel_err"] <= TOL]
    for r in failed:
        print(f"FAIL: {r['check']} T={r['T']} M={r['M']} d_pos={r['d_pos']}: {r['max_rel_err']:.2e} > {TOL}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
