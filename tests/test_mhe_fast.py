"""MHE-ADD and MHE-MUL: every fast path (mhe_add.FAST_PATHS) equals the one-head-at-a-time reference in float64,
output and every gradient (x, the shared projections, the embeddings, W_o), with and without memory and bias; the
custom autograd Functions equal autograd of the formula for any gradient layout."""

from __future__ import annotations

import pytest
import torch

from attnbench.attention import build, mhe_add, mhe_mul
from attnbench.attention.mhe_mul import MHEMul
from attnbench.errors import AttnbenchError

MODULES = {"mhe-add": mhe_add, "mhe-mul": mhe_mul}


def make(name, impl, bias, d_model=32, n_heads=4, seed=0):
    """A float64 module with every parameter random (biases included), so that no term hides behind a zero."""
    torch.manual_seed(seed)
    m = build(name, d_model=d_model, n_heads=n_heads, impl=impl, bias=bias).double().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return m


@pytest.mark.parametrize("name", list(MODULES))
@pytest.mark.parametrize("path", mhe_add.FAST_PATHS)
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("T,M", [(1, None), (7, None), (16, None), (5, 3), (9, 12), (4, 0)])  # M=0: empty memory
def test_fast_path_equals_reference(monkeypatch, name, path, bias, T, M):
    monkeypatch.setattr(MODULES[name], "FAST_PATH", path)
    ref, fast = make(name, "reference", bias), make(name, "fast", bias)
    x = torch.randn(2, T, 32, dtype=torch.float64, requires_grad=True)
    mem = None if M is None else torch.randn(2, M, 32, dtype=torch.float64)
    w = torch.randn(2, T, 32, dtype=torch.float64)
    y_ref, y_fast = ref(x, mem), fast(x, mem)
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-9, atol=1e-10)
    g_ref = torch.autograd.grad((y_ref * w).sum(), [x, *ref.parameters()])
    g_fast = torch.autograd.grad((y_fast * w).sum(), [x, *fast.parameters()])
    names = ["x", *(n for n, _ in ref.named_parameters())]
    assert "emb" in names and ("q.bias" in names) == bias
    for n, a, b in zip(names, g_fast, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=lambda s: f"gradient of {n}: {s}")


@pytest.mark.parametrize("name", list(MODULES))
def test_fast_path_constant_is_read_per_call(monkeypatch, name):
    """Each module reads its own constant at every call, so the GPU probe (and the lead) can flip it."""
    m = make(name, "fast", False)
    x = torch.randn(1, 3, 32, dtype=torch.float64)
    ys = []
    for path in mhe_add.FAST_PATHS:
        monkeypatch.setattr(MODULES[name], "FAST_PATH", path)
        ys.append(m(x))
    for y in ys[1:]:
        torch.testing.assert_close(y, ys[0], rtol=1e-9, atol=1e-10)
    monkeypatch.setattr(MODULES[name], "FAST_PATH", "nope")
    with pytest.raises(AttnbenchError, match="fast path"):
        m(x)


@pytest.mark.parametrize("path", mhe_add.FAST_PATHS)
@pytest.mark.parametrize("name", list(MODULES))
def test_fast_paths_train_under_bf16_autocast(monkeypatch, name, path):
    """The model trains under autocast (bf16): every path runs forward and backward there, close to float32."""
    monkeypatch.setattr(MODULES[name], "FAST_PATH", path)
    m = make(name, "fast", True).float()
    x = torch.randn(2, 9, 32)
    m(x).square().sum().backward()
    ref = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    y.float().square().sum().backward()
    for n, p in m.named_parameters():
        assert p.grad is not None and p.grad.dtype == p.dtype, n
        if n != "k.bias":  # exactly zero in exact arithmetic (softmax ignores a shift shared by all keys)
            err = (p.grad - ref[n]).norm() / ref[n].norm()
            assert err < 0.1, (n, float(err))


def test_mul_auto_path_switches_by_size(monkeypatch):
    """MHE-MUL's default "auto" takes weight-qkv for small inputs and combine-qkv for large, both exact."""
    assert mhe_mul.FAST_PATH == "auto"
    picked = []
    real = MHEMul.heads
    monkeypatch.setattr(MHEMul, "heads", lambda self, x, h, path: (picked.append(path), real(self, x, h, path))[1])
    monkeypatch.setattr(mhe_mul, "SMALL_ROWS", 8)
    m = make("mhe-mul", "fast", False)
    ref = make("mhe-mul", "reference", False)
    ref.load_state_dict(m.state_dict())
    for T in (4, 16):  # B·L = 4 (small), 16 (large)
        x = torch.randn(1, T, 32, dtype=torch.float64)
        torch.testing.assert_close(m(x), ref(x), rtol=1e-9, atol=1e-10)
    assert picked == ["weight-qkv", "combine-qkv"]


def test_mul_auto_path_under_graph_capture_takes_combine_qkv(monkeypatch):
    """Captured into a CUDA graph, launches cost nothing on replay: "auto" takes the least GPU work at every size."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    assert MHEMul.fast_path(4) == "combine-qkv" and MHEMul.fast_path(10**6) == "combine-qkv"
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    assert MHEMul.fast_path(4) == "weight-qkv"


@pytest.mark.parametrize("fn,op", [(mhe_add.AddHeads, torch.add), (mhe_mul.MulHeads, torch.mul)], ids=["add", "mul"])
@pytest.mark.parametrize("first,c", [(0, 1), (1, 1), (2, 1), (1, 2), (0, 3)])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("layout", ["bnld", "blnd", "packed"])
def test_heads_function_equals_autograd(fn, op, first, c, bias, layout):
    """AddHeads/MulHeads (projection + combine as one node) against autograd of the formula written out, with the
    head gradients in each layout SDPA may hand back: [B, nh, L, hs] contiguous, [B, L, nh, hs] contiguous, or
    packed views of one [B, L, c, nh, hs]."""
    torch.manual_seed(10 * first + c)
    B, L, D, nh, hs = 2, 5, 6, 3, 4
    inp = torch.randn(B, L, D, dtype=torch.float64, requires_grad=True)
    emb = torch.randn(3, nh, hs, dtype=torch.float64, requires_grad=True)
    Ws = [torch.randn(hs, D, dtype=torch.float64, requires_grad=True) for _ in range(c)]
    bs = [torch.randn(hs, dtype=torch.float64, requires_grad=True) for _ in range(c)] if bias else []
    gs = [torch.randn(B, nh, L, hs, dtype=torch.float64) for _ in range(c)]
    if layout == "blnd":
        gs = [g.transpose(1, 2).contiguous().transpose(1, 2) for g in gs]
    elif layout == "packed":
        packed = torch.stack([g.transpose(1, 2) for g in gs], dim=2)  # [B, L, c, nh, hs]
        gs = [packed[:, :, i].transpose(1, 2) for i in range(c)]
    outs = fn.apply(inp, emb, first, c, *Ws, *bs)
    want = []
    for i in range(c):
        p = inp @ Ws[i].t() + (bs[i] if bias else 0)  # [B, L, hs]
        want.append(op(p[:, None], emb[first + i][None, :, None, :]))  # [B, nh, L, hs]
    for o, w in zip(outs, want):
        assert o.shape == (B, nh, L, hs)
        torch.testing.assert_close(o, w, rtol=1e-12, atol=1e-12)
    leaves = (inp, emb, *Ws, *bs)
    got = torch.autograd.grad(outs, leaves, gs)
    ref = torch.autograd.grad(want, leaves, gs)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
