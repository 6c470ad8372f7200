"""The attention contract (docs/contract.md): what every built-in declares about itself, and that each
declaration is true; the settings an attention does not read; the paper figures the report reads from the class."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch

from attnbench.attention import COMMON_SETTINGS, build, get, names, unused_settings
from attnbench.config import AttnConfig
from attnbench.measure.memory import estimate_fields

BUILTINS = [n for n in names() if get(n).__module__.startswith("attnbench.")]
SETTING_FIELDS = [f.name for f in fields(AttnConfig) if f.name not in COMMON_SETTINGS]
# A non-default value of every attention-specific setting, and a base config in which it can matter.
VARIED = {"kv_heads": ({}, 1), "conv_width": ({}, 5), "pos": ({}, "learned"), "d_pos": ({}, 4),
          "max_rel": ({"pos": "learned"}, 8)}


def output(name, **cfg):
    """Output of a float64 module with seeded random parameters on a fixed input; and its parameter count."""
    torch.manual_seed(0)
    m = build(name, d_model=32, n_heads=4, **cfg).double().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    x = torch.randn(2, 6, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return m(x), sum(p.numel() for p in m.parameters())


def test_varied_covers_every_attention_setting():
    assert sorted(VARIED) == sorted(SETTING_FIELDS)


@pytest.mark.parametrize("name", BUILTINS)
def test_builtins_declare_the_whole_contract(name):
    cls = get(name)
    cfg = AttnConfig(d_model=64, n_heads=4)
    assert cls.paper and cls.summary and isinstance(cls.has_positions, bool) and cls.has_reference is True
    assert set(cls.settings) <= set(SETTING_FIELDS)
    assert set(cls.param_parts) <= {"qkv", "out"}
    assert set(cls.closed_form(cfg)) == {"qkv", "out", "other"}
    assert cls.core_heads(cfg) in (1, cfg.n_heads)
    est = cls.activation_estimate(cfg, 2, 16, 4)
    assert all(isinstance(v, int) for v in est.values()) and estimate_fields(est)["estimate_mib"] > 0


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("setting", SETTING_FIELDS)
def test_declared_settings_are_exactly_those_read(name, setting):
    """A setting the class does not declare leaves output and parameters unchanged (so refusing it is right);
    one it declares changes one of them in some configuration (so accepting it is right)."""
    base, value = VARIED[setting]
    (y0, n0), (y1, n1) = output(name, **base), output(name, **base, **{setting: value})
    changed = n0 != n1 or y0.shape != y1.shape or not torch.equal(y0, y1)
    assert changed == (setting in get(name).settings), f"{name}.settings and {setting}={value!r} disagree"


def test_unused_settings():
    mha, rmha, mqa, gqa = (get(n) for n in ("mha", "rmha", "mqa", "gqa"))
    assert unused_settings(mha, {"pos": "learned", "kv_heads": None, "conv_width": 3, "dropout": 0.1}) == ["pos"]
    assert unused_settings(rmha, {"pos": "learned", "max_rel": 64}) == []
    assert unused_settings(mqa, {"kv_heads": 2}) == ["kv_heads"] and unused_settings(gqa, {"kv_heads": 2}) == []

    class Bare(torch.nn.Module):  # declares nothing: reads only the common settings
        pass

    assert unused_settings(Bare, {"d_model": 64, "conv_width": 5, "d_pos": 8, "not_a_setting": 1}) == \
        ["conv_width", "d_pos"]


def test_reference_is_refused_for_a_class_that_declares_none(monkeypatch):
    from attnbench.attention.mha import MHA
    from attnbench.errors import AttnbenchError

    monkeypatch.setattr(MHA, "has_reference", False)
    build("mha", d_model=32, n_heads=4)
    with pytest.raises(AttnbenchError, match="no reference implementation"):
        build("mha", d_model=32, n_heads=4, impl="reference")


def test_learned_positions_are_estimated_as_the_reference_path_that_runs():
    """The learned relative form has no fused path: its `fast` keeps what the reference keeps."""
    for name in ("rmha", "rcmha"):
        cls = get(name)
        fast, ref = (cls.activation_estimate(AttnConfig(d_model=64, n_heads=4, pos="learned", impl=impl), 2, 16, 4)
                     for impl in ("fast", "reference"))
        assert fast == ref


def test_report_reads_paper_figures_from_the_classes():
    from attnbench.report import paper_figure

    assert [paper_figure(n) for n in ("rcmha", "mha", "mdha", "rmha")] == [0.572, 0.566, 0.557, 0.555]
    assert paper_figure("sha") is None and paper_figure("no-such") is None
    assert paper_figure("examples/sliding_window.py:SlidingWindow") is None  # never imports a file for a report
