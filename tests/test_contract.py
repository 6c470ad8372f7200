"""The attention contract (docs/contract.md): what every built-in declares about itself, and that each
declaration is true; the settings an attention does not read; the paper figures the report reads from the class."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import fields
from functools import partial
from pathlib import Path

import pytest
import torch

from attnbench.attention import COMMON_SETTINGS, build, get, names, unused_settings
from attnbench.config import AttnConfig
from attnbench.measure.memory import estimate_fields

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BUILTINS = [n for n in names() if get(n).__module__.startswith("attnbench.")]
SETTING_FIELDS = [f.name for f in fields(AttnConfig) if f.name not in COMMON_SETTINGS]
# A non-default value of every attention-specific setting, and a base config in which it can matter.
VARIED = {"kv_heads": ({}, 1), "conv_width": ({}, 5), "pos": ({}, "learned"), "d_pos": ({}, 4),
          "max_rel": ({"pos": "learned"}, 8), "flavour": ({}, "labml")}


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
    assert paper_figure(f"{EXAMPLES}/sliding_window.py:SlidingWindow") is None  # a report never imports a file


# ---------------------------------------------------------------------------------------------- from outside
# A user's attention in files outside the repository, reached three ways: path/to/file.py:Class, package.module:Class
# on PYTHONPATH, and an entry point of group attnbench.attentions in an installed (here: PYTHONPATH) distribution.
USER_CODE = '''
import torch
import torch.nn.functional as F
from torch import nn


class Causal(nn.Module):
    """The contract's minimum: built from the config, forward(x, mem=None) -> x's shape, causal."""
    paper = "a user's own"
    summary = "one-head softmax attention"
    has_positions = False  # optional (default False); see test_a_model_of_a_class_that_declares_no_has_positions

    def __init__(self, cfg):
        super().__init__()
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x, mem=None):
        h = x if mem is None else torch.cat([mem, x], dim=1)
        D, T, L = x.shape[-1], x.shape[1], h.shape[1]
        q, (k, v) = self.qkv(x)[..., :D], self.qkv(h)[..., D:].chunk(2, dim=-1)
        return self.out(F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask(T, L)))

    @staticmethod
    def mask(T, L):
        return torch.ones(T, L, dtype=torch.bool).tril(L - T)  # query i sees keys j <= M + i


class SeesAhead(Causal):
    @staticmethod
    def mask(T, L):
        return torch.ones(T, L, dtype=torch.bool).tril(L - T + 1)  # one key too many


class SeesAheadWithMemory(Causal):
    @staticmethod
    def mask(T, L):  # right without memory; with it, aligned top-left (SDPA's is_causal trap)
        return torch.ones(T, L, dtype=torch.bool).tril(L - T if L == T else T)


class DropsOne(Causal):
    def forward(self, x, mem=None):
        return super().forward(x, mem)[:, 1:]


class NeedsWindow(Causal):
    def __init__(self, cfg, window):
        super().__init__(cfg)


class NotAModule:
    pass
'''
EP_NAME = "user-causal"


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    """my_attn.py, the package userpkg (userpkg/attn.py) and its dist-info with an entry point, in one folder
    outside the repository; and a small corpus (train needs text, not Tiny Shakespeare itself)."""
    import random

    d = tmp_path_factory.mktemp("outside")
    (d / "my_attn.py").write_text(USER_CODE)
    (d / "broken.py").write_text("import no_such_module_here\n")
    (d / "userpkg").mkdir()
    (d / "userpkg" / "__init__.py").write_text("")
    (d / "userpkg" / "attn.py").write_text(USER_CODE)
    info = d / "userpkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: userpkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[attnbench.attentions]\n{EP_NAME} = userpkg.attn:Causal\n")
    words = "the king shall speak of love and war to thee my lord now hence away good night".split()
    rng = random.Random(0)
    (d / "corpus.txt").write_text("\n".join(" ".join(rng.choices(words, k=12)) for _ in range(400)))
    return d


@pytest.fixture
def on_path(outside, monkeypatch):
    """The folder on sys.path (this process) and on PYTHONPATH (the memory command's fresh worker processes)."""
    monkeypatch.syspath_prepend(str(outside))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(outside), os.environ.get("PYTHONPATH")])))
    return outside


