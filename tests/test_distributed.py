"""Data-parallel `train` under torchrun on CPU (gloo), issue 7: the ranks' batches make up the one-process batch,
the split evaluation equals a one-process evaluation, the loss curve equals a one-process run with the same global
batch, only rank 0 writes, Ctrl-C stops every rank with one line, and a 2-process checkpoint resumes in 1 process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from attnbench import cli
from attnbench.config import PRESETS, TrainConfig
from attnbench.data import Batches, corpus_from_text, load_corpus
from attnbench.errors import AttnbenchError
from attnbench.model import build_model
from attnbench.training import checkpoints, distributed
from attnbench.training.evaluation import evaluate
from attnbench.training.members import Solo

ROOT = Path(__file__).resolve().parent.parent
from testdata import CORPUS  # noqa: E402
needs_corpus = pytest.mark.skipif(not CORPUS.is_file(), reason=f"corpus not at {CORPUS}")
K = 8  # optimiser steps of the compared runs
RUN = ["--device", "cpu", "--attn", "mha", "--preset", "tiny", "--steps", str(K), "--eval-every", "4",
       "--log-every", "2", "--dropout", "0"]  # gloo on CPU: also on a one-GPU machine, where rank 1 has no GPU


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "ATTNBENCH_DATA": str(CORPUS), "XDG_CACHE_HOME": str(tmp / "cache"), "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(ROOT)}


def _torchrun(tmp: Path, nproc: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-addr",
            "127.0.0.1", "--master-port", str(_free_port()), "-m", "attnbench", "train", "--results-dir",
            str(tmp / "results"), "--checkpoints-dir", str(tmp / "ck"), *args]


def _records(d: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(d.glob("train-*.jsonl")) for line in f.read_text().splitlines()]


@pytest.fixture(scope="module")
def two_procs(tmp_path_factory):
    """One 2-process gloo run of the tiny preset, shared by the comparisons below."""
    tmp = tmp_path_factory.mktemp("ddp")
    p = subprocess.run(_torchrun(tmp, 2, *RUN, "--format", "json"), cwd=ROOT, env=_env(tmp), capture_output=True,
                       text=True, timeout=180)
    return tmp, p


# ---------------------------------------------------------------------------------------------- data order
@pytest.mark.parametrize("mem_len", [0, 8])
@pytest.mark.parametrize("world", [2, 4])
def test_ranks_batches_make_up_the_one_process_batch(mem_len, world):
    data = torch.arange(20_000)
    one = Batches(data, 8, 16, mem_len, seed=5)
    ranks = [Batches(data, 8, 16, mem_len, seed=5, rank=r, world=world) for r in range(world)]
    for step in (0, 3, 77):
        parts = [b.get(step) for b in ranks]
        assert all(x.shape == (8 // world, 16) for x, _ in parts)
        x, y = one.get(step)
        assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)
    assert not torch.equal(ranks[0].get(0)[0], ranks[1].get(0)[0])


def test_global_batch_must_divide_by_the_processes():
    with pytest.raises(AttnbenchError, match="not divisible by the 3 processes"):
        Batches(torch.arange(5000), 8, 16, 0, seed=0, rank=0, world=3)


@pytest.mark.parametrize("mem_len", [0, 8])
def test_rank_shares_of_the_evaluation_partition_it(mem_len):
    """Without a process group the reduction is the identity, so each share's own tally is visible: the shares'
    counts add up to the full pass and their losses, weighted by counts, to its loss."""
    corpus = corpus_from_text(CORPUS.read_text()[:30_000] if CORPUS.is_file() else "the cat sat. " * 3000)
    c = replace(PRESETS["tiny"], n_layers=1, d_model=32, n_heads=2, d_ff=32, ctx=16, mem_len=mem_len,
                      eval_stride=8, eval_batch=16, amp=False).resolved()
    torch.manual_seed(0)
    model = build_model("mha", corpus.vocab_size, n_layers=1, d_model=32, n_heads=2, d_ff=32, ctx=16, dropout=0.0,
                        act="gelu", mem_len=mem_len)
    (full,) = evaluate(Solo(model, 0), corpus.val, c, torch.device("cpu"))
    for world in (2, 3):
        shares = [evaluate(Solo(model, 0), corpus.val, c, torch.device("cpu"), r, world)[0] for r in range(world)]
        assert sum(s["n"] for s in shares) == full["n"] == len(corpus.val) - 1
        assert all(s["n"] > 0 for s in shares)
        assert sum(s["loss"] * s["n"] for s in shares) / full["n"] == pytest.approx(full["loss"], rel=1e-5)
        assert sum(round(s["acc"] * s["n"]) for s in shares) == round(full["acc"] * full["n"])


def test_single_process_helpers_are_no_ops():
    assert distributed.from_env({}) == distributed.SINGLE and distributed.is_main() and not distributed.active()
    t = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce_sum(t) is t and t.tolist() == [1.0, 2.0]
    assert distributed.broadcast("x") == "x"
    assert distributed.from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == distributed.Proc(1, 2, 1)
    with pytest.raises(AttnbenchError, match="outside WORLD_SIZE"):
        distributed.from_env({"RANK": "2", "WORLD_SIZE": "2"})


# ---------------------------------------------------------------------------------------------- real torchrun
@needs_corpus
def test_two_process_run_passes_and_rank0_writes_one_record(two_procs):
    tmp, p = two_procs
    assert p.returncode == 0, p.stderr[-3000:]
    recs = _records(tmp / "results")
    assert len(recs) == 1 and len(list((tmp / "results").iterdir())) == 1
    r = recs[0]
    assert r["status"] == "ok" and r["config"]["world_size"] == 2 and r["config"]["global_batch"] == 16
    assert r["config"]["per_rank_batch"] == 8 and r["metrics"]["steps"] == K
    assert r["metrics"]["tokens"] == K * 16 * 64  # global tokens: both ranks' shares
    assert p.stderr.count(f"parameters, {K} steps, 2 processes") == 1  # the progress header: rank 0 alone
    assert [c["step"] for c in r["curves"]] == [4, 8]
    assert len(list((tmp / "ck").rglob("*.pt"))) == 1


@needs_corpus
def test_two_process_evaluation_equals_one_process_evaluation(two_procs):
    tmp, p = two_procs
    assert p.returncode == 0, p.stderr[-3000:]
    r = _records(tmp / "results")[0]
    ck = checkpoints.load(next((tmp / "ck").rglob("*.pt")))
    assert ck["world_size"] == 2 and ck["pos"]["step"] == K
    c = TrainConfig(**ck["cfg"])
    corpus = load_corpus(CORPUS)
    model = build_model("mha", corpus.vocab_size, n_layers=c.n_layers, d_model=c.d_model, n_heads=c.n_heads,
                        d_ff=c.d_ff, ctx=c.ctx, dropout=c.dropout, act=c.act, mem_len=c.mem_len, impl=c.attn_impl)
    cpu = torch.device("cpu")
    model.load_state_dict(ck["members"])  # the weights at the end of training (step K)
    (val,) = evaluate(Solo(model, 0), corpus.val, c, cpu)
    last = r["curves"][-1]
    assert last["val_loss"] == pytest.approx(val["loss"], rel=1e-6, abs=1e-9)
    assert abs(last["val_acc"] - val["acc"]) <= 1 / val["n"]
    model.load_state_dict(ck["states"][0]["best_state"])  # the test split is scored on the best-validation weights
    (test,) = evaluate(Solo(model, 0), corpus.test, c, cpu)
    m = r["metrics"]
    assert m["test_n"] == test["n"] and m["test_loss"] == pytest.approx(test["loss"], rel=1e-6, abs=1e-9)
    assert abs(m["test_acc"] - test["acc"]) <= 1 / test["n"]


@needs_corpus
def test_two_process_loss_matches_one_process_with_the_same_global_batch(two_procs, tmp_path):
    tmp, p = two_procs
    assert p.returncode == 0, p.stderr[-3000:]
    two = _records(tmp / "results")[0]
    one_run = CliRunner().invoke(cli.app, ["train", *RUN, "--format", "json", "--results-dir",
                                           str(tmp_path / "results"), "--checkpoints-dir", str(tmp_path / "ck")],
                                 env={"ATTNBENCH_DATA": str(CORPUS), "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert one_run.exit_code == 0, one_run.output
    one = _records(tmp_path / "results")[0]
    assert one["config"]["world_size"] == 1 and one["config"]["global_batch"] == two["config"]["global_batch"]
    for a, b in zip(one["curves"], two["curves"], strict=True):
        assert a["step"] == b["step"]
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-4)
        assert b["val_loss"] == pytest.approx(a["val_loss"], abs=1e-4)
    assert two["metrics"]["train_loss"] == pytest.approx(one["metrics"]["train_loss"], abs=1e-4)


@needs_corpus
def test_ctrl_c_stops_every_rank_and_the_checkpoint_resumes_in_one_process(tmp_path):
    """SIGINT to torchrun (what Ctrl-C in a terminal does): one error line from rank 0, a checkpoint and a partial
    record; then the 2-process checkpoint resumes in 1 process (the data order depends on (seed, step) only)."""
    args = ["--device", "cpu", "--attn", "mha", "--preset", "tiny", "--layers", "1", "--d-model", "32", "--ctx", "16",
            "--batch", "4", "--steps", "100000", "--eval-every", "20", "--eval-stride", "16"]
    proc = subprocess.Popen(_torchrun(tmp_path, 2, *args), cwd=ROOT, env=_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        while not list((tmp_path / "ck").rglob("*.pt")) and proc.poll() is None and time.monotonic() - t0 < 90:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    ours = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(ours) == 1 and "interrupted at step" in ours[0] and "--resume" in ours[0], err[-3000:]
    recs = _records(tmp_path / "results")
    assert len(recs) == 1 and recs[0]["status"] == "interrupted" and recs[0]["config"]["world_size"] == 2
    ck_path = next((tmp_path / "ck").rglob("*.pt"))
    ck = torch.load(ck_path, weights_only=False)
    step = ck["pos"]["step"]
    assert ck["world_size"] == 2 and step >= 20
    # Let the resumed run end 6 steps later so that the test stays quick (the plan asked for 100000).
    plan_file = ck_path.parent / "plan.json"
    plan = json.loads(plan_file.read_text())
    plan["cfg"]["steps"] = plan["overrides"]["steps"] = step + 6
    plan_file.write_text(json.dumps(plan))
    r = CliRunner().invoke(cli.app, ["train", "--resume", str(ck_path), "--format", "json", "--results-dir",
                                     str(tmp_path / "r1")],
                           env={"ATTNBENCH_DATA": str(CORPUS), "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert r.exit_code == 0, r.output
    (rec,) = _records(tmp_path / "r1")
    assert rec["status"] == "ok" and rec["config"]["world_size"] == 1 and rec["config"]["global_batch"] == 4
    assert rec["config"]["resumed_world_size"] == 2
    assert rec["config"]["resumed_from_step"] == step and rec["metrics"]["steps"] == step + 6
