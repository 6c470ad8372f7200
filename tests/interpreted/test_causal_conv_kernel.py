"""The Triton causal-conv kernels (attnbench/kernels/causal_conv.py) against CausalDepthwiseConv.reference, run on
CPU through Triton's interpreter, in a process of their own (tests/test_interpreted.py). Skipped when triton is not
installed (CI)."""

import pytest

from triton_interpreter import require

require()

import torch  # noqa: E402

from attnbench.attention._common import CausalDepthwiseConv  # noqa: E402
from attnbench.kernels import causal_conv as kernel  # noqa: E402


def _conv(C, W, dtype, seed=0):
    torch.manual_seed(seed)
    m = CausalDepthwiseConv(C, W).to(dtype)
    with torch.no_grad():
        m.weight.normal_()  # Primer's init is nearly symmetric in k; random taps catch a swapped k
    return m


# L not a multiple of the tile's t, C not a multiple of its c, several backward chunks (L > t), L = 1
SHAPES = [(1, 5, 3, 1), (3, 70, 130, 3), (1, 129, 64, 4), (3, 200, 257, 2), (1, 2, 8, 3), (2, 1, 24, 3)]


@pytest.mark.parametrize("B,L,C,W", SHAPES)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-5)])
def test_matches_reference(B, L, C, W, dtype, tol):
    m = _conv(C, W, dtype)
    x = torch.randn(B, L, C, dtype=dtype, requires_grad=True)
    y = kernel.causal_conv(x, m.weight)
    assert y.shape == x.shape and y.dtype == x.dtype and y.is_contiguous()
    g = torch.randn_like(y)
    dx, dw = torch.autograd.grad(y, (x, m.weight), g)
    yr = m.reference(x)
    dxr, dwr = torch.autograd.grad(yr, (x, m.weight), g)
    assert dw.dtype == m.weight.dtype
    # float32 accumulation inside the kernel: errors relative to the largest value, also for float64 inputs
    for got, want in [(y, yr), (dx, dxr), (dw, dwr)]:
        assert (got - want).abs().max().item() <= tol * max(1.0, want.abs().max().item())


def test_bf16_output_close_to_float32_reference():
    m = _conv(96, 3, torch.float32)
    x = torch.randn(2, 80, 96)
    y = kernel.causal_conv(x.bfloat16(), m.weight)
    assert y.dtype == torch.bfloat16
    want = m.reference(x.bfloat16().float())
    assert ((y.float() - want).norm() / want.norm()).item() < 1e-2


@pytest.mark.parametrize("W", [1, 3, 4])
def test_causal_impulse(W):
    """An impulse at t0 reaches exactly t0..t0+W−1, with the taps w[:, k] at t0+k; nothing before t0."""
    B, L, C, t0 = 1, 150, 40, 66
    m = _conv(C, W, torch.float32)
    x = torch.zeros(B, L, C)
    x[0, t0] = 1.0
    y = kernel.causal_conv(x, m.weight)[0]
    assert torch.equal(y[:t0], torch.zeros(t0, C))
    assert torch.equal(y[t0 + W:], torch.zeros(L - t0 - W, C))
    assert torch.allclose(y[t0:t0 + W], m.weight.detach().T)


def test_gradient_does_not_flow_backwards_in_time():
    """dy[t]/dx[s] = 0 for s > t: the gradient of y[:, t1] reaches only x[:, t1−W+1 .. t1]."""
    m = _conv(20, 3, torch.float32)
    x = torch.randn(2, 100, 20, requires_grad=True)
    t1 = 70
    (dx,) = torch.autograd.grad(kernel.causal_conv(x, m.weight)[:, t1].sum(), x)
    nz = dx.abs().sum(dim=(0, 2)).nonzero().flatten().tolist()
    assert nz == [68, 69, 70]


def test_available():
    assert kernel.available(torch.zeros(1))  # interpreter on, triton installed


def _check_parts(B, L, Cp, W, parts, dtype, tol, fwd_blocks=None, bwd_blocks=None):
    """causal_conv_parts against the reference over all parts·Cp channels, each part with its own gradient."""
    m = _conv(parts * Cp, W, dtype, seed=B + L + Cp)
    x = torch.randn(B, L, parts * Cp, dtype=dtype, requires_grad=True)
    ys = kernel.causal_conv_parts(x, m.weight, parts, fwd_blocks, bwd_blocks)
    assert len(ys) == parts and all(y.shape == (B, L, Cp) and y.is_contiguous() for y in ys)
    gs = [torch.randn(B, L, Cp, dtype=dtype) for _ in ys]
    dx, dw = torch.autograd.grad(ys, (x, m.weight), gs)
    yr = m.reference(x)
    dxr, dwr = torch.autograd.grad(yr, (x, m.weight), torch.cat(gs, dim=-1))
    for got, want in [(torch.cat(ys, dim=-1), yr), (dx, dxr), (dw, dwr)]:
        assert (got - want).abs().max().item() <= tol * max(1.0, want.abs().max().item())


