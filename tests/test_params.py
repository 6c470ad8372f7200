"""Closed-form parameter counts equal counted ones; the MHE paper's identities hold at several sizes."""

from __future__ import annotations

import pytest

from attnbench.attention import build, get, names
from attnbench.config import AttnConfig
from attnbench.params import counted, param_table

SIZES = [dict(d_model=768, n_heads=12), dict(d_model=1024, n_heads=16, kv_heads=8), dict(d_model=96, n_heads=3),
         dict(d_model=128, n_heads=8, bias=True), dict(d_model=64, n_heads=4, d_pos=32),
         dict(d_model=64, n_heads=4, pos="learned", max_rel=16), dict(d_model=64, n_heads=2, conv_width=5)]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
@pytest.mark.parametrize("name", names())
def test_closed_form_equals_counted(name, size):
    module = build(name, **size)
    assert counted(module) == get(name).closed_form(AttnConfig(**size))
    assert sum(counted(module).values()) == sum(p.numel() for p in module.parameters())


def test_bert_base_figures_from_attention_md():
    t = param_table(d_model=768, n_heads=12)
    qkv = {r["attn"]: r["qkv"] for r in t.rows}
    assert (qkv["sha"], qkv["mhe-add"], qkv["mhe-mul"], qkv["mha"]) == (147_456, 149_760, 149_760, 1_769_472)


@pytest.mark.parametrize("n,d", [(12, 64), (16, 64), (8, 16), (2, 128), (1, 32)])
def test_mhe_identities_hold(n, d):
    t = param_table(d_model=n * d, n_heads=n)
    assert [i["holds"] for i in t.identities] == [True, True]
    assert t.identities[0]["counted"] == 3 * n * d
    assert t.identities[1]["counted"] == (3 * n * n - 3 * n) * d * d - 3 * n * d


def test_layers_and_ratio():
    one, six = param_table("mha,sha", d_model=256, n_heads=4), param_table("mha,sha", layers=6, d_model=256, n_heads=4)
    assert [r["total"] * 6 for r in one.rows] == [r["total"] for r in six.rows]
    sha = next(r for r in six.rows if r["attn"] == "sha")
    assert sha["ratio_to_mha"] == pytest.approx(1 / 4)  # (3Dd + dD) / 4D² = d/D = 1/n


def test_identities_detect_a_wrong_count(monkeypatch):
    """The identity check can fail: an MHE with one embedding too many breaks it."""
    from attnbench.attention.mhe_add import MHEAdd
    import torch

    orig = MHEAdd.__init__

    def bad_init(self, cfg):
        orig(self, cfg)
        self.emb = torch.nn.Parameter(torch.zeros(4, cfg.n_heads, cfg.head_dim))

    monkeypatch.setattr(MHEAdd, "__init__", bad_init)
    t = param_table(d_model=64, n_heads=4)
    assert [i["holds"] for i in t.identities] == [False, False]
    assert not next(r for r in t.rows if r["attn"] == "mhe-add")["matches"]
