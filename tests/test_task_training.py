"""`train --task` and `--eval-ctx` (issue 13): a synthetic task trains and is scored at its queried positions only,
against a brute-force reference; a model learns a small recall task; length extrapolation scores every prediction
once at each length and says n/a where a model cannot run; user mistakes are one line."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from attnbench import cli
from attnbench.config import TrainJob, make_config
from attnbench.data import corpus_from_text
from attnbench.errors import AttnbenchError
from attnbench.model import CharLM
from attnbench.training import engine, evaluation, sources
from attnbench.training.members import Solo
from attnbench.training.plan import new_plan
from attnbench.tasks import IGNORE, make_task

from testdata import CORPUS

runner = CliRunner()
SMALL_MQAR = "vocab_size=64,seq_len=32,num_kv_pairs=4,train_examples=1024,test_examples=96"


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(folder.glob("*.jsonl")) for line in f.read_text().splitlines()]


def _model(attn: str, vocab: int, ctx: int, **over) -> CharLM:
    torch.manual_seed(0)
    c = make_config("tiny", ctx=ctx, **over).resolved()
    return CharLM(c.model_config(attn, vocab)).eval()


def _one(model) -> Solo:
    """A plain model as a group of one member (evaluation scores groups)."""
    return Solo(model, 0)


# ------------------------------------------------------------------------------------------------- scoring
@pytest.mark.parametrize("world", [1, 3])
def test_task_evaluation_equals_brute_force_over_the_queried_positions(world):
    """Loss and accuracy over exactly the scored positions, and the share of examples with all of them right,
    against full logits and a per-example loop; split over `world` ranks, the ranks' sums give the same."""
    task = make_task("mqar", vocab_size=64, seq_len=32, num_kv_pairs=4, test_examples=50)
    model = _model("mha", 64, 32)
    c = make_config("tiny", ctx=32, eval_batch=16).resolved()
    nll = correct = n = exact = 0
    for x, y, mask in task.eval_batches("test", 50, 7):
        with torch.no_grad():
            logits, _ = model(x)
        for b in range(len(x)):
            keep = y[b] != IGNORE
            assert keep.sum() == 4 and torch.equal(keep, mask[b])
            lg, yy = logits[b][keep], y[b][keep]
            nll += F.cross_entropy(lg, yy, reduction="sum").item()
            hits = (lg.argmax(-1) == yy)
            correct, n, exact = correct + int(hits.sum()), n + len(yy), exact + int(hits.all())
    if world == 1:
        (got,) = evaluation.evaluate_task(_one(model), task.eval_batches("test", 50, 16), c, torch.device("cpu"))
    else:
        parts = [evaluation.evaluate_task(_one(model), task.eval_batches("test", 50, 16), c, torch.device("cpu"), r,
                                          world)[0] for r in range(world)]
        assert sum(p["examples"] for p in parts) == 50
        got = {"n": sum(p["n"] for p in parts), "loss": sum(p["loss"] * p["n"] for p in parts) / n,
               "acc": sum(p["acc"] * p["n"] for p in parts) / n,
               "exact": sum(p["exact"] * p["examples"] for p in parts) / 50, "examples": 50}
    assert got["n"] == n == 200 and got["examples"] == 50
    assert got["loss"] == pytest.approx(nll / n, rel=1e-5)
    assert got["acc"] == pytest.approx(correct / n) and got["exact"] == pytest.approx(exact / 50)


def test_training_loss_counts_only_the_scored_positions():
    """The step's loss is the mean cross-entropy over the queried values: unscored targets carry IGNORE."""
    task = make_task("mqar", vocab_size=64, seq_len=32, num_kv_pairs=4, train_examples=0)
    x, y, mask = task.batch("train", 0, 8)
    model = _model("mha", 64, 32)
    with torch.no_grad():
        logits, _ = model(x)
    from attnbench.model import lm_loss

    assert lm_loss(logits, y).item() == pytest.approx(F.cross_entropy(logits[mask], y[mask]).item(), rel=1e-5)


@pytest.mark.parametrize("name,options", [
    ("mqar", dict(vocab_size=64, seq_len=32, num_kv_pairs=4)),
    ("mqar", dict(vocab_size=8192, seq_len=64, num_kv_pairs=16, random_non_queries=False)),
    ("mqar", dict(vocab_size=16, seq_len=64, num_kv_pairs=7, power_a=1.0)),
    ("selective-copying", dict(vocab_size=16, seq_len=64, num_tokens=5)),
])
def test_every_example_has_its_tasks_count_of_scored_positions(name, options):
    """The training loss runs the output layer at scored_per_example positions a row (members.scored_positions):
    exact only if every example, of every split, has exactly that many."""
    task = make_task(name, train_examples=300, **options)
    for split, index in (("train", 0), ("train", 2), ("val", 1), ("test", 0)):
        _, y, mask = task.batch(split, index, 128)
        assert (mask.sum(1) == task.scored_per_example).all() and torch.equal(mask, y != IGNORE)