def cli(*args):
    from typer.testing import CliRunner

    from attnbench import cli as app

    return CliRunner().invoke(app.app, [str(a) for a in args])


def records(folder):
    return [json.loads(line) for f in sorted(Path(folder).glob("*.jsonl")) for line in f.read_text().splitlines()]


SMALL = ["--d-model", 32, "--heads", 4, "--batch", 1, "--device", "cpu", "--no-baseline", "--format", "json"]


def run_params_speed_train(name, corpus, tmp):
    """params, speed (CPU) and train --preset tiny (5 steps, CPU) of one attention: every command succeeds and the
    records carry the name as given."""
    r = cli("params", "--attn", f"mha,{name}", "--d-model", 32, "--heads", 4, "--format", "json")
    assert r.exit_code == 0, r.output
    row = next(x for x in json.loads(r.stdout)["rows"] if x["attn"] == name)
    assert row["total"] == 4 * (32 * 32 + 32) and row["ratio_to_mha"] > 1  # its own biases
    assert row["qkv"] == row["closed_form"] == row["matches"] == "n/a"  # declares no param_parts, no closed_form
    r = cli("speed", "--attn", name, "--seq-len", 16, "--max-time", 0.05, "--results-dir", tmp / "speed", *SMALL)
    assert r.exit_code == 0, r.output
    (rec,) = records(tmp / "speed")
    assert rec["attn"] == name and rec["status"] == "ok" and rec["metrics"]["median_ms"] > 0
    assert rec["metrics"]["core_flops"] is None and rec["check"]["ok"] is None  # no core_heads, no reference: n/a
    r = cli("train", "--attn", name, "--preset", "tiny", "--steps", 5, "--device", "cpu", "--data", corpus,
            "--results-dir", tmp / "train", "--checkpoints-dir", tmp / "ck", "--format", "json")
    assert r.exit_code == 0, r.output
    (rec,) = records(tmp / "train")
    assert rec["attn"] == name and rec["status"] == "ok" and 0 < rec["metrics"]["test_acc"] <= 1


def test_a_class_in_a_file_outside_the_repository_runs_through_every_command(outside, tmp_path):
    """The issue's "done when": list, params, speed, memory and train --preset tiny, with nothing registered."""
    name = f"{outside}/my_attn.py:Causal"
    assert name not in names()
    from attnbench.attention import describe

    assert describe(name) == [{"name": name, "paper": "a user's own", "description": "one-head softmax attention",
                               "declares": "-"}]
    run_params_speed_train(name, outside / "corpus.txt", tmp_path)
    r = cli("memory", "--attn", name, "--seq-len", 16, "--results-dir", tmp_path / "memory", *SMALL)
    assert r.exit_code == 0, r.output
    (row,) = json.loads(r.stdout)
    assert row["attn"] == name and row["estimate_mib"] is None and row["cpu_peak_rss_mib"] > 0
    r = cli("list", "--attn", name, "--format", "json")
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["name"] == name, r.output


@pytest.mark.parametrize("route", ["module", "entry point"])
def test_module_and_entry_point_routes(route, on_path, tmp_path):
    name = "userpkg.attn:Causal" if route == "module" else EP_NAME
    assert (EP_NAME in names()) and get(name).__name__ == "Causal"
    run_params_speed_train(name, on_path / "corpus.txt", tmp_path)


@pytest.mark.parametrize("cls,problem", [
    ("SeesAhead", "not causal in evaluation mode without memory at T=8: output 0 depends on input 1"),
    ("SeesAheadWithMemory", "not causal in evaluation mode with memory at T=8, M=3: output 0 depends on input 1"),
    ("DropsOne", "returns [2, 7, 32], expected x's shape [2, 8, 32]"),
    ("NeedsWindow", "NeedsWindow(AttnConfig(d_model=32, n_heads=4)) fails: TypeError"),
    ("NotAModule", "is not a torch.nn.Module subclass"),
])
def test_a_class_that_breaks_the_contract_is_refused_in_one_line(cls, problem, outside):
    r = cli("params", "--attn", f"mha,{outside}/my_attn.py:{cls}")
    assert r.exit_code == 2 and problem in r.stderr and "refused" in r.stderr, r.output
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output


