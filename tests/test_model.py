"""The character LM: end-to-end causality for every registered attention (with and without Transformer-XL
memory), positions only where the attention has none, tied output, activations."""

from __future__ import annotations

import pytest
import torch

from attnbench.attention import get, names
from attnbench.errors import AttnbenchError
from attnbench.model import activation, build_model

V = 11


def tiny(attn: str, mem_len: int = 0, act: str = "gelu", impl: str = "reference"):
    torch.manual_seed(0)
    m = build_model(attn, V, n_layers=2, d_model=16, n_heads=4, d_ff=32, ctx=12, dropout=0.0, act=act,
                    mem_len=mem_len, impl=impl)
    return m.eval().double()


@pytest.mark.parametrize("impl", ["reference", "fast"])
@pytest.mark.parametrize("attn", names())
def test_causal_end_to_end(attn, impl):
    """Changing token t changes no logit before t (through every layer), and does change a later one."""
    m = tiny(attn, impl=impl)
    x = torch.randint(0, V, (2, 12))
    base, _ = m(x)
    for t in (0, 5, 11):
        y = x.clone()
        y[:, t] = (y[:, t] + 1) % V
        out, _ = m(y)
        assert torch.allclose(out[:, :t], base[:, :t], atol=1e-10), f"{attn}: future token {t} leaks"
        assert not torch.allclose(out[:, t:], base[:, t:])


@pytest.mark.parametrize("attn", names())
def test_memory_is_causal_and_used(attn):
    """With memory: a segment's logits depend on the previous segment (through mem), never on later tokens,
    and the memories are detached [B, M, D] per block."""
    m = tiny(attn, mem_len=6)
    a, b = torch.randint(0, V, (2, 2, 8))
    _, mems = m(a)
    assert len(mems) == 2 and all(t.shape == (2, 6, 16) and not t.requires_grad for t in mems)
    out, _ = m(b, mems)
    b2 = b.clone()
    b2[:, 4] = (b2[:, 4] + 1) % V
    out2, _ = m(b2, mems)
    assert torch.allclose(out[:, :4], out2[:, :4], atol=1e-10)
    a2 = a.clone()
    a2[:, -1] = (a2[:, -1] + 1) % V
    _, mems2 = m(a2)
    out3, _ = m(b, mems2)
    assert not torch.allclose(out3, out), f"{attn}: memory not used"


@pytest.mark.parametrize("attn", names())
def test_positions_only_without_own_scheme(attn):
    m = tiny(attn)
    assert (m.pos is None) == bool(get(attn).has_positions)
    assert m.n_params() == sum(p.numel() for p in m.parameters())
    assert not any(p.shape == (V, 16) and p is not m.tok.weight for p in m.parameters())  # tied output


def test_no_absolute_positions_for_relative_attentions():
    assert tiny("rmha").pos is None and tiny("rcmha").pos is None and tiny("mha").pos is not None


def test_activations():
    x = torch.tensor([-2.0, 0.5, 3.0])
    assert torch.equal(activation("relu2")(x), torch.tensor([0.0, 0.25, 9.0]))
    assert torch.equal(activation("relu")(x), torch.tensor([0.0, 0.5, 3.0]))
    with pytest.raises(AttnbenchError):
        activation("swish")


def test_bad_shapes_are_one_clear_error():
    with pytest.raises(AttnbenchError, match="divide"):
        build_model("mha", V, n_layers=1, d_model=10, n_heads=3, d_ff=8, ctx=4, dropout=0.0, act="gelu")
    with pytest.raises(AttnbenchError, match="ctx"):
        build_model("mha", V, n_layers=1, d_model=8, n_heads=2, d_ff=8, ctx=0, dropout=0.0, act="gelu")


@pytest.mark.parametrize("attn", names())
def test_trains_under_bf16_autocast(attn):
    """The GPU preset trains under bf16 autocast: every attention's fast path runs forward and backward there
    (custom autograd nodes included), with finite float32 gradients on every parameter."""
    torch.manual_seed(0)
    m = build_model(attn, 65, n_layers=1, d_model=32, n_heads=4, d_ff=64, ctx=16, dropout=0.0, act="gelu")
    idx = torch.randint(0, 65, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _ = m(idx)
    torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), idx.flatten()).backward()
    for n, p in m.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), n
