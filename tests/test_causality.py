"""Causality where the run happens (attnbench/causality.py; issue 21, item 1): cheats that a small check at load
lets through are refused by train, speed, memory and params at the run's own length, naming the first leaking pair
and the mode; every built-in passes; the check leaves the global RNG (and so training) as it was. Also: malformed
optional members and a plugin that exits at import are refused in one line (issue 21, item 5)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from attnbench import causality, cli
from attnbench.attention import names
from attnbench.config import PRESETS, AttnConfig

CHEATS = Path(__file__).resolve().parent / "cheats"
runner = CliRunner()

# cheat -> what its refusal names (mode, memory, first pair); T = 128 where the command sets the length
REFUSALS = {
    "off_by_one.py:OffByOne": "not causal in evaluation mode without memory at T=128: output 16 depends on input 17",
    "long_only.py:LongOnly": "not causal in evaluation mode without memory at T=128: output 0 depends on input 1",
    "train_only.py:TrainOnly": "not causal in training mode without memory at T=8: output 0 depends on input 1",
    "memory_only.py:MemoryOnly": "not causal in evaluation mode with memory at T=8, M=3: output 0 depends on input 1",
    "peek.py:Peek": "not causal in evaluation mode without memory at T=8: output 0 depends on input 1",
    "no_grad.py:NoGrad": "not causal in evaluation mode without memory at T=8: output 0 depends on input 1 "
                         "(initialised parameters; perturbation",
}
# params checks at the default preset's context (256)
PARAMS_REFUSALS = {**REFUSALS, "off_by_one.py:OffByOne": REFUSALS["off_by_one.py:OffByOne"].replace("128", "256"),
                   "long_only.py:LongOnly": REFUSALS["long_only.py:LongOnly"].replace("128", "256")}
SMALL = ["--d-model", "32", "--heads", "4"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    words = "the king shall speak of love and war to thee my lord now hence away good night".split()
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(" ".join(rng.choices(words, k=12)) for _ in range(300)))
    return path


def invoke(*args):
    return runner.invoke(cli.app, [str(a) for a in args])


def refused(r, text: str) -> None:
    """One line on stderr naming the pair and the mode, exit 2, no traceback."""
    assert r.exit_code == 2, r.output
    assert text in r.stderr and "refused" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output


def command(kind: str, cheat: str, tmp: Path, corpus: Path) -> list:
    name = f"{CHEATS}/{cheat}"
    if kind == "train":
        return ["train", "--attn", f"mha,{name}", "--preset", "tiny", "--ctx", 128, "--steps", 2, *SMALL,
                "--device", "cpu", "--data", corpus, "--results-dir", tmp / "r", "--checkpoints-dir", tmp / "ck"]
    if kind in ("speed", "memory"):
        return [kind, "--attn", f"mha,{name}", "--seq-len", "16,128", *SMALL, "--batch", 2, "--device", "cpu",
                "--no-baseline", "--results-dir", tmp / "r"] + (["--max-time", 0.05] if kind == "speed" else [])
    return ["params", "--attn", name, *SMALL]


@pytest.mark.parametrize("kind", ["train", "speed", "memory", "params"])
@pytest.mark.parametrize("cheat", list(REFUSALS))
def test_every_command_refuses_every_cheat_naming_the_pair(kind, cheat, tmp_path, corpus):
    r = invoke(*command(kind, cheat, tmp_path, corpus))
    refused(r, (PARAMS_REFUSALS if kind == "params" else REFUSALS)[cheat])
    assert not list(tmp_path.rglob("*.jsonl")), "nothing is measured or trained for a refused attention"


def test_params_shows_the_causality_of_each_row(tmp_path):
    r = invoke("params", "--attn", f"mha,{CHEATS}/off_by_one.py:OffByOne", *SMALL, "--format", "json")
    refused(r, PARAMS_REFUSALS["off_by_one.py:OffByOne"])
    rows = {row["attn"]: row["causality"] for row in json.loads(r.stdout)["rows"]}
    assert rows["mha"] == "ok" and rows[f"{CHEATS}/off_by_one.py:OffByOne"].startswith("refused: not causal")


def test_the_paper_preset_and_a_task_are_checked_at_their_own_lengths(tmp_path, corpus):
    r = invoke("train", "--attn", f"{CHEATS}/off_by_one.py:OffByOne", "--task", "mqar", "--task-opt",
               "vocab_size=64,seq_len=32,num_kv_pairs=4,train_examples=64,test_examples=16", "--preset", "tiny",
               "--steps", 2, *SMALL, "--device", "cpu", "--results-dir", tmp_path / "r", "--checkpoints-dir",
               tmp_path / "ck")
    refused(r, "at T=32: output 16 depends on input 17")
    r = invoke("train", "--attn", f"{CHEATS}/off_by_one.py:OffByOne", "--preset", "tiny", "--ctx", 64, "--seeds", 2,
               "--ensemble", 2, "--steps", 2, *SMALL, "--device", "cpu", "--data", corpus, "--results-dir",
               tmp_path / "r", "--checkpoints-dir", tmp_path / "ck")
    refused(r, "at T=64: output 16 depends on input 17")  # stacked seeds: checked once, on the plain module


# ---------------------------------------------------------------------------------------------- built-ins
RUNS = {"tiny": (PRESETS["tiny"], 0), "tiny, memory 16": (PRESETS["tiny"], 16), "paper": (PRESETS["paper"], None)}


@pytest.mark.parametrize("run", list(RUNS))
@pytest.mark.parametrize("name", names())
def test_every_builtin_passes_at_its_runs_length_in_both_modes(name, run):
    c, mem = RUNS[run]
    if run == "paper" and "flavour" not in getattr(causality_get(name), "settings", ()):
        pytest.skip(f"{name} has no labml flavour (the paper preset refuses it)")
    c = c.resolved()
    v = causality.check(name, c.attn_config(), c.ctx, c.mem_len if mem is None else mem, rows=c.batch)
    assert v.ok, v.problem() if v.leak else v.failed
    assert v.summary()["modes"] == ["eval", "train"] and v.summary()["checked_T"] == c.ctx


def causality_get(name):
    from attnbench.attention import get

    return get(name)


def test_split_points_cover_the_whole_length():
    for T in (2, 3, 8, 64, 1024, 2**20):
        s = causality.split_points(T)
        assert s[0] == 0 and s[-1] == T - 2 and len(s) == min(T - 1, causality.SPLITS) and s == sorted(set(s))
    assert causality.split_points(1) == []


# ---------------------------------------------------------------------------------------------- the check itself
def test_the_first_pair_is_located_and_a_leak_without_gradient_is_seen():
    from attnbench.attention.contract import load

    cfg = AttnConfig(d_model=16, n_heads=2)
    v = causality.check("x", cfg, 40, cls=load(f"{CHEATS}/off_by_one.py:OffByOne"))
    assert (v.leak.i, v.leak.j, v.leak.test) == (16, 17, "gradient")
    v = causality.check("y", cfg, 40, cls=load(f"{CHEATS}/no_grad.py:NoGrad"))
    assert (v.leak.i, v.leak.j, v.leak.test) == (0, 1, "perturbation")


def test_the_check_leaves_the_global_rng_and_is_cached():
    state = torch.random.get_rng_state()
    v = causality.check("mha", AttnConfig(d_model=16, n_heads=2, dropout=0.3), 24)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert causality.check("mha", AttnConfig(d_model=16, n_heads=2, dropout=0.3), 24) is v


def test_training_is_unchanged_by_the_check(tmp_path, corpus, monkeypatch):
    """A train run's losses are the same with the check and without it (it consumes no global random numbers)."""
    def losses(tag):
        r = invoke("train", "--attn", "mha", "--preset", "tiny", "--steps", 4, "--log-every", 1, *SMALL,
                   "--dropout", 0.1, "--device", "cpu", "--data", corpus, "--results-dir", tmp_path / tag,
                   "--checkpoints-dir", tmp_path / f"ck{tag}", "--format", "json")
        assert r.exit_code == 0, r.output
        (rec,) = [json.loads(line) for f in (tmp_path / tag).glob("*.jsonl") for line in f.read_text().splitlines()]
        return rec

    causality._CACHE.clear()
    checked = losses("a")
    assert checked["config"]["causality"]["checked_T"] == 64 and checked["config"]["causality"]["ok"] is True
    monkeypatch.setattr(causality, "for_training", lambda attns, c: {})
    plain = losses("b")
    assert checked["metrics"]["train_loss"] == plain["metrics"]["train_loss"]
    assert checked["metrics"]["test_acc"] == plain["metrics"]["test_acc"]