@pytest.mark.parametrize("fwd,bwd", list(zip(kernel.FWD_BLOCKS, kernel.BWD_BLOCKS)))
def test_every_block_config(fwd, bwd):
    """Each named config, three parts of 40 channels (not a multiple of any tile's c), L not a multiple of t."""
    _check_parts(2, 37, 40, 3, 3, torch.float64, 1e-5, kernel.FWD_BLOCKS[fwd], kernel.BWD_BLOCKS[bwd])


SMALL = kernel.Blocks(4, 16, 1, 1)  # several tiles along t and c, several programs along t in the backward


@pytest.mark.parametrize("B,L,Cp,W,parts", [(2, 23, 20, 3, 3), (1, 1, 8, 3, 3), (3, 9, 16, 4, 2), (1, 30, 5, 1, 3),
                                            (2, 17, 37, 2, 1)])
def test_parts_match_reference(B, L, Cp, W, parts):
    """Parts straddling no tile, several, or a fraction of one; L = 1; every width up to MAX_WIDTH."""
    _check_parts(B, L, Cp, W, parts, torch.float64, 1e-5, SMALL, SMALL)
    _check_parts(B, L, Cp, W, parts, torch.float32, 1e-5)  # the configs pick() chooses


def test_pick_returns_named_configs():
    for L in (1, 100, 4096, 16384):
        for C in (8, 100, 1024, 3072):
            assert kernel.pick(L, C, False) in kernel.FWD_BLOCKS.values()
            assert kernel.pick(L, C, True) in kernel.BWD_BLOCKS.values()


def test_dw_is_deterministic():
    """dw comes from partial sums added by torch, not from atomics: two runs agree bit for bit."""
    m = _conv(24, 3, torch.float32)
    x = torch.randn(2, 50, 24, requires_grad=True)
    g = torch.randn(2, 50, 24)
    runs = [torch.autograd.grad(kernel.causal_conv(x, m.weight, SMALL, SMALL), m.weight, g)[0] for _ in range(2)]
    assert torch.equal(*runs)


def test_rejects_what_it_cannot_do():
    x = torch.randn(1, 4, 12)
    for w, parts in [(torch.randn(12, kernel.MAX_WIDTH + 1), 1), (torch.randn(12, 3), 5), (torch.randn(12, 3), 7),
                     (torch.randn(10, 3), 1)]:
        with pytest.raises(ValueError):
            kernel.causal_conv_parts(x, w, parts)


@pytest.mark.parametrize("name", ["mdha", "rcmha"])
@pytest.mark.parametrize("M", [0, 5])
def test_fused_attention_through_the_kernel(name, M):
    """MDHA/RCMHA's fused Q|K|V path with the kernel (the interpreter is on, so the kernel runs on CPU) against the
    written-out reference path, outputs and every gradient, in float64 (float32 accumulation in the kernel)."""
    from attnbench.attention import build

    torch.manual_seed(0)
    mods = {}
    for impl in ("reference", "fast"):
        torch.manual_seed(0)
        mods[impl] = build(name, d_model=32, n_heads=4, impl=impl, max_rel=64).double().eval()
        with torch.no_grad():
            for p in mods[impl].parameters():
                p.copy_(torch.randn_like(p) * 0.3)
    x = torch.randn(2, 9, 32, dtype=torch.float64, requires_grad=True)
    assert kernel.available(x)  # CausalDepthwiseConv's fast path takes the kernel
    mem = torch.randn(2, M, 32, dtype=torch.float64) if M else None
    w = torch.randn(2, 9, 32, dtype=torch.float64)
    y = {impl: m(x, mem) for impl, m in mods.items()}
    torch.testing.assert_close(y["fast"], y["reference"], rtol=1e-5, atol=1e-5)
    grads = {impl: torch.autograd.grad((y[impl] * w).sum(), [x, *m.parameters()]) for impl, m in mods.items()}
    for a, b in zip(grads["fast"], grads["reference"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
