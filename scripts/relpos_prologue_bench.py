"""GPU check of the Triton prologue of the relative fast path (attnbench/kernels/relpos_prologue.py) against the eager
`augment` it replaces (attnbench/attention/_relative.py). Goal: rmha <= 1.5x mha (fwd+bwd) at T = 4096 and 16384.

1. correctness, before any timing:
   a. the prologue alone, bf16, Triton and eager, each against the float32 eager `augment` (outputs and all five
      gradients), and Triton against eager in float32 (should be ~1e-6: same function, other summation order);
   b. rmha / rcmha modules, bf16 fast path (Triton prologue, then eager), against the float32 reference
      (materialised scores and relative shift), output and every gradient.
2. time, fwd+bwd, bf16, B=4, nh=16, hs=64, d_R=64, causal, median of attnbench.measure.timing: mha; rmha and rcmha
   with the eager and the Triton prologue; SDPA alone at QK width hs+d_R / V width hs (the floor of the fast path);
   the prologue alone (eager, Triton); ratios to mha.

    python scripts/relpos_prologue_bench.py          (about 2 minutes on an H100; JSON to $OUT if set)
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from attnbench.attention import build  # noqa: E402
from attnbench.attention._relative import augment as eager_augment  # noqa: E402
from attnbench.kernels import relpos_prologue  # noqa: E402
from attnbench.measure.timing import benchmark  # noqa: E402

dev, dt = os.environ.get("PROBE_DEVICE", "cuda"), torch.bfloat16
GRADS = ["q_aug", "k_aug", "dq", "dk", "du", "dv", "dW_R"]
record = {"prologue_checks": [], "module_checks": [], "timings": []}


@contextlib.contextmanager
def eager_prologue():
    """RelativePositions.fast asks relpos_prologue.supported(...) on every call: say no, it takes `augment`."""
    real = relpos_prologue.supported
    relpos_prologue.supported = lambda *a: False
    try:
        yield
    finally:
        relpos_prologue.supported = real


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def prologue_inputs(B, nh, T, M, hs, d_pos, dtype, seed=0):
    """q, k as split_heads makes them (transposed views of [B, T, nh, hs]); u, v, W_R non-zero."""
    g = torch.Generator(device=dev).manual_seed(seed)
    q = torch.randn(B, T, nh, hs, device=dev, generator=g).transpose(1, 2)
    k = torch.randn(B, M + T, nh, hs, device=dev, generator=g).transpose(1, 2)
    u = 0.5 * torch.randn(nh, hs, device=dev, generator=g)
    v = 0.5 * torch.randn(nh, hs, device=dev, generator=g)
    w_r = 0.1 * torch.randn(nh * hs, d_pos, device=dev, generator=g)
    return [x.to(dtype).requires_grad_() for x in (q, k, u, v, w_r)]


def outputs_and_grads(fn, inputs, M, seed=1):
    q_aug, k_aug = fn(*inputs, M)
    g = torch.Generator(device=dev).manual_seed(seed)
    gq = torch.randn(q_aug.shape, device=dev, generator=g).to(q_aug.dtype)
    gk = torch.randn(k_aug.shape, device=dev, generator=g).to(k_aug.dtype)
    return [q_aug, k_aug, *torch.autograd.grad((q_aug, k_aug), inputs, (gq, gk))]


def check_prologue(B, nh, T, M, hs, d_pos):
    lo = prologue_inputs(B, nh, T, M, hs, d_pos, dt)
    f32 = [x.detach().float().requires_grad_() for x in lo]
    ref = outputs_and_grads(eager_augment, f32, M)
    tri = outputs_and_grads(relpos_prologue.augment, lo, M)
    eag = outputs_and_grads(eager_augment, lo, M)
    tri32 = outputs_and_grads(relpos_prologue.augment, f32, M)
    e_tri = {n: rel_err(a, b) for n, a, b in zip(GRADS, tri, ref)}
    e_eag = {n: rel_err(a, b) for n, a, b in zip(GRADS, eag, ref)}
    e_32 = {n: rel_err(a, b) for n, a, b in zip(GRADS, tri32, ref)}
    same_dtype = all(a.dtype == b.dtype and a.shape == b.shape for a, b in zip(tri, eag))
    ok = same_dtype and max(e_32.values()) < 1e-5 and all(e_tri[n] <= max(2 * e_eag[n], 1e-2) for n in GRADS)
    w_t, w_e, w_32 = (max(e, key=e.get) for e in (e_tri, e_eag, e_32))
    print(f"B={B} nh={nh} T={T:5d} M={M:3d} hs={hs:3d} d_R={d_pos:4d} | triton bf16 {e_tri[w_t]:.1e} ({w_t:5s}) | "
          f"eager bf16 {e_eag[w_e]:.1e} ({w_e:5s}) | triton f32 {e_32[w_32]:.1e} ({w_32:5s}) | "
          f"{'OK' if ok else 'FAIL'}", flush=True)
    record["prologue_checks"].append({"shape": [B, nh, T, M, hs, d_pos], "triton_bf16": e_tri, "eager_bf16": e_eag,
                                      "triton_f32": e_32, "ok": ok})
    return ok


def check_module(name, T, M, d_model=256, n_heads=4, d_pos=64, B=2):
    torch.manual_seed(0)
    ref = build(name, d_model=d_model, n_heads=n_heads, impl="reference", d_pos=d_pos).to(dev).float()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))  # u, v are zero-initialised
    fast = build(name, d_model=d_model, n_heads=n_heads, impl="fast", d_pos=d_pos).to(dev)
    fast.load_state_dict(ref.state_dict())
    fast = fast.to(dt)
    x, w = torch.randn(B, T, d_model, device=dev), torch.randn(B, T, d_model, device=dev)
    mem = torch.randn(B, M, d_model, device=dev) if M else None
    xr = x.clone().requires_grad_()
    yr = ref(xr, mem)
    gr = torch.autograd.grad((yr * w).sum(), [xr, *ref.parameters()])
    names = ["out", "x", *(n for n, _ in ref.named_parameters())]
    worst = {}
    for label, ctx in (("triton", contextlib.nullcontext()), ("eager", eager_prologue())):
        xf = x.to(dt).requires_grad_()
        with ctx:
            yf = fast(xf, None if mem is None else mem.to(dt))
            gf = torch.autograd.grad((yf.float() * w).sum(), [xf, *fast.parameters()])
        errs = dict(zip(names, [rel_err(yf, yr), *(rel_err(a, b) for a, b in zip(gf, gr))]))
        worst[label] = max(errs, key=errs.get), errs
    (nt, et), (ne, ee) = worst["triton"], worst["eager"]
    ok = et[nt] <= max(2 * ee[ne], 2e-2)
    print(f"{name:6s} T={T:5d} M={M:3d} d_R={d_pos:4d} | triton prologue {et[nt]:.1e} ({nt}) | "
          f"eager prologue {ee[ne]:.1e} ({ne}) | {'OK' if ok else 'FAIL'}", flush=True)
    record["module_checks"].append({"attn": name, "T": T, "M": M, "d_pos": d_pos, "triton": et, "eager": ee, "ok": ok})
    return ok


def ms(fn):
    """Median ms of `fn` by attnbench's own timing rules (warm-up until stable, adaptive repeats, CUDA events)."""
    return benchmark(fn, device=dev).median_ms