def test_a_check_out_of_memory_makes_its_cells_oom(tmp_path, monkeypatch):
    from attnbench import bench

    def oom(*a, **k):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 TB")

    monkeypatch.setattr(causality, "_check", oom)
    causality._CACHE.clear()
    res = bench.run("speed", bench.BenchSettings(seq_lens=(16,), batch=1, heads=2, d_model=16, attn="mha",
                                                 baseline=False, max_time_s=0.05, device="cpu",
                                                 results_dir=str(tmp_path)))
    causality._CACHE.clear()
    (rec,) = res.records
    assert rec["status"] == "oom" and rec["reason"].startswith("causality check: ")
    assert rec["config"]["causality"]["ok"] is False


def test_sweep_records_carry_the_check(tmp_path):
    from attnbench import bench

    res = bench.run("speed", bench.BenchSettings(seq_lens=(16, 32), batch=1, heads=2, d_model=16, attn="mha",
                                                 baseline=False, max_time_s=0.05, device="cpu",
                                                 results_dir=str(tmp_path)))
    assert [r["config"]["causality"]["checked_T"] for r in res.records] == [16, 32]
    assert any(n.startswith("causality checked before running") for n in res.notes)


# ---------------------------------------------------------------------------------------------- at load
@pytest.mark.parametrize("cls,problem", [
    ("BadClosedForm", "member closed_form: must return {'qkv', 'out', 'other'}"),
    ("BadSettings", "member settings: 'window' is not an AttnConfig field"),
    ("BadParamParts", "member param_parts: must map 'qkv' and 'out' to tuples"),
])
def test_malformed_optional_members_are_refused_at_load(cls, problem):
    refused(invoke("params", "--attn", f"{CHEATS}/bad_members.py:{cls}"), problem)


def test_a_plugin_that_exits_at_import_is_refused_like_any_import_failure():
    refused(invoke("list", "--attn", f"{CHEATS}/exits.py:Anything"), "fails: SystemExit: 3")
