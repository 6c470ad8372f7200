"""Every registered attention and every example in examples/ (loaded from outside, as a user's would be):
causality (with and without memory), fast path == reference (outputs and gradients, float64), the relative shift
against a naive gather, and the convolution against the future."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbench.attention import build, get, names
from attnbench.attention._common import CausalDepthwiseConv, rel_shift, sinusoid

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# name -> test id; the performer adapter only where its library is installed (it is no dependency of attnbench)
EXTERNAL = {f"{EXAMPLES}/sliding_window.py:SlidingWindow": "examples/sliding_window"}
if importlib.util.find_spec("performer_pytorch"):
    EXTERNAL[f"{EXAMPLES}/performer.py:PerformerReLU"] = "examples/performer"
VARIANTS = [(n, "sinusoid") for n in [*names(), *EXTERNAL]] + [("rmha", "learned"), ("rcmha", "learned")]
IDS = [EXTERNAL.get(n) or (f"{n}-{p}" if n in ("rmha", "rcmha") else n) for n, p in VARIANTS]
WITH_REFERENCE = [(v, i) for v, i in zip(VARIANTS, IDS) if getattr(get(v[0]), "has_reference", False)]


def needs_reference(name, impl):
    if impl == "reference" and not getattr(get(name), "has_reference", False):
        pytest.skip(f"{name} declares no reference implementation")


def make(name, pos="sinusoid", impl="reference", d_model=32, n_heads=4, seed=0, **kw):
    """A float64 module with every parameter random, so that no term hides behind a zero initialisation."""
    torch.manual_seed(seed)
    m = build(name, d_model=d_model, n_heads=n_heads, impl=impl, pos=pos, max_rel=64, **kw).double().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return m


@pytest.mark.parametrize("name,pos", VARIANTS, ids=IDS)
@pytest.mark.parametrize("impl", ["reference", "fast"])
@settings(max_examples=6, deadline=None)
@given(T=st.integers(2, 12), M=st.sampled_from([0, 3]), B=st.integers(1, 2), data=st.data())
def test_causal(name, pos, impl, T, M, B, data):
    """Changing inputs at positions > t never changes outputs at positions <= t (memory is all past)."""
    needs_reference(name, impl)
    m = make(name, pos, impl)
    t = data.draw(st.integers(0, T - 2), label="t")
    x = torch.randn(B, T, 32, dtype=torch.float64)
    mem = torch.randn(B, M, 32, dtype=torch.float64) if M else None
    x2 = x.clone()
    x2[:, t + 1:] = torch.randn_like(x2[:, t + 1:]) * 5
    y, y2 = m(x, mem), m(x2, mem)
    torch.testing.assert_close(y[:, : t + 1], y2[:, : t + 1], rtol=0, atol=1e-12)
    assert not torch.allclose(y[:, t + 1:], y2[:, t + 1:]), "future positions must depend on their inputs"


@pytest.mark.parametrize("name,pos", VARIANTS, ids=IDS)
def test_memory_is_used(name, pos):
    m = make(name, pos, "reference" if getattr(get(name), "has_reference", False) else "fast")
    x = torch.randn(2, 5, 32, dtype=torch.float64)
    mem = torch.randn(2, 4, 32, dtype=torch.float64)
    assert not torch.allclose(m(x, mem), m(x, mem + 1.0)), "the memory must change the output"


@pytest.mark.parametrize("name,pos", [v for v, _ in WITH_REFERENCE], ids=[i for _, i in WITH_REFERENCE])
@pytest.mark.parametrize("T,M", [(1, 0), (7, 0), (9, 4), (16, 16)])
def test_fast_equals_reference(name, pos, T, M):
    """Outputs and every parameter's and input's gradient agree in float64."""
    ref, fast = make(name, pos, "reference"), make(name, pos, "fast")
    x = torch.randn(2, T, 32, dtype=torch.float64, requires_grad=True)
    mem = torch.randn(2, M, 32, dtype=torch.float64) if M else None
    w = torch.randn(2, T, 32, dtype=torch.float64)
    y_ref, y_fast = ref(x, mem), fast(x, mem)
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-9, atol=1e-10)
    g_ref = torch.autograd.grad((y_ref * w).sum(), [x, *ref.parameters()])
    g_fast = torch.autograd.grad((y_fast * w).sum(), [x, *fast.parameters()])
    for (n, _), a, b in zip([("x", None), *ref.named_parameters()], g_fast, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=lambda s: f"gradient of {n}: {s}")


@pytest.mark.parametrize("name", [*names(), *EXTERNAL], ids=[*names(), *EXTERNAL.values()])
def test_shapes_and_registry_attributes(name):
    cls = get(name)
    assert cls.paper and cls.summary and isinstance(getattr(cls, "has_positions", False), bool)
    m = build(name, d_model=48, n_heads=6)
    assert m(torch.randn(3, 5, 48)).shape == (3, 5, 48)
    assert m(torch.randn(3, 5, 48), torch.randn(3, 2, 48)).shape == (3, 5, 48)


@pytest.mark.parametrize("T,M", [(1, 0), (5, 0), (4, 3), (6, 9)])
def test_rel_shift_equals_naive_gather(T, M):
    """rel_shift(column c = distance L−1−c) puts distance (M+i)−j at [i, j] for every causal entry."""
    L = M + T
    table = torch.randn(2, 3, T, L, dtype=torch.float64)  # table[..., i, c]: query i against distance L−1−c
    shifted = rel_shift(table)
    for i in range(T):
        for j in range(M + i + 1):
            dist = M + i - j
            assert shifted[..., i, j].equal(table[..., i, L - 1 - dist]), (i, j)


def test_sinusoid_matches_transformer_xl():
    """R[p] = [sin(pω); cos(pω)], ω_k = 1/10000^(2k/d_R) (Transformer-XL's PositionalEmbedding)."""
    pos = torch.tensor([0.0, 1.0, 5.0, 100.0])
    R = sinusoid(pos, 8)
    inv = 1 / (10000 ** (torch.arange(0, 8, 2, dtype=torch.float64) / 8))
    torch.testing.assert_close(R, torch.cat([torch.sin(pos[:, None] * inv), torch.cos(pos[:, None] * inv)], -1).double())


@pytest.mark.parametrize("impl", ["reference", "fast"])
def test_conv_is_causal_and_primer_initialised(impl):
    conv = CausalDepthwiseConv(4, 3)
    assert conv.weight[:, 0].eq(0.5).all() and conv.weight[:, 1:].eq(0.5 / 3).all()
    x = torch.zeros(1, 6, 4)
    x[0, 3] = 1.0  # an impulse at t = 3
    y = conv(x, impl)
    assert y[0, :3].abs().max() == 0, "output before the impulse must be zero (no look-ahead)"
    torch.testing.assert_close(y[0, 3:6, 0], torch.tensor([0.5, 0.5 / 3, 0.5 / 3]))


def test_symmetric_conv_would_be_caught():
    """The trap of attention.md: a Conv1d with symmetric padding leaks x[t+1]; the causality check sees it."""
    leaky = torch.nn.Conv1d(4, 4, 3, padding=1, groups=4, bias=False)
    x = torch.randn(1, 8, 4)
    x2 = x.clone()
    x2[:, 5:] += 1.0
    y, y2 = (leaky(a.transpose(1, 2)).transpose(1, 2) for a in (x, x2))
    assert not torch.allclose(y[:, :5], y2[:, :5])


def test_dropout_only_in_training():
    m = build("mha", d_model=32, n_heads=4, dropout=0.5)
    x = torch.randn(2, 6, 32)
    m.eval()
    assert torch.equal(m(x), m(x))
    m.train()
    torch.manual_seed(0)
    a = m(x)
    torch.manual_seed(1)
    assert not torch.allclose(a, m(x))


def test_gqa_reference_shares_kv_heads_by_group():
    """Query heads 0..n/g−1 use K/V head 0: with g = n the result equals MHA with the same weights."""
    g = make("gqa", kv_heads=4)
    mha = make("mha")
    mha.load_state_dict(g.state_dict())
    x = torch.randn(2, 6, 32, dtype=torch.float64)
    torch.testing.assert_close(g(x), mha(x))
