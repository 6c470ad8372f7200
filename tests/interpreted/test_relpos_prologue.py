"""The Triton prologue of the relative fast path (attnbench/kernels/relpos_prologue.py) against its eager oracle
`augment` (attnbench/attention/_relative.py) and the float64 reference attention, run on CPU through Triton's
interpreter, in a process of their own (tests/test_interpreted.py). Skipped when triton is not installed (CI)."""

import pytest

from triton_interpreter import require

require()

import torch  # noqa: E402

from attnbench.attention import build  # noqa: E402
from attnbench.attention._relative import augment  # noqa: E402
from attnbench.kernels import relpos_prologue as kernel  # noqa: E402


def _inputs(B, nh, T, M, hs, d_pos, dtype=torch.float32, seed=0):
    """q, k as split_heads makes them (transposed views of [B, T, nh, hs]), u, v, W_R all non-zero."""
    g = torch.Generator().manual_seed(seed)
    L = M + T
    q = torch.randn(B, T, nh, hs, generator=g).to(dtype).transpose(1, 2).requires_grad_()
    k = torch.randn(B, L, nh, hs, generator=g).to(dtype).transpose(1, 2).requires_grad_()
    u = torch.randn(nh, hs, generator=g).to(dtype).requires_grad_()
    v = torch.randn(nh, hs, generator=g).to(dtype).requires_grad_()
    w_r = (0.1 * torch.randn(nh * hs, d_pos, generator=g)).to(dtype).requires_grad_()
    return q, k, u, v, w_r


def _outputs_and_grads(fn, inputs, M, seed=1):
    q_aug, k_aug = fn(*inputs, M)
    g = torch.Generator().manual_seed(seed)
    gq = torch.randn(q_aug.shape, generator=g).to(q_aug.dtype)
    gk = torch.randn(k_aug.shape, generator=g).to(k_aug.dtype)
    return (q_aug, k_aug, *torch.autograd.grad((q_aug, k_aug), inputs, (gq, gk)))


NAMES = ["q_aug", "k_aug", "dq", "dk", "du", "dv", "dW_R"]
# (B, nh, T, M, hs, d_R): T not a multiple of BLOCK_T (64), memory M > 0, M > T, several backward T tiles per
# program, d_R = 16 (halves of 8), hs = 128 with d_R = 256 (two column chunks: the float32 dq buffer), hs = 256
SHAPES = [(2, 3, 70, 0, 16, 16), (1, 2, 130, 17, 32, 64), (1, 1, 50, 100, 64, 32), (2, 2, 200, 0, 16, 32),
          (1, 2, 65, 3, 128, 256), (1, 1, 33, 0, 256, 16), (1, 1, 1, 0, 16, 16)]


@pytest.mark.parametrize("B,nh,T,M,hs,d_pos", SHAPES)
def test_matches_eager_augment_float32(B, nh, T, M, hs, d_pos):
    inputs = _inputs(B, nh, T, M, hs, d_pos)
    assert kernel.supported(*inputs[:2], inputs[4])
    got = _outputs_and_grads(kernel.augment, inputs, M)
    want = _outputs_and_grads(augment, inputs, M)
    for name, a, b, x in zip(NAMES, got, want, [None, None, *inputs]):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        if x is not None:
            assert a.shape == x.shape, name
        # float32 accumulation, other summation orders: errors relative to the largest value
        assert (a - b).abs().max().item() <= 2e-6 * max(1.0, b.abs().max().item()), name


@pytest.mark.parametrize("hs,d_pos", [(16, 32), (128, 256)])
def test_several_tiles_per_backward_program(hs, d_pos, monkeypatch):
    """Few backward programs: each walks several T tiles (5 tiles of L = 320 in groups of 4, the last ones past L)
    and sums its dW_R, Σda, du partials over them; (128, 256): two column chunks as well."""
    monkeypatch.setattr(kernel, "TARGET_PROGRAMS", 8)
    inputs = _inputs(2, 2, 300, 20, hs, d_pos)
    got = _outputs_and_grads(kernel.augment, inputs, 20)
    want = _outputs_and_grads(augment, inputs, 20)
    for name, a, b in zip(NAMES, got, want):
        assert (a - b).abs().max().item() <= 2e-6 * max(1.0, b.abs().max().item()), name


def test_gradients_keep_the_head_layout():
    """dq, dk come back with q's and k's strides (transposed views of [B, T, nh, hs]): no copy before the
    projection's backward."""
    inputs = _inputs(2, 3, 40, 5, 16, 16)
    _, _, dq, dk, *_ = _outputs_and_grads(kernel.augment, inputs, 5)
    assert dq.stride() == inputs[0].stride() and dk.stride() == inputs[1].stride()


