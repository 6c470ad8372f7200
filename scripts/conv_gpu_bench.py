"""GPU check of the Triton causal depth-wise conv (attnbench/kernels/causal_conv.py) and of MDHA's fused fast path.

1. The conv as MDHA runs it: x [B, L, 3C] (the fused Q|K|V projection), three parts of C channels, bf16, at
   [4, 4096, 3072] and [4, 16384, 3072]. First the error of every block config against the float32 reference
   (CausalDepthwiseConv.reference on the same bf16 inputs), then per forward config the fwd time, per backward
   config the fwd+bwd time (with the forward config that pick() chooses), each against the memory floor:
   bytes that must move / 3.35 TB/s (fwd: read x, write y; bwd: read g and x, write dx; w and dw ignored).
   '*' marks the configs pick() chooses; cuDNN's grouped conv1d on a transposed copy is the old baseline.
2. MHA vs MDHA (and RCMHA), whole modules from the registry (impl="fast"), fwd+bwd: first the error of the fast bf16
   path against the reference path in float32 at T=256, then times at T=1024, 4096, 16384 (the goal: MDHA <= 1.1x
   MHA at T=4096).

Times: median ms by attnbench.measure.timing (warm-up until stable, adaptive repeats, CUDA events). ~2 minutes:

    python scripts/conv_gpu_bench.py
"""

from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from attnbench.attention import build  # noqa: E402
from attnbench.attention._common import CausalDepthwiseConv  # noqa: E402
from attnbench.kernels import causal_conv as kernel  # noqa: E402
from attnbench.measure.timing import benchmark  # noqa: E402

dev, dt = "cuda", torch.bfloat16
PEAK_BYTES_S = 3.35e12  # H100 SXM HBM3


def bench(fn) -> float:
    """Median ms of `fn` by attnbench's own timing rules (warm-up until stable, adaptive repeats, CUDA events)."""
    return benchmark(fn, device=dev).median_ms


def rel_err(got, want) -> float:
    """max |got − want| / max |want| (want in float32)."""
    return ((got.float() - want).abs().max() / want.abs().max()).item()


