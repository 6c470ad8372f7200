"""Triton prologue of RMHA / RCMHA's fast exact path (attention.md, RMHA, "A fast exact path exists"):

    q_aug[i] = [q_i + u ; Q'_i],   k_aug[j] = [k_j ; K'_j]                       (per head h; hs + d_R wide)
    a_i = W_hᵀ(q_i + v) = [a_s; a_c],  Q'_i = [a_s ⊙ sin(i'ω) + a_c ⊙ cos(i'ω); a_c ⊙ sin(i'ω) − a_s ⊙ cos(i'ω)]
    K'_j = [cos(jω); sin(jω)],  i' = M + i

the same values as `attnbench.attention._relative.augment` (its eager oracle), which costs ~20 small kernels forward
and backward. Here: one forward kernel (q_aug and k_aug tile by tile) and one backward kernel (dq, dk and partial
sums of du, dv, dW_R).

Written as Q' = a ⊙ S + a_swap ⊙ C with a_swap = [a_c; a_s] = q (W_h P) + W_hᵀv P (P swaps the two halves), so every
tile is full width (tl.dot needs N >= 16, d_R = 16 has halves of 8), S = [sin; sin], C = [cos; −cos]. Backward:
da = g' ⊙ S + (g' ⊙ C) P, i.e. da_j = g'_j S_j + g'_{j⊕} C_{j⊕} with j⊕ = (j + d_R/2) mod d_R.

Angles: i'·ω in float32 loses digits for i' up to 32768, so sin and cos come from a table computed in float64
(`_tables`, cached per length) and read as float32, as the eager path casts them; K' is a second table already in
the output dtype, copied as is. Everything else is computed in float32 and rounded once on store.

dW_R = Σ_{b,t} q_tᵀ da_t + v ⊗ Σ da is a reduction over B and T. Each backward program walks ITERS consecutive
T tiles of one (b, h), keeps its [hs, d_R] sum in registers and stores it once into a float32 partial buffer that
one torch.sum reduces (deterministic, unlike atomics). With ~1024 programs the buffer is 1024·hs·d_R floats (16 MiB
at hs = d_R = 64: ~10 µs of traffic on an H100, against ~65 MiB of dq_aug the kernel must read anyway); the other
choice, writing da [B, nh, T, d_R] and one matmul, moves 2-4x more bytes and needs a transposed copy of q.

`import triton` happens only when a kernel is first needed (as in causal_conv.py), so CPU users and CI never need
it. Under TRITON_INTERPRET=1 the kernels run on CPU tensors through Triton's interpreter (the tests do so).
"""

from __future__ import annotations

import functools

import torch

from attnbench.kernels import available, cdiv, interpreting  # noqa: F401 (available: the modules' API)

BLOCK_T = 64
TARGET_PROGRAMS = 1024  # backward: enough programs to fill an H100 (132 SMs), a small partial-sum buffer
DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _pow2_at_least_16(n: int) -> bool:
    return n >= 16 and n & (n - 1) == 0


def supported(q: torch.Tensor, k: torch.Tensor, w_r: torch.Tensor) -> bool:
    """Whether the kernels take these inputs: Triton available, float16/bfloat16/float32, hs and d_R powers of two
    >= 16, hs <= 256 (one q tile in registers). Otherwise callers use the eager `augment`."""
    B, nh, T, hs = q.shape
    return (available(q) and q.dtype in DTYPES and k.dtype == q.dtype and w_r.dtype in DTYPES
            and _pow2_at_least_16(hs) and hs <= 256 and _pow2_at_least_16(w_r.shape[1])
            and 0 < T <= k.shape[-2] and B * nh <= 65535)