def module_fwd_bwd(mod, x, g):
    params = list(mod.parameters())
    return lambda: torch.autograd.grad(mod(x), [x, *params], g)


def time_T(T, B=4, nh=16, hs=64, d_pos=64):
    D = nh * hs
    x = torch.randn(B, T, D, device=dev, dtype=dt, requires_grad=True)
    g = torch.randn(B, T, D, device=dev, dtype=dt)
    row = {}
    for label, name, ctx in [("mha", "mha", None), ("rmha eager", "rmha", eager_prologue),
                             ("rmha triton", "rmha", None), ("rcmha eager", "rcmha", eager_prologue),
                             ("rcmha triton", "rcmha", None)]:
        mod = build(name, d_model=D, n_heads=nh, d_pos=d_pos, impl="fast").to(dev, dt)
        with (ctx or contextlib.nullcontext)():
            row[label] = ms(module_fwd_bwd(mod, x, g))
        del mod
    # SDPA alone at the fast path's widths: the floor the prologue adds to
    qa = torch.randn(B, nh, T, hs + d_pos, device=dev, dtype=dt, requires_grad=True)
    ka = torch.randn(B, nh, T, hs + d_pos, device=dev, dtype=dt, requires_grad=True)
    va = torch.randn(B, nh, T, hs, device=dev, dtype=dt, requires_grad=True)
    go = torch.randn(B, nh, T, hs, device=dev, dtype=dt)
    row["sdpa QK 128 / V 64"] = ms(lambda: torch.autograd.grad(
        F.scaled_dot_product_attention(qa, ka, va, is_causal=True, scale=hs ** -0.5), (qa, ka, va), go))
    # the same in the prologue's output layout ([B, T, nh, w] in memory) and v a view of a fused Q|K|V
    qa = torch.randn(B, T, nh, hs + d_pos, device=dev, dtype=dt).transpose(1, 2).requires_grad_()
    ka = torch.randn(B, T, nh, hs + d_pos, device=dev, dtype=dt).transpose(1, 2).requires_grad_()
    va = torch.randn(B, T, 3, nh, hs, device=dev, dtype=dt)[:, :, 2].transpose(1, 2).requires_grad_()
    out = F.scaled_dot_product_attention(qa, ka, va, is_causal=True, scale=hs ** -0.5)
    print(f"  sdpa output strides {tuple(out.stride())} for q_aug strides {tuple(qa.stride())}: merging heads is "
          f"{'a view' if out.transpose(1, 2).is_contiguous() else 'a copy'}")
    row["sdpa QK 128 / V 64, BTHD"] = ms(lambda: torch.autograd.grad(
        F.scaled_dot_product_attention(qa, ka, va, is_causal=True, scale=hs ** -0.5), (qa, ka, va), go))
    del qa, ka, va, go, out
    inputs = prologue_inputs(B, nh, T, 0, hs, d_pos, dt)
    gq = torch.randn(B, nh, T, hs + d_pos, device=dev, dtype=dt)
    gk = torch.randn(B, nh, T, hs + d_pos, device=dev, dtype=dt)
    for label, fn in (("prologue eager", eager_augment), ("prologue triton", relpos_prologue.augment)):
        row[label] = ms(lambda fn=fn: torch.autograd.grad(fn(*inputs, 0), inputs, (gq, gk)))
    print(f"\nT={T}  (B={B}, nh={nh}, hs={hs}, d_R={d_pos}, bf16, causal, fwd+bwd)")
    print(f"  {'what':22s} {'ms':>8s} {'x mha':>7s}")
    for k, v in row.items():
        print(f"  {k:22s} {v:8.3f} {v / row['mha']:6.2f}x", flush=True)
    record["timings"].append({"T": T, "B": B, "nh": nh, "hs": hs, "d_pos": d_pos, "ms": row})
    del x, g, inputs, gq, gk
    torch.cuda.empty_cache()


def main():
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    print("\n1a. prologue vs float32 eager augment: max over outputs and grads of norm-relative error (worst tensor)")
    ok = True
    for shape in [(2, 4, 333, 17, 64, 64), (4, 16, 1000, 0, 64, 64), (2, 4, 200, 64, 32, 16), (2, 2, 300, 32, 64, 256),
                  (1, 2, 130, 0, 64, 1024), (1, 2, 100, 20000, 64, 64), (2, 2, 257, 0, 128, 128)]:
        ok &= check_prologue(*shape)
    print("\n1b. modules, bf16 fast path vs float32 reference (materialised scores): output and every gradient")
    for name in ("rmha", "rcmha"):
        for T, M in [(64, 0), (333, 17), (1000, 64)]:
            ok &= check_module(name, T, M)
        ok &= check_module(name, 300, 32, d_pos=256)
    print(f"\ncorrectness: {'ALL OK' if ok else 'SOME FAILED (see FAIL rows)'}", flush=True)
    print("\n2. timings (goal: rmha triton <= 1.5x mha at T = 4096 and 16384)")
    for T in (1024, 4096, 16384):
        time_T(T)
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "relpos_prologue_bench.json"), "w") as f:
            json.dump(record, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