def conv_cudnn(x, w, parts):
    """The CPU fallback of causal_conv_parts: grouped conv1d on a transposed copy, split, made contiguous."""
    C, W = w.shape
    y = F.conv1d(F.pad(x.transpose(1, 2), (W - 1, 0)), w.flip(-1).unsqueeze(1).to(x.dtype), groups=C)
    return tuple(p.contiguous() for p in y.transpose(1, 2).split(C // parts, dim=-1))


def conv_section(B, Cp, parts, W):
    C = parts * Cp
    print(f"== 1. causal conv as MDHA runs it: x [B, L, {parts}·{Cp}] -> {parts} x [B, L, {Cp}], W={W}, bf16 "
          f"(w float32), floor = bytes / {PEAK_BYTES_S / 1e12:.2f} TB/s", flush=True)
    for L in (4096, 16384):
        torch.manual_seed(0)
        m = CausalDepthwiseConv(C, W).to(dev)
        with torch.no_grad():
            m.weight.normal_()
        w = m.weight
        x = torch.randn(B, L, C, device=dev, dtype=dt, requires_grad=True)
        gs = [torch.randn(B, L, Cp, device=dev, dtype=dt) for _ in range(parts)]
        n = x.numel() * x.element_size()
        floor_f, floor_fb = 2 * n / PEAK_BYTES_S * 1e3, 5 * n / PEAK_BYTES_S * 1e3  # ms
        pick_f, pick_b = kernel.pick(L, Cp, backward=False), kernel.pick(L, Cp, backward=True)
        print(f"\n[B, L, C] = [{B}, {L}, {C}]: floor fwd {floor_f:.3f} ms, fwd+bwd {floor_fb:.3f} ms")

        # correctness first: every config against the float32 reference
        x32 = x.detach().float().requires_grad_()
        yr = m.reference(x32)
        dxr, dwr = torch.autograd.grad(yr, (x32, w), torch.cat(gs, dim=-1).float())
        del x32
        print(f"  max rel error vs float32 reference (max|err| / max|ref|):")
        print(f"  {'fwd config':>12} {'bwd config':>12} {'y':>9} {'dx':>9} {'dw':>9}")
        worst = 0.0
        for fname, bname in zip(kernel.FWD_BLOCKS, kernel.BWD_BLOCKS):
            ys = kernel.causal_conv_parts(x, w, parts, kernel.FWD_BLOCKS[fname], kernel.BWD_BLOCKS[bname])
            dx, dw = torch.autograd.grad(ys, (x, w), gs)
            errs = [rel_err(torch.cat(ys, dim=-1), yr), rel_err(dx, dxr), rel_err(dw, dwr)]
            worst = max(worst, *errs)
            print(f"  {fname:>12} {bname:>12} " + " ".join(f"{e:>9.1e}" for e in errs), flush=True)
            del ys, dx, dw
        print(f"  worst {worst:.1e}: {'OK' if worst < 1e-2 else 'TOO LARGE (bf16 rounding is ~4e-3)'}")
        del yr, dxr, dwr

        def fwd(fb):
            def call():
                with torch.no_grad():
                    kernel.causal_conv_parts(x, w, parts, fb, None)
            return call

        def fwd_bwd(fb, bb):
            return lambda: torch.autograd.grad(kernel.causal_conv_parts(x, w, parts, fb, bb), (x, w), gs)

        print(f"  {'fwd config':>12} {'fwd ms':>8} {'x floor':>8} {'GB/s':>6}")
        best = {}
        for name, bl in kernel.FWD_BLOCKS.items():
            t = bench(fwd(bl))
            best["fwd"] = min(best.get("fwd", (t, name)), (t, name))
            mark = "*" if bl == pick_f else " "
            print(f" {mark}{name:>12} {t:>8.3f} {t / floor_f:>7.2f}x {2 * n / t / 1e6:>6.0f}", flush=True)
        print(f"  {'bwd config':>12} {'fwd+bwd ms':>10} {'x floor':>8} {'GB/s':>6}   (fwd: {_name(pick_f)})")
        for name, bl in kernel.BWD_BLOCKS.items():
            t = bench(fwd_bwd(pick_f, bl))
            best["bwd"] = min(best.get("bwd", (t, name)), (t, name))
            mark = "*" if bl == pick_b else " "
            print(f" {mark}{name:>12} {t:>10.3f} {t / floor_fb:>7.2f}x {5 * n / t / 1e6:>6.0f}", flush=True)
        t_cud = bench(lambda: torch.autograd.grad(conv_cudnn(x, w, parts), (x, w), gs))
        print(f"  {'cuDNN conv1d':>13} {t_cud:>10.3f} {t_cud / floor_fb:>7.2f}x {5 * n / t_cud / 1e6:>6.0f}")
        print(f"  best: fwd {best['fwd'][1]} ({best['fwd'][0]:.3f} ms), bwd {best['bwd'][1]} "
              f"({best['bwd'][0]:.3f} ms fwd+bwd); pick() chose {_name(pick_f)} / {_name(pick_b)}", flush=True)
        del x, gs, m


def _name(bl):
    return next(n for d in (kernel.FWD_BLOCKS, kernel.BWD_BLOCKS) for n, b in d.items() if b == bl)


def attention_section(B, D, nh):
    print(f"\n== 2. whole attention modules (registry, impl=fast), fwd+bwd, B={B} D={D} heads={nh} bf16", flush=True)
    # correctness: fast bf16 against the written-out reference in float32, same parameters
    T = 256
    print(f"  error of the fast bf16 path vs the reference path in float32, T={T} (max|err| / max|ref|):")
    ok = True
    for name in ("mdha", "rcmha"):
        try:
            ok &= _check_attention(name, B, T, D, nh)
        except Exception as e:  # noqa: BLE001  (rcmha's relative part is another kernel's; report, go on)
            print(f"  {name:>6}: FAILED {type(e).__name__}: {e}", flush=True)
            ok = False
    print(f"  {'T':>6} {'mha ms':>8} {'mdha ms':>8} {'mdha/mha':>8}")
    for T in (1024, 4096, 16384):
        times = {}
        for name in ("mha", "mdha"):
            mod = build(name, d_model=D, n_heads=nh, impl="fast").to(dev, dt)
            x = torch.randn(B, T, D, device=dev, dtype=dt, requires_grad=True)
            g = torch.randn(B, T, D, device=dev, dtype=dt)
            params = list(mod.parameters())
            times[name] = bench(lambda: torch.autograd.grad(mod(x), [x, *params], g))
            del mod, x, g, params
        print(f"  {T:>6} {times['mha']:>8.3f} {times['mdha']:>8.3f} {times['mdha'] / times['mha']:>7.2f}x", flush=True)
    return ok


def _check_attention(name, B, T, D, nh):
    """The fast bf16 path against the written-out reference in float32, same parameters: output and gradients."""
    torch.manual_seed(0)
    ref = build(name, d_model=D, n_heads=nh, impl="reference").to(dev)
    fast = build(name, d_model=D, n_heads=nh, impl="fast").to(dev)
    fast.load_state_dict(ref.state_dict())
    fast.to(dt)
    x = torch.randn(B, T, D, device=dev)
    g = torch.randn(B, T, D, device=dev)
    xr, xf = x.clone().requires_grad_(), x.to(dt).requires_grad_()
    yr, yf = ref(xr), fast(xf)
    gr = torch.autograd.grad(yr, [xr, *ref.parameters()], g)
    gf = torch.autograd.grad(yf, [xf, *fast.parameters()], g.to(dt))
    errs = [rel_err(yf, yr)] + [rel_err(a, b) for a, b in zip(gf, gr)]
    names = ["y", "dx"] + [n for n, _ in ref.named_parameters()]
    worst = max(range(len(errs)), key=errs.__getitem__)
    print(f"  {name:>6}: y {errs[0]:.1e}, dx {errs[1]:.1e}, worst gradient {names[worst]} {errs[worst]:.1e}: "
          f"{'OK' if errs[worst] < 3e-2 else 'TOO LARGE'}", flush=True)
    return errs[worst] < 3e-2


def main():
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    conv_section(B=4, Cp=1024, parts=3, W=3)
    ok = attention_section(B=4, D=1024, nh=16)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