def _chunk(hs: int, d_pos: int) -> int:
    """Columns of Q' per inner step: the backward keeps an [hs, chunk] float32 sum in registers."""
    return min(d_pos, max(16, 8192 // hs))


@functools.lru_cache(maxsize=16)
def _tables(L: int, d_pos: int, device: torch.device, dtype: torch.dtype):
    """[sin(pω); cos(pω)] as float32 and K' = [cos(pω); sin(pω)] in `dtype`, p = 0..L−1, angles in float64 as in
    `augment` (attention.md, RMHA)."""
    from attnbench.attention._common import sinusoid

    sc = sinusoid(torch.arange(L, device=device), d_pos)  # [L, d_R] float64
    half = d_pos // 2
    return sc.float().contiguous(), torch.cat([sc[:, half:], sc[:, :half]], dim=-1).to(dtype).contiguous()


@functools.cache
def _kernels(interpret: bool):
    """Compile-on-first-use kernels; cached per interpreter mode, which triton.jit reads when it decorates."""
    import triton
    import triton.language as tl

    @triton.jit
    def fwd(q_ptr, k_ptr, u_ptr, v_ptr, w_ptr, tab_ptr, kpos_ptr, qa_ptr, ka_ptr, T, L, M, NH,
            sqb, sqh, sqt, sqc, skb, skh, skt, skc, sab, sah, sat, skab, skah, skat,
            HS: tl.constexpr, DR: tl.constexpr, DC: tl.constexpr, BT: tl.constexpr, PREC: tl.constexpr,
            UPCAST: tl.constexpr):
        """One program: rows [pid·BT, pid·BT + BT) of k_aug and, where they exist, of q_aug, for one (b, h)."""
        pid, bh = tl.program_id(0), tl.program_id(1)
        b, h = bh // NH, bh % NH
        HALF: tl.constexpr = DR // 2
        rows = pid * BT + tl.arange(0, BT)
        cols = tl.arange(0, HS)
        # k_aug = [k ; K']
        km = (rows < L)[:, None]
        ka = ka_ptr + b.to(tl.int64) * skab + h * skah + rows[:, None] * skat  # unit stride along the width
        kt = tl.load(k_ptr + b.to(tl.int64) * skb + h * skh + rows[:, None] * skt + cols[None, :] * skc, mask=km)
        tl.store(ka + cols[None, :], kt, mask=km)
        for c0 in range(0, DR, DC):
            c = c0 + tl.arange(0, DC)
            kp = tl.load(kpos_ptr + rows[:, None] * DR + c[None, :], mask=km)
            tl.store(ka + HS + c[None, :], kp, mask=km)
        # q_aug = [q + u ; Q']
        if pid * BT < T:
            qm = (rows < T)[:, None]
            qa = qa_ptr + b.to(tl.int64) * sab + h * sah + rows[:, None] * sat
            qt = tl.load(q_ptr + b.to(tl.int64) * sqb + h * sqh + rows[:, None] * sqt + cols[None, :] * sqc,
                         mask=qm, other=0.0)
            qd = qt
            if UPCAST:  # the interpreter's bfloat16 dot is wrong (Triton 3.6, NumPy has no bfloat16)
                qd = qt.to(tl.float32)
            u = tl.load(u_ptr + h * HS + cols).to(tl.float32)
            tl.store(qa + cols[None, :], (qt.to(tl.float32) + u[None, :]).to(qa_ptr.dtype.element_ty), mask=qm)
            v = tl.load(v_ptr + h * HS + cols).to(tl.float32)
            pos = M + rows
            for c0 in range(0, DR, DC):
                c = c0 + tl.arange(0, DC)
                csw = (c + HALF) % DR
                ch = c % HALF
                w = tl.load(w_ptr + (h * HS + cols[:, None]) * DR + c[None, :])  # W_h[:, c]  [HS, DC]
                wsw = tl.load(w_ptr + (h * HS + cols[:, None]) * DR + csw[None, :])
                bias = tl.sum(v[:, None] * w.to(tl.float32), axis=0)  # W_hᵀv in float32
                bias_sw = tl.sum(v[:, None] * wsw.to(tl.float32), axis=0)
                a = tl.dot(qd, w.to(qt.dtype).to(qd.dtype), input_precision=PREC) + bias[None, :]  # [BT, DC]
                a_sw = tl.dot(qd, wsw.to(qt.dtype).to(qd.dtype), input_precision=PREC) + bias_sw[None, :]
                s = tl.load(tab_ptr + pos[:, None] * DR + ch[None, :], mask=qm, other=0.0)
                co = tl.load(tab_ptr + pos[:, None] * DR + HALF + ch[None, :], mask=qm, other=0.0)
                sign = tl.where(c < HALF, 1.0, -1.0)
                qp = a * s + a_sw * (co * sign[None, :])
                tl.store(qa + HS + c[None, :], qp.to(qa_ptr.dtype.element_ty), mask=qm)

    @triton.jit
    def bwd(qa_ptr, u_ptr, w_ptr, tab_ptr, gq_ptr, gk_ptr, dq_ptr, dk_ptr, dqp_ptr, dw_ptr, ds_ptr, du_ptr,
            T, L, M, NH, BNH,
            sab, sah, sat, sgqb, sgqh, sgqt, sgkb, sgkh, sgkt, sdb, sdh, sdt, sdc, skb, skh, skt, skc,
            HS: tl.constexpr, DR: tl.constexpr, DC: tl.constexpr, BT: tl.constexpr, ITERS: tl.constexpr,
            ONE_CHUNK: tl.constexpr,
            PREC: tl.constexpr, UPCAST: tl.constexpr):
        """One program: ITERS consecutive T tiles of one (b, h) and Q' columns [dc·DC, dc·DC + DC).
        dk = dk_aug[..., :hs]; da = g'⊙S + (g'⊙C)P; dq = dq_aug[..., :hs] + da W_hᵀ (summed over column chunks:
        in registers when there is one, else through a float32 buffer); partial Σ qᵀda, Σ da, Σ dq_aug[..., :hs].
        q is not kept: it is read back as q_aug[..., :hs] − u (kept anyway by the attention kernel), within one
        rounding of q + u of the original."""
        g_id, bh, dc = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        b, h = bh // NH, bh % NH
        HALF: tl.constexpr = DR // 2
        cols = tl.arange(0, HS)
        c = dc * DC + tl.arange(0, DC)
        csw = (c + HALF) % DR
        ch = c % HALF
        sign_sw = tl.where(c >= HALF, 1.0, -1.0)  # C at column c⊕
        w = tl.load(w_ptr + (h * HS + cols[:, None]) * DR + c[None, :])  # W_h[:, c]  [HS, DC]
        dw = tl.zeros((HS, DC), dtype=tl.float32)
        ds = tl.zeros((DC,), dtype=tl.float32)
        du = tl.zeros((HS,), dtype=tl.float32)
        u = tl.load(u_ptr + h * HS + cols).to(tl.float32)
        # ITERS is a constexpr (a power of two: few variants): Triton 3.6's interpreter fails on range(runtime int)
        # under NumPy 2.4, and a constant trip count lets the compiler pipeline the loads
        for i in range(ITERS):
            t0 = (g_id * ITERS + i) * BT
            rows = t0 + tl.arange(0, BT)
            if dc == 0:
                km = (rows < L)[:, None]
                gk = tl.load(gk_ptr + b.to(tl.int64) * sgkb + h * sgkh + rows[:, None] * sgkt + cols[None, :],
                             mask=km)
                tl.store(dk_ptr + b.to(tl.int64) * skb + h * skh + rows[:, None] * skt + cols[None, :] * skc, gk,
                         mask=km)
            if t0 < T:
                qm = (rows < T)[:, None]
                g = gq_ptr + b.to(tl.int64) * sgqb + h * sgqh + rows[:, None] * sgqt
                gp = tl.load(g + HS + c[None, :], mask=qm, other=0.0).to(tl.float32)
                gp_sw = tl.load(g + HS + csw[None, :], mask=qm, other=0.0).to(tl.float32)
                pos = M + rows
                s = tl.load(tab_ptr + pos[:, None] * DR + ch[None, :], mask=qm, other=0.0)
                co = tl.load(tab_ptr + pos[:, None] * DR + HALF + ch[None, :], mask=qm, other=0.0)
                da = gp * s + gp_sw * (co * sign_sw[None, :])  # [BT, DC], zero on masked rows
                qa = tl.load(qa_ptr + b.to(tl.int64) * sab + h * sah + rows[:, None] * sat + cols[None, :],
                             mask=qm, other=0.0)
                qt = (qa.to(tl.float32) - u[None, :]).to(qa_ptr.dtype.element_ty)  # q = (q + u) − u
                da_lp = da.to(qt.dtype)  # rounded as the eager path's da
                qd = qt
                wd = w.to(qt.dtype)
                if UPCAST:  # the interpreter's bfloat16 dot is wrong (Triton 3.6, NumPy has no bfloat16)
                    qd, wd, da_lp = qt.to(tl.float32), wd.to(tl.float32), da_lp.to(tl.float32)
                dw += tl.dot(tl.trans(qd), da_lp, input_precision=PREC)
                ds += tl.sum(da, axis=0)
                dqt = tl.dot(da_lp, tl.trans(wd), input_precision=PREC)  # [BT, HS]
                if dc == 0:
                    gqt = tl.load(g + cols[None, :], mask=qm, other=0.0).to(tl.float32)
                    du += tl.sum(gqt, axis=0)
                    dqt += gqt
                if ONE_CHUNK:
                    tl.store(dq_ptr + b.to(tl.int64) * sdb + h * sdh + rows[:, None] * sdt + cols[None, :] * sdc,
                             dqt.to(dq_ptr.dtype.element_ty), mask=qm)
                else:
                    tl.store(dqp_ptr + (dc * BNH + bh).to(tl.int64) * T * HS + rows[:, None] * HS + cols[None, :],
                             dqt, mask=qm)
        part = g_id * BNH + bh  # partial sums [G, B·nh, ...]
        tl.store(dw_ptr + part.to(tl.int64) * HS * DR + cols[:, None] * DR + c[None, :], dw)
        tl.store(ds_ptr + part * DR + c, ds)
        if dc == 0:
            tl.store(du_ptr + part * HS + cols, du)

    return fwd, bwd


def _upcast(dtype: torch.dtype) -> bool:
    return interpreting() and dtype == torch.bfloat16


def _precision(dtype: torch.dtype) -> str:
    """Exact float32 products for float32 inputs (as torch's default matmul); ignored for 16-bit ones."""
    return "ieee" if dtype == torch.float32 or _upcast(dtype) else "tf32"


def _forward(q, k, u, v, w_r, M: int, tab, kpos):
    B, nh, T, hs = q.shape
    L, d_pos = k.shape[-2], w_r.shape[1]
    fwd, _ = _kernels(interpreting())
    dc = _chunk(hs, d_pos)
    # [B, T, nh, w] in memory, as the projections' heads: the attention kernel then returns its output in the same
    # layout, so that merging the heads for W_o is a view, not a copy kept for backward (attnbench.attention._common)
    q_aug = torch.empty(B, T, nh, hs + d_pos, device=q.device, dtype=q.dtype).transpose(1, 2)
    k_aug = torch.empty(B, L, nh, hs + d_pos, device=q.device, dtype=q.dtype).transpose(1, 2)
    grid = (cdiv(L, BLOCK_T), B * nh)
    fwd[grid](q, k, u, v, w_r, tab, kpos, q_aug, k_aug, T, L, M, nh, *q.stride(), *k.stride(),
              *q_aug.stride()[:3], *k_aug.stride()[:3],
              HS=hs, DR=d_pos, DC=dc, BT=BLOCK_T, PREC=_precision(q.dtype), UPCAST=_upcast(q.dtype),
              num_warps=4 if hs * dc <= 4096 else 8)
    return q_aug, k_aug


def _empty_like(shape, stride, dtype, device) -> torch.Tensor:
    """An empty tensor with these strides when they are dense (a transposed view of [B, L, nh, hs]: the gradient then
    needs no copy on its way back to the projection), else contiguous."""
    expected = 1
    for d in sorted(range(len(shape)), key=lambda d: stride[d]):
        if shape[d] != 1 and stride[d] != expected:
            return torch.empty(shape, dtype=dtype, device=device)
        expected *= shape[d]
    return torch.empty_strided(shape, stride, dtype=dtype, device=device)


def _backward(g_q, g_k, q_aug, u, q_meta, k_meta, w_r, M: int, tab):
    (B, nh, T, hs), q_stride = q_meta
    k_shape, k_stride, k_dtype = k_meta
    L, d_pos = k_shape[-2], w_r.shape[1]
    _, bwd = _kernels(interpreting())
    dc = _chunk(hs, d_pos)
    n_dc, n_t = d_pos // dc, cdiv(L, BLOCK_T)
    groups = max(1, min(n_t, TARGET_PROGRAMS // (B * nh * n_dc)))  # programs along T
    iters = 1 << (cdiv(n_t, groups) - 1).bit_length()  # T tiles per program, a power of two
    groups = cdiv(n_t, iters)
    dev, dtype = q_aug.device, q_aug.dtype
    f32 = dict(device=dev, dtype=torch.float32)
    dq = _empty_like((B, nh, T, hs), q_stride, dtype, dev)
    dk = _empty_like(k_shape, k_stride, k_dtype, dev)
    dqp = torch.empty(n_dc, B * nh, T, hs, **f32) if n_dc > 1 else dq
    dw = torch.empty(groups, B * nh, hs, d_pos, **f32)
    ds = torch.empty(groups, B * nh, d_pos, **f32)
    du = torch.empty(groups, B * nh, hs, **f32)
    grid = (groups, B * nh, n_dc)
    bwd[grid](q_aug, u, w_r, tab, g_q, g_k, dq, dk, dqp, dw, ds, du, T, L, M, nh, B * nh,
              *q_aug.stride()[:3], *g_q.stride()[:3], *g_k.stride()[:3], *dq.stride(), *dk.stride(),
              HS=hs, DR=d_pos, DC=dc, BT=BLOCK_T, ITERS=iters, ONE_CHUNK=n_dc == 1, PREC=_precision(dtype),
              UPCAST=_upcast(dtype),
              num_warps=4 if hs * dc <= 4096 else 8)
    if n_dc > 1:
        dq.copy_(dqp.sum(0).view(B, nh, T, hs))
    dw = dw.view(groups * B, nh, hs, d_pos).sum(0)  # Σ_{b,t} q_tᵀ da_t per head
    ds = ds.view(groups * B, nh, d_pos).sum(0)  # Σ_{b,t} da_t
    du = du.view(groups * B, nh, hs).sum(0)
    return dq, dk, du, dw, ds


class _Augment(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, u, v, w_r, M: int):
        L, d_pos = k.shape[-2], w_r.shape[1]
        tab, kpos = _tables(L, d_pos, q.device, q.dtype)
        u, v, w_r = u.contiguous(), v.contiguous(), w_r.contiguous()
        q_aug, k_aug = _forward(q, k, u, v, w_r, M, tab, kpos)
        # q itself is not kept (RCMHA's convolved q would be one more B·T·C tensor): the backward reads it back from
        # q_aug = [q + u; Q'], which the attention kernel keeps anyway
        ctx.save_for_backward(q_aug, u, v, w_r)
        ctx.q_meta = (q.shape, q.stride())
        ctx.k_meta = (k.shape, k.stride(), k.dtype)
        ctx.M, ctx.tab = M, tab
        return q_aug, k_aug

    @staticmethod
    def backward(ctx, g_q, g_k):
        q_aug, u, v, w_r = ctx.saved_tensors
        nh, hs = ctx.q_meta[0][1], ctx.q_meta[0][3]
        g_q, g_k = (g if g.stride(-1) == 1 else g.contiguous() for g in (g_q, g_k))
        dq, dk, du, dw, ds = _backward(g_q, g_k, q_aug, u, ctx.q_meta, ctx.k_meta, w_r, ctx.M, ctx.tab)
        w = w_r.view(nh, hs, -1).float()
        dw = dw + v.float()[:, :, None] * ds[:, None, :]  # the W_Rᵀv term: v ⊗ Σ da
        dv = torch.einsum("hcr,hr->hc", w, ds)  # W_h Σ da
        return dq, dk, du.to(u.dtype), dv.to(v.dtype), dw.view_as(w_r).to(w_r.dtype), None


@torch.compiler.disable  # under torch.compile (--compile): a graph break, not dynamo capturing the launches
def augment(q, k, u, v, w_r, M: int):
    """q [B,nh,T,hs], k [B,nh,L,hs], u, v [nh,hs], w_r [nh·hs, d_R] -> q_aug [B,nh,T,hs+d_R], k_aug [B,nh,L,hs+d_R]
    in q's dtype, the values of attnbench.attention._relative.augment; differentiable in q, k, u, v, w_r."""
    return _Augment.apply(q, k, u, v, w_r, M)