@pytest.mark.parametrize("spec,problem", [
    ("{d}/nothing.py:Causal", "attention file not found: {d}/nothing.py"),
    ("{d}/my_attn.py:Nope", "attention class not found: {d}/my_attn.py has no 'Nope'"),
    ("{d}/broken.py:Causal", "importing {d}/broken.py fails: ModuleNotFoundError: No module named 'no_such_module_here'"),
    ("nopkg_here.attn:Causal", "attention module not found: nopkg_here.attn (is its folder on PYTHONPATH?)"),
    ("nonesuch", "unknown attention 'nonesuch'; valid: mha"),
])
def test_a_missing_file_module_or_class_is_one_clear_line(spec, problem, outside):
    spec, problem = spec.format(d=outside), problem.format(d=outside)
    r = cli("speed", "--attn", spec, "--device", "cpu")
    assert r.exit_code == 2 and problem in r.stderr, r.output
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output


def test_the_real_command_line_with_an_installed_entry_point(outside, tmp_path):
    """`attnbench` as a user runs it: the entry point found on PYTHONPATH; a refusal exits 2 with one line."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(outside), os.environ.get("PYTHONPATH")]))}
    run = partial(subprocess.run, capture_output=True, text=True, env=env, timeout=300)
    p = run([sys.executable, "-m", "attnbench", "params", "--attn", EP_NAME, "--d-model", "32", "--heads", "4",
             "--format", "json"])
    assert p.returncode == 0 and json.loads(p.stdout)["rows"][0]["attn"] == EP_NAME, p.stderr
    p = run([sys.executable, "-m", "attnbench", "params", "--attn", f"{outside}/my_attn.py:SeesAhead"])
    assert p.returncode == 2 and "not causal" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_an_entry_point_may_not_take_a_built_in_name(tmp_path, monkeypatch):
    info = tmp_path / "clash-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: clash\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[attnbench.attentions]\nmha = clash:MHA\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from attnbench.errors import AttnbenchError

    with pytest.raises(AttnbenchError, match="entry point 'mha' .* takes the name of a built-in attention"):
        names()


def test_a_model_of_a_class_that_declares_no_has_positions(tmp_path):
    from attnbench.config import ModelConfig
    from attnbench.model import CharLM

    name = f"{tmp_path}/bare_attn.py:Causal"
    (tmp_path / "bare_attn.py").write_text(USER_CODE + "\n\ndel Causal.has_positions\n")
    CharLM(ModelConfig(vocab=10, attn=name, attn_cfg=AttnConfig(d_model=32, n_heads=4), n_layers=1, d_ff=64, ctx=8,
                       dropout=0.0, act="gelu", mem_len=0))


def test_checkpoints_of_an_attention_named_by_its_path_stay_in_the_checkpoints_folder(outside, tmp_path):
    r = cli("train", "--attn", f"{outside}/my_attn.py:Causal", "--preset", "tiny", "--steps", 2, "--device", "cpu",
            "--data", outside / "corpus.txt", "--results-dir", tmp_path / "train", "--checkpoints-dir", tmp_path / "ck",
            "--format", "json")
    assert r.exit_code == 0, r.output
    assert not list(outside.glob("*.pt")) and list((tmp_path / "ck").rglob("*.pt"))


def test_file_safe_names():
    from attnbench.attention import file_safe

    assert file_safe("mha") == "mha" and file_safe("mhe-add") == "mhe-add"
    assert file_safe("/home/me/attn.py:Local") == "home_me_attn.py_Local"
    assert "/" not in file_safe("../../x.py:C") and file_safe("../../x.py:C") == "x.py_C"


# ---------------------------------------------------------------------------------------------- the examples
def test_the_documented_example_follows_the_contract(tmp_path):
    """docs/contract.md's example, as a user would save it: accepted, fast == reference (with memory), and its
    closed form matches the count."""
    from attnbench.params import param_table

    doc = (EXAMPLES.parent / "docs" / "contract.md").read_text()
    assert len(doc.splitlines()) <= 44  # one screen: the contract, its checks and the example
    (tmp_path / "mine.py").write_text(doc.split("```python\n")[1].split("```")[0])
    name = f"{tmp_path}/mine.py:MyAttention"
    torch.manual_seed(0)
    ref, fast = build(name, d_model=32, n_heads=4, impl="reference").double(), build(name, d_model=32, n_heads=4)
    fast = fast.double()
    fast.load_state_dict(ref.state_dict())
    x, mem = torch.randn(2, 5, 32, dtype=torch.float64), torch.randn(2, 3, 32, dtype=torch.float64)
    torch.testing.assert_close(fast(x, mem), ref(x, mem))
    torch.testing.assert_close(fast(x), ref(x))
    assert param_table(name, d_model=64, n_heads=4, bias=True).rows[0]["matches"] is True


def test_sliding_window_sees_exactly_its_window():
    """With a window of 3 the fast (blocked) path equals the written-out one, and output t depends on inputs
    t-2..t only, memory included (query i sits at position M + i of [mem; x])."""
    cls = get(f"{EXAMPLES}/sliding_window.py:SlidingWindow")
    W3 = type("W3", (cls,), {"window": 3})
    torch.manual_seed(0)
    ref, fast = W3(AttnConfig(d_model=32, n_heads=4, impl="reference")).double(), W3(AttnConfig(d_model=32, n_heads=4))
    fast = fast.double()
    fast.load_state_dict(ref.state_dict())
    for T, M in [(1, 0), (2, 0), (7, 0), (10, 4), (5, 1), (3, 9)]:
        x, mem = torch.randn(2, T, 32, dtype=torch.float64), torch.randn(2, M, 32, dtype=torch.float64)
        torch.testing.assert_close(fast(x, mem), ref(x, mem), rtol=1e-12, atol=1e-12)
        h = torch.cat([mem, x], 1)
        for t in range(T):  # perturb every position outside M+t-2 .. M+t: output t must not move
            far = torch.ones(M + T, dtype=torch.bool)
            far[max(0, M + t - 2): M + t + 1] = False
            h2 = h + 5 * far[None, :, None] * torch.randn_like(h)
            y2 = fast(h2[:, M:], h2[:, :M])
            torch.testing.assert_close(y2[:, t], fast(x, mem)[:, t], rtol=0, atol=1e-12)


def test_sliding_window_declares_a_true_closed_form():
    from attnbench.params import param_table

    row = param_table(f"{EXAMPLES}/sliding_window.py:SlidingWindow", d_model=64, n_heads=4, bias=True).rows[0]
    assert row["matches"] is True and row["qkv"] == 3 * (64 * 64 + 64)


@pytest.fixture
def performer():
    pytest.importorskip("performer_pytorch", reason="performer-pytorch is not installed (not an attnbench dependency)")
    return f"{EXAMPLES}/performer.py"


def test_performer_relu_runs_and_the_softmax_kernel_is_refused_as_not_causal(performer, outside, tmp_path):
    """performer-pytorch's softmax features stabilise keys with a max over the whole sequence: later tokens move
    earlier outputs (lucidrains/performer-pytorch issue #82). The check sees it; the ReLU kernel passes."""
    r = cli("params", "--attn", f"{performer}:PerformerReLU", "--d-model", 32, "--heads", 4, "--format", "json")
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)["rows"][0]
    assert row["matches"] is True and row["qkv"] == 3 * 32 * 32
    r = cli("speed", "--attn", f"{performer}:PerformerReLU", "--seq-len", 16, "--max-time", 0.05, "--results-dir",
            tmp_path / "speed", *SMALL)
    assert r.exit_code == 0, r.output
    r = cli("train", "--attn", f"{performer}:PerformerReLU", "--preset", "tiny", "--steps", 5, "--device", "cpu",
            "--data", outside / "corpus.txt", "--results-dir", tmp_path / "train", "--checkpoints-dir", tmp_path / "ck",
            "--format", "json")
    assert r.exit_code == 0, r.output
    r = cli("params", "--attn", f"{performer}:PerformerSoftmax")
    assert r.exit_code == 2 and "not causal in evaluation mode without memory" in r.stderr, r.output