@pytest.mark.parametrize("stacked", [False, True])
def test_the_loss_at_the_scored_positions_alone_is_the_full_loss(stacked):
    """A group's training loss with the output layer at the k scored positions only (scored = k) against the same
    loss over full logits (scored None): equal per member, and so are the gradients; the positions are the scored
    ones, in order."""
    from attnbench.training.members import build, scored_positions

    task = make_task("mqar", vocab_size=64, seq_len=32, num_kv_pairs=4, train_examples=0)
    x, y, mask = task.batch("train", 0, 8)
    at = scored_positions(y, 4)
    assert torch.equal(at, mask.nonzero()[:, 1].view(8, 4))
    c = make_config("tiny", ctx=32, dropout=0.0).resolved()
    seeds = [0, 1] if stacked else [0]
    runs = []
    for k in (None, task.scored_per_example):
        members = build("mha", c, 64, seeds, torch.device("cpu"), stacked=stacked)
        members.scored = k
        losses, _, _ = members.loss(x, y)
        losses.sum().backward()
        grads = [p.grad.clone() for _, p, _ in members.named_trained()]
        runs.append((losses.detach(), grads))
    (full, g_full), (kept, g_kept) = runs
    assert len(full) == len(seeds) and torch.allclose(kept, full, rtol=1e-6, atol=0)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(g_kept, g_full))


def test_task_batches_split_over_ranks_is_the_one_process_batch():
    task = make_task("mqar", vocab_size=64, seq_len=32, num_kv_pairs=4, train_examples=100)
    one = sources.TaskBatches(task, 8)
    for step in (0, 12, 13):  # 100 examples, batch 8: step 12 straddles the first reshuffle
        x, y = one.get(step)
        parts = [sources.TaskBatches(task, 8, r, 4).get(step) for r in range(4)]
        assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)
    assert one.steps_per_epoch == 12 and not one.restarts(12)
    with pytest.raises(AttnbenchError, match="streams fresh examples"):
        sources.TaskBatches(make_task("mqar", train_examples=0), 8).steps_per_epoch


def test_a_model_learns_single_pair_recall(tmp_path):
    """A real signal through the whole loop (batches, masked loss, validation, test pass on the best weights):
    2 layers of MHA learn to answer one key-value pair; chance is 1/8 (values from [V/2, V))."""
    job = TrainJob(attn="mha", preset="tiny", results_dir=str(tmp_path / "r"), checkpoints_dir=str(tmp_path / "c"))
    plan = new_plan(job, dict(task="mqar", task_opts="vocab_size=16,seq_len=8,num_kv_pairs=1,train_examples=0,"
                                                     "test_examples=256", steps=100, batch=32, lr=3e-3,
                              eval_every=50, warmup=10, device="cpu"))
    plan.start("")
    (rec,) = engine.run_plan(plan, None, command="test")
    assert rec["status"] == "ok" and rec["metrics"]["test_n"] == 256
    assert rec["metrics"]["test_acc"] >= 0.9, rec["metrics"]


