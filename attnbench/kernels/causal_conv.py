"""Triton kernels for Primer's causal depth-wise convolution (attention.md, MDHA; So et al. 2021, §2):

    y[b,t,c] = Σ_{k<W} w[c,k] · x[b,t−k,c]          (zero for t−k < 0)
    dx[b,t,c] = Σ_{k<W} w[c,k] · g[b,t+k,c]         (zero for t+k ≥ L)
    dw[c,k]  = Σ_{b,t} g[b,t,c] · x[b,t−k,c]

Why: on an H100 (B=4, L=4096, C=1024, bf16, fwd+bwd) cuDNN's grouped conv1d on a transposed copy took 1.02 ms and
shifted adds 1.15 ms (0.78 ms compiled), against a memory floor of ~0.07 ms; MDHA runs three of these. Each kernel
here reads its inputs once in [B, L, C] layout (no transposed copy) and accumulates in float32.

`parts`: MDHA convolves one fused Q|K|V projection x [B, L, 3C] with one launch; the forward writes the three parts
as three contiguous [B, L, C] tensors (what split_heads and SDPA want), and the backward reads their three gradients
as they come from SDPA and writes dx [B, L, 3C] for the fused GEMM: no torch.cat of dq, dk, dv.

Performance notes (the old kernel, one [64, 128] block config, was ~5x off the memory floor):
- backward: dw is accumulated in [BT, BC] float32 registers over all of a program's tiles and reduced over time
  once per program (the old kernel reduced across warps, through shared memory, W times per tile); the per-program
  partial sums go to a small float32 buffer summed by torch (deterministic, no atomics);
- the taps w are loaded once per program; 64-bit arithmetic only in one scalar base offset per tile, 32-bit
  offsets inside a tile (no overflow for L·C ≥ 2³¹, no 64-bit vector math);
- block configs by name (FWD_BLOCKS, BWD_BLOCKS) and a heuristic by (L, C) (`pick`); scripts/conv_gpu_bench.py
  times every config on a GPU.

`import triton` happens only when a kernel is first needed, so CPU users and CI never need it. Under
TRITON_INTERPRET=1 the kernels run on CPU tensors through Triton's interpreter (the tests do so).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch

from attnbench.kernels import available, cdiv, interpreting  # noqa: F401 (available: the modules' API)

MAX_WIDTH = 4  # the backward keeps one dw accumulator per tap in registers
MAX_PARTS = 3


class Blocks(NamedTuple):
    """One launch configuration: a [t, c] tile, warps per program; backward only: programs per SM (each program
    walks consecutive tiles along time, so this sets the number of dw partial sums)."""

    t: int
    c: int
    warps: int
    per_sm: int = 0


# Registers per thread, from ptxas -v on sm_90a (bf16, W=3, three parts) — they set how many programs an SM holds
# (65536 registers per SM), and a streaming kernel wants many warps with loads in flight. The old [64, 128] tile with
# 4 warps needs 135 registers (3 programs, 12 warps per SM).
FWD_BLOCKS = {
    "t64c128w4": Blocks(64, 128, 4),  # the old kernel's tile; 135 registers
    "t32c128w4": Blocks(32, 128, 4),  # 80
    "t16c256w4": Blocks(16, 256, 4),  # 76
    "t16c128w4": Blocks(16, 128, 4),  # 51
    "t32c256w8": Blocks(32, 256, 8),  # 78
}
# Backward: per_sm near a whole number of waves for the registers (84 registers, allocated per warp in units of
# 256: 5 programs of 4 warps per SM; 80: 6; 132: 3), each program walking its tiles along time.
BWD_BLOCKS = {
    "t8c128w4x10": Blocks(8, 128, 4, 10),  # 84 registers
    "t16c64w4x12": Blocks(16, 64, 4, 12),  # 80
    "t4c256w4x10": Blocks(4, 256, 4, 10),  # 94
    "t16c128w4x6": Blocks(16, 128, 4, 6),  # 132
    "t8c128w4x30": Blocks(8, 128, 4, 30),  # shorter programs, 6 waves: less tail, more dw partial sums
}


def pick(L: int, C: int, backward: bool) -> Blocks:
    """The config for a [B, L, C] input (C: channels of one part), as measured on an H100 at B=4, 3 x 1024 channels
    (scripts/conv_gpu_bench.py, results/h100/probes/conv-a1fa1c9.txt): forward t32c128w4 best or within 1.5 % of it at
    L = 4096 and 16384; backward t16c128w4x6 best at 4096 (0.307 ms against 0.377), t8c128w4x10 at 16384."""
    if backward:
        if C < 128:
            return BWD_BLOCKS["t16c64w4x12"]
        return BWD_BLOCKS["t16c128w4x6" if L <= 4096 else "t8c128w4x10"]
    return FWD_BLOCKS["t32c128w4"]


@functools.cache
def _kernels(interpret: bool):
    """Compile-on-first-use kernels; cached per interpreter mode, which triton.jit reads when it decorates."""
    import triton
    import triton.language as tl

    @triton.jit
    def fwd(x_ptr, w_ptr, y0_ptr, y1_ptr, y2_ptr, L, Cp, NP: tl.constexpr, W: tl.constexpr, BT: tl.constexpr,
            BC: tl.constexpr):
        """Program (t-tile, c-tile, b·NP + p): y_p[b, t, c] for one [BT, BC] tile of part p."""
        pid_t, pid_c, pid_bp = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        b, p = pid_bp // NP, pid_bp % NP
        C = Cp * NP  # x's row stride
        r = tl.arange(0, BT)
        t = pid_t * BT + r
        c = pid_c * BC + tl.arange(0, BC)  # channel within the part
        cm = c < Cp
        row = b.to(tl.int64) * L + pid_t * BT  # flat index of the tile's first row
        xb = x_ptr + row * C + p * Cp
        acc = tl.zeros((BT, BC), dtype=tl.float32)
        for k in tl.static_range(W):
            wk = tl.load(w_ptr + (p * Cp + c) * W + k, mask=cm, other=0.0).to(tl.float32)
            m = ((t - k >= 0) & (t < L))[:, None] & cm[None, :]
            xs = tl.load(xb + (r - k)[:, None] * C + c[None, :], mask=m, other=0.0).to(tl.float32)
            acc += wk[None, :] * xs
        y_ptr = y0_ptr  # part p's output; p is a scalar, so the offsets keep their 16 B alignment
        if NP > 1:
            y_ptr = tl.where(p == 0, y0_ptr, tl.where(p == 1, y1_ptr, y2_ptr))
        m = (t < L)[:, None] & cm[None, :]
        tl.store(y_ptr + row * Cp + r[:, None] * Cp + c[None, :], acc.to(y_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def bwd(g0_ptr, g1_ptr, g2_ptr, x_ptr, w_ptr, dx_ptr, dwp_ptr, L, Cp, iters, NP: tl.constexpr,
            W: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr):
        """Program (chunk, c-tile, b·NP + p): `iters` consecutive [BT, BC] tiles of one batch row and part; dx per
        tile; dw[c, k] summed in [BT, BC] registers over the tiles, reduced over time once, stored as one row of
        the partial-sum buffer dwp [B·chunks, NP·Cp, W]."""
        tl.static_assert(W <= 4)
        pid_t, pid_c, pid_bp = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        b, p = pid_bp // NP, pid_bp % NP
        C = Cp * NP
        r = tl.arange(0, BT)
        c = pid_c * BC + tl.arange(0, BC)
        cm = c < Cp
        wb = w_ptr + (p * Cp + c) * W
        w0 = tl.load(wb, mask=cm, other=0.0).to(tl.float32)[None, :]
        w1 = w0 * 0
        w2 = w0 * 0
        w3 = w0 * 0
        if W > 1:
            w1 = tl.load(wb + 1, mask=cm, other=0.0).to(tl.float32)[None, :]
        if W > 2:
            w2 = tl.load(wb + 2, mask=cm, other=0.0).to(tl.float32)[None, :]
        if W > 3:
            w3 = tl.load(wb + 3, mask=cm, other=0.0).to(tl.float32)[None, :]
        g_ptr = g0_ptr
        if NP > 1:
            g_ptr = tl.where(p == 0, g0_ptr, tl.where(p == 1, g1_ptr, g2_ptr))
        a0 = tl.zeros((BT, BC), dtype=tl.float32)  # a_k[i, c] = Σ over this program's tiles of g[t_i]·x[t_i − k]
        a1 = tl.zeros((BT, BC), dtype=tl.float32)
        a2 = tl.zeros((BT, BC), dtype=tl.float32)
        a3 = tl.zeros((BT, BC), dtype=tl.float32)
        i = 0
        while i < iters:  # not `for i in range(iters)`: Triton 3.6's interpreter fails on it under NumPy 2.4
            t0 = (pid_t * iters + i) * BT
            t = t0 + r
            tm = t < L
            row = b.to(tl.int64) * L + t0
            gb = g_ptr + row * Cp
            xb = x_ptr + row * C + p * Cp
            go = r[:, None] * Cp + c[None, :]
            xo = r[:, None] * C + c[None, :]
            m = tm[:, None] & cm[None, :]
            g = tl.load(gb + go, mask=m, other=0.0).to(tl.float32)
            a0 += g * tl.load(xb + xo, mask=m, other=0.0).to(tl.float32)
            dx = w0 * g
            if W > 1:
                dx += w1 * tl.load(gb + go + Cp, mask=(t + 1 < L)[:, None] & cm[None, :], other=0.0).to(tl.float32)
                a1 += g * tl.load(xb + xo - C, mask=((t >= 1) & tm)[:, None] & cm[None, :], other=0.0).to(tl.float32)
            if W > 2:
                dx += w2 * tl.load(gb + go + 2 * Cp, mask=(t + 2 < L)[:, None] & cm[None, :],
                                   other=0.0).to(tl.float32)
                a2 += g * tl.load(xb + xo - 2 * C, mask=((t >= 2) & tm)[:, None] & cm[None, :],
                                  other=0.0).to(tl.float32)
            if W > 3:
                dx += w3 * tl.load(gb + go + 3 * Cp, mask=(t + 3 < L)[:, None] & cm[None, :],
                                   other=0.0).to(tl.float32)
                a3 += g * tl.load(xb + xo - 3 * C, mask=((t >= 3) & tm)[:, None] & cm[None, :],
                                  other=0.0).to(tl.float32)
            tl.store(dx_ptr + row * C + p * Cp + xo, dx.to(dx_ptr.dtype.element_ty), mask=m)
            i += 1
        pb = dwp_ptr + (b * tl.num_programs(0) + pid_t).to(tl.int64) * C * W + (p * Cp + c) * W
        tl.store(pb, tl.sum(a0, axis=0), mask=cm)
        if W > 1:
            tl.store(pb + 1, tl.sum(a1, axis=0), mask=cm)
        if W > 2:
            tl.store(pb + 2, tl.sum(a2, axis=0), mask=cm)
        if W > 3:
            tl.store(pb + 3, tl.sum(a3, axis=0), mask=cm)

    return fwd, bwd


def _sm_count(x: torch.Tensor) -> int:
    return torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 4


def _three(ts):
    """Pad a list of 1..3 tensors to three kernel arguments (unused ones repeat the first)."""
    return [*ts, *[ts[0]] * (MAX_PARTS - len(ts))]


def _forward(x: torch.Tensor, w: torch.Tensor, parts: int, blocks: Blocks | None) -> list[torch.Tensor]:
    B, L, C = x.shape
    Cp = C // parts
    bl = blocks or pick(L, Cp, backward=False)
    fwd, _ = _kernels(interpreting())
    ys = [torch.empty(B, L, Cp, device=x.device, dtype=x.dtype) for _ in range(parts)]
    grid = (cdiv(L, bl.t), cdiv(Cp, bl.c), B * parts)
    fwd[grid](x, w, *_three(ys), L, Cp, NP=parts, W=w.shape[1], BT=bl.t, BC=bl.c, num_warps=bl.warps)
    return ys


def _backward(gs: list[torch.Tensor], x: torch.Tensor, w: torch.Tensor, blocks: Blocks | None):
    B, L, C = x.shape
    parts, W = len(gs), w.shape[1]
    Cp = C // parts
    bl = blocks or pick(L, Cp, backward=True)
    _, bwd = _kernels(interpreting())
    n_t, n_c = cdiv(L, bl.t), cdiv(Cp, bl.c)
    chunks = max(1, min(n_t, bl.per_sm * _sm_count(x) // (B * parts * n_c)))  # programs along t
    iters = cdiv(n_t, chunks)
    chunks = cdiv(n_t, iters)
    dx = torch.empty_like(x)
    dwp = torch.empty(B * chunks, C, W, device=x.device, dtype=torch.float32)  # partial sums of dw
    grid = (chunks, n_c, B * parts)
    bwd[grid](*_three(gs), x, w, dx, dwp, L, Cp, iters, NP=parts, W=W, BT=bl.t, BC=bl.c, num_warps=bl.warps)
    return dx, dwp.sum(0).to(w.dtype)


class _CausalConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, parts, fwd_blocks, bwd_blocks):
        x, w = x.contiguous(), w.contiguous()
        ctx.save_for_backward(x, w)
        ctx.bwd_blocks = bwd_blocks
        return tuple(_forward(x, w, parts, fwd_blocks))

    @staticmethod
    def backward(ctx, *gs):
        x, w = ctx.saved_tensors
        dx, dw = _backward([g.contiguous() for g in gs], x, w, ctx.bwd_blocks)
        return dx, dw, None, None, None


def _check_args(x: torch.Tensor, w: torch.Tensor, parts: int) -> None:
    C, W = w.shape
    if x.dim() != 3 or x.shape[-1] != C or C % parts or not 1 <= parts <= MAX_PARTS or not 1 <= W <= MAX_WIDTH:
        raise ValueError(f"causal_conv: x {tuple(x.shape)}, w {tuple(w.shape)}, parts {parts}: want x [B, L, C], "
                         f"w [C, W] with W <= {MAX_WIDTH}, C divisible by parts <= {MAX_PARTS}")


@torch.compiler.disable  # under torch.compile (--compile): a graph break, not dynamo capturing the launches
def causal_conv_parts(x: torch.Tensor, w: torch.Tensor, parts: int = 1, fwd_blocks: Blocks | None = None,
                      bwd_blocks: Blocks | None = None) -> tuple[torch.Tensor, ...]:
    """x [B, L, C], w [C, W] -> `parts` contiguous tensors [B, L, C/parts] (the output's channels in order), in x's
    dtype (float32 accumulation); differentiable in x and w. Blocks: None picks by (L, C/parts)."""
    _check_args(x, w, parts)
    return _CausalConv.apply(x, w, parts, fwd_blocks, bwd_blocks)


def causal_conv(x: torch.Tensor, w: torch.Tensor, fwd_blocks: Blocks | None = None,
                bwd_blocks: Blocks | None = None) -> torch.Tensor:
    """x [B, L, C], w [C, W] -> y [B, L, C] in x's dtype (float32 accumulation); differentiable in x and w."""
    return causal_conv_parts(x, w, 1, fwd_blocks, bwd_blocks)[0]
