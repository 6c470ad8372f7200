"""GQA's default K/V heads make it GQA (1 < g < n) wherever n allows, and a degenerate setting says so."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from attnbench import cli
from attnbench.attention import get
from attnbench.config import PRESETS, AttnConfig, default_kv_heads
from attnbench.model import CharLM
from attnbench.params import param_table


def test_default_kv_heads_examples():
    got = {n: default_kv_heads(n) for n in (1, 2, 3, 4, 5, 6, 8, 9, 12, 16, 18, 32, 64)}
    assert got == {1: 1, 2: 1, 3: 1, 4: 2, 5: 1, 6: 2, 8: 2, 9: 3, 12: 3, 16: 4, 18: 6, 32: 8, 64: 16}


@pytest.mark.parametrize("n", range(1, 97))
def test_default_kv_heads_rule(n):
    """A proper divisor whenever one exists, the one whose group size is nearest 4 by ratio; else 1."""
    g = default_kv_heads(n)
    proper = [k for k in range(2, n) if n % k == 0]
    if not proper:
        assert g == 1
        return
    assert g in proper
    dist = lambda k: abs(math.log(4 * k / n))  # noqa: E731
    assert all(dist(g) < dist(k) for k in proper if k != g)  # strictly nearest: no ties


def test_degenerate_names_mqa_and_mha():
    deg = get("gqa").degenerate
    assert deg(AttnConfig(d_model=384, n_heads=6)) is None
    assert deg(AttnConfig(d_model=320, n_heads=5)) == "gqa with 5 heads is MQA: no divisor 1 < g < 5"
    assert deg(AttnConfig(d_model=256, n_heads=8, kv_heads=1)) == "gqa with kv-heads 1 is MQA"
    assert deg(AttnConfig(d_model=256, n_heads=8, kv_heads=8)) == "gqa with kv-heads = heads (8) is MHA"
    assert get("mqa").degenerate(AttnConfig(d_model=320, n_heads=5)) is None


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_training_preset_trains_a_real_gqa(preset):
    """The model a preset trains for gqa (train.py's path) has 2·D·(g−1)·d more parameters per layer than mqa's."""
    c = PRESETS[preset].resolved()
    with torch.device("meta"):
        gqa, mqa = CharLM(c.model_config("gqa", 65)), CharLM(c.model_config("mqa", 65))
    g = gqa.cfg.attn_cfg.kv_heads
    assert 1 < g < c.n_heads
    d = c.d_model // c.n_heads
    assert gqa.n_params() - mqa.n_params() == c.n_layers * 2 * c.d_model * (g - 1) * d
    assert get("gqa").degenerate(gqa.cfg.attn_cfg) is None


def test_params_cli_tells_gqa_from_mqa():
    r = CliRunner().invoke(cli.app, ["params", "--heads", "6", "--d-model", "384", "--attn", "mqa,gqa",
                                     "--format", "json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    totals = {row["attn"]: row["total"] for row in out["rows"]}
    assert totals == {"mqa": 344_064, "gqa": 393_216}  # K/V: 384·64 vs 384·128, twice
    assert out["config"]["kv_heads"] == 2 and [n for n in out["notes"] if not n.startswith("causality")] == []


def test_params_cli_says_when_gqa_is_mqa():
    r = CliRunner().invoke(cli.app, ["params", "--heads", "5", "--d-model", "320", "--attn", "mqa,gqa"])
    assert r.exit_code == 0, r.output
    assert "gqa with 5 heads is MQA: no divisor 1 < g < 5" in r.output
    assert param_table("gqa,mqa", d_model=320, n_heads=5).notes == ["gqa with 5 heads is MQA: no divisor 1 < g < 5"]