def test_outputs_in_head_layout_and_q_not_kept():
    """q_aug and k_aug are transposed views of [B, T, nh, w] (so the attention's output merges its heads without a
    copy), and the node keeps q_aug rather than q: RCMHA's convolved q is then freed after the forward."""
    inputs = _inputs(2, 3, 40, 5, 16, 32)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        q_aug, k_aug = kernel.augment(*inputs, 5)
    assert q_aug.transpose(1, 2).is_contiguous() and k_aug.transpose(1, 2).is_contiguous()
    q = inputs[0]
    assert not any(t.untyped_storage().data_ptr() == q.untyped_storage().data_ptr() for t in saved)
    assert any(t is q_aug or t.data_ptr() == q_aug.data_ptr() for t in saved)
    # besides q_aug only the parameters: u, v, W_R
    assert sum(t.numel() for t in saved) == q_aug.numel() + sum(x.numel() for x in inputs[2:])


def test_positions_follow_memory():
    """Query i sits at M + i: the same queries with another M give another Q'; k_aug's K' rows are j = 0..L−1."""
    q, k, u, v, w_r = _inputs(1, 1, 20, 5, 16, 16)
    a, k_aug = kernel.augment(q, k, u, v, w_r, 5)
    b, _ = augment(q, k[:, :, 1:], u, v, w_r, 4)
    assert (a - b)[..., 16:].abs().max() > 1e-2
    omega = 1.0 / 10000.0 ** (torch.arange(0, 16, 2, dtype=torch.float64) / 16)
    ang = torch.arange(25, dtype=torch.float64)[:, None] * omega
    assert torch.equal(k_aug[0, 0, :, 16:], torch.cat([ang.cos(), ang.sin()], -1).float())


def test_large_positions_use_float64_angles():
    """At i' ~ 20000 a float32 angle i'·ω is off by ~1e-3 rad; the kernel's sin/cos must match float64 angles."""
    M, T = 20000, 8
    q, k, u, v, w_r = _inputs(1, 1, T, M, 16, 16)
    got = kernel.augment(q, k, u, v, w_r, M)
    want = augment(q, k, u, v, w_r, M)
    for a, b in zip(got, want):
        assert (a - b).abs().max().item() <= 2e-6 * max(1.0, b.abs().max().item())


def test_bf16_close_to_float32():
    """Interpreted, bfloat16 stores truncate (Triton 3.6 on NumPy): errors here are ~2x those on a GPU, which rounds
    to nearest (scripts/relpos_prologue_bench.py compares them with the eager path's)."""
    inputs = _inputs(2, 2, 70, 9, 32, 64, dtype=torch.bfloat16)
    got = _outputs_and_grads(kernel.augment, inputs, 9)
    f32 = [x.detach().float().requires_grad_() for x in inputs]
    want = _outputs_and_grads(augment, f32, 9)
    for name, a, b in zip(NAMES, got, want):
        assert a.dtype == torch.bfloat16, name
        assert ((a.float() - b).norm() / b.norm()).item() < 1e-2, name


def test_unsupported_shapes_fall_back():
    q, k, u, v, w_r = _inputs(1, 1, 8, 0, 24, 16)  # hs not a power of two
    assert not kernel.supported(q, k, w_r)
    q, k, u, v, w_r = _inputs(1, 1, 8, 0, 16, 8)  # d_R < 16
    assert not kernel.supported(q, k, w_r)
    q, k, u, v, w_r = _inputs(1, 1, 8, 0, 16, 16, dtype=torch.float64)
    assert not kernel.supported(q, k, w_r)


@pytest.mark.parametrize("name", ["rmha", "rcmha"])
def test_module_fast_path_matches_float64_reference(name, monkeypatch):
    """The attention modules take the kernel under the interpreter (float32) and equal the float64 reference."""
    torch.manual_seed(0)
    ref = build(name, d_model=64, n_heads=2, impl="reference", d_pos=32).double()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))  # u, v are zero-initialised
    fast = build(name, d_model=64, n_heads=2, impl="fast", d_pos=32)
    fast.load_state_dict(ref.state_dict())
    fast = fast.float()
    calls, real = [], kernel.augment
    monkeypatch.setattr(kernel, "augment", lambda *a: calls.append(1) or real(*a))
    x, mem = torch.randn(2, 70, 64, dtype=torch.float64), torch.randn(2, 9, 64, dtype=torch.float64)
    y_ref = ref(x, mem)
    y = fast(x.float(), mem.float())
    assert calls, "the fast path did not use the kernel"
    assert ((y.double() - y_ref).norm() / y_ref.norm()).item() < 1e-5
    w = torch.randn_like(y_ref)
    g_ref = torch.autograd.grad((y_ref * w).sum(), list(ref.parameters()))
    g = torch.autograd.grad((y.double() * w).sum(), list(fast.parameters()))
    for (n, _), a, b in zip(ref.named_parameters(), g, g_ref):
        assert ((a.double() - b).norm() / b.norm().clamp_min(1e-30)).item() < 1e-4, n


def test_available():
    assert kernel.available(torch.zeros(1))  # interpreter on, triton installed