def test_cli_trains_a_task_and_records_recall(tmp_path):
    r = runner.invoke(cli.app, ["train", "--task", "mqar", "--task-opt", SMALL_MQAR, "--attn", "mha,gqa",
                                "--preset", "tiny", "--device", "cpu", "--steps", "12", "--eval-every", "6",
                                "--results-dir", str(tmp_path / "r"), "--checkpoints-dir", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    assert "mqar (Arora et al. 2023" in r.output and "all-right examples" in r.output and "test bpc" not in r.output
    recs = _records(tmp_path / "r")
    assert [x["attn"] for x in recs] == ["mha", "gqa"]
    for x in recs:
        m, cfg = x["metrics"], x["config"]
        assert cfg["task"] == {"task": "mqar", "vocab_size": 64, "seq_len": 32, "num_kv_pairs": 4, "power_a": 0.01,
                               "random_non_queries": True, "train_examples": 1024, "test_examples": 96, "seed": 0}
        assert cfg["preset_fields"]["ctx"] == 32 and cfg["vocab"] == 64 and "data_sha256" not in cfg
        assert m["test_n"] == 4 * 96 and m["test_examples"] == 96 and 0 <= m["test_exact"] <= m["test_acc"] <= 1
        assert "test_bpc" not in m and 0 < m["attn_params"] < m["params"]
    assert recs[1]["config"]["attn_config"]["kv_heads"] == 2  # tiny: 4 heads, GQA's default g = 2 (not MQA)


# ------------------------------------------------------------------------------------------------- extrapolation
def _corpus():
    text = CORPUS.read_text(encoding="utf-8")[:60_000] if CORPUS.is_file() else "to be or not to be; " * 3000
    return corpus_from_text(text)


def test_extrapolation_scores_every_prediction_once_and_says_na_past_a_position_table():
    corpus = _corpus()
    c = make_config("tiny", ctx=32, eval_batch=8).resolved()
    mha, rmha = _model("mha", corpus.vocab_size, 32), _model("rmha", corpus.vocab_size, 32)
    data = corpus.test[:700]
    cpu = torch.device("cpu")
    ((a16, a32, a64),) = evaluation.extrapolation(_one(mha), data, c, (16, 32, 64), cpu)
    assert a64["status"] == "n/a" and "exceeds the position table (32)" in a64["reason"]
    assert a16["n"] == a32["n"] == len(data) - 1
    (rows,) = evaluation.extrapolation(_one(rmha), data, c, (16, 64, 256, 1000), cpu)
    assert [r["ctx"] for r in rows] == [16, 64, 256, 1000]
    assert all(r["n"] == len(data) - 1 for r in rows[:3]) and rows[3]["status"] == "n/a"
    # at length L: the sliding-window pass of stride L/2 (each prediction with >= L/2 tokens of left context)
    (ref,) = evaluation.evaluate(_one(rmha), data, replace(c, ctx=64, eval_stride=32), cpu)
    assert rows[1]["loss"] == pytest.approx(ref["loss"], rel=1e-6) and rows[1]["acc"] == ref["acc"]


@pytest.mark.skipif(not CORPUS.is_file(), reason=f"corpus not at {CORPUS}")
def test_cli_eval_ctx_records_each_length(tmp_path):
    r = runner.invoke(cli.app, ["train", "--attn", "mha,rmha", "--preset", "tiny", "--device", "cpu", "--steps", "4",
                                "--eval-every", "4", "--ctx", "32", "--eval-ctx", "64, 16", "--eval-batch", "256",
                                "--results-dir", str(tmp_path / "r"), "--checkpoints-dir", str(tmp_path / "c")],
                      env={"ATTNBENCH_DATA": str(CORPUS)})
    assert r.exit_code == 0, r.output
    assert "Length extrapolation: test loss (nats) / accuracy at each context (trained at 32)" in r.output
    assert "n/a: segment of 64 tokens exceeds the position table (32)" in r.output
    mha, rmha = _records(tmp_path / "r")
    assert mha["config"]["preset_fields"]["eval_ctx"] == "16,64"
    assert [e["ctx"] for e in mha["metrics"]["eval_ctx"]] == [16, 64]
    far = mha["metrics"]["eval_ctx"][1]
    assert far["status"] == "n/a" and "position table" in far["reason"]
    assert all(e["n"] == rmha["metrics"]["test_n"] for e in rmha["metrics"]["eval_ctx"])


# ------------------------------------------------------------------------------------------------- mistakes
@pytest.mark.parametrize("args,match", [
    (["--task", "nope"], "unknown task 'nope'; valid: shakespeare, mqar, selective-copying"),
    (["--task", "mqar", "--ctx", "128"], "--ctx 128: the context of --task mqar is its sequence length (64)"),
    (["--task", "mqar", "--mem-len", "8"], "--mem-len is not available with --task mqar"),
    (["--task", "mqar", "--eval-ctx", "128"], "--eval-ctx is not available with --task mqar"),
    (["--task-opt", "seq_len=8"], "options are for a synthetic task"),
    (["--task", "mqar", "--task-opt", "seq_len=7"], "mqar: seq_len must be positive and even, got 7"),
    (["--task", "mqar", "--task-opt", "colour=red"], "task option 'colour=red': expected NAME=VALUE"),
    (["--task", "mqar", "--sample", "20"], "--sample generates text: not available with --task mqar"),
    (["--task", "mqar", "--epochs", "1", "--task-opt", "train_examples=0"], "streams fresh examples"),
    (["--eval-ctx", "12x"], "--eval-ctx must be positive integers"),
    (["--eval-ctx", "128", "--mem-len", "8"], "--eval-ctx scores windows without memory"),
    (["--preset", "paper", "--task", "mqar", "--attn", "mha"], "the paper preset trains on Tiny Shakespeare only"),
])
def test_task_mistakes_are_one_line(tmp_path, args, match):
    r = runner.invoke(cli.app, ["train", "--preset", "tiny", "--device", "cpu", *args, "--results-dir",
                                str(tmp_path / "r"), "--checkpoints-dir", str(tmp_path / "c")],
                      env={"ATTNBENCH_DATA": str(CORPUS)})
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert match in r.output.replace("\n", " "), r.output
