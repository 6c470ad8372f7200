"""Training: presets, data order, schedules, the full-pass evaluation (against a brute force), robustness
(NaN, Ctrl-C + resume, bad input) and `attnbench train --preset tiny` through the real CLI (issue 4)."""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from attnbench import cli
from attnbench.config import PRESETS, TRAIN_FIELDS, TrainJob, make_config
from attnbench.data import Batches, corpus_from_text
from attnbench.errors import AttnbenchError, Interrupted
from attnbench.model import build_model
from attnbench.training import engine, evaluation
from attnbench.training.members import Solo
from attnbench.training.optim import lr_at
from attnbench.training.plan import new_plan, resume_plan
from attnbench.training.summary import summarize

from testdata import CORPUS
needs_corpus = pytest.mark.skipif(not CORPUS.is_file(), reason=f"corpus not at {CORPUS}")
runner = CliRunner()


# ---------------------------------------------------------------------------------------------- presets
def test_presets_as_the_issue_says():
    d, p, t = PRESETS["default"], PRESETS["paper"], PRESETS["tiny"]
    assert (d.n_layers, d.d_model, d.n_heads, d.ctx, d.batch, d.dropout, d.lr, d.steps, d.schedule) == \
        (6, 384, 6, 256, 64, 0.2, 1e-3, 5000, "cosine") and d.warmup > 0 and d.amp
    assert (p.n_layers, p.d_model, p.n_heads, p.d_ff, p.dropout, p.ctx, p.mem_len, p.batch, p.schedule,
            p.warmup, p.grad_clip, p.epochs) == (6, 128, 8, 256, 0.0, 2, 32, 32, "noam", 2000, 1.0, 10)
    assert t.steps * t.batch * t.ctx < 200_000  # seconds on a CPU
    assert d.act == "gelu" and p.act == "relu"  # one activation for every attention of a comparison
    assert d.resolved().d_ff == 4 * 384 and d.resolved().eval_stride == 128


def test_the_mqar_preset_is_the_probed_point_and_a_task_option_changes_only_itself():
    from attnbench import tasks

    m = make_config("mqar")
    assert (m.task, m.n_layers, m.d_model, m.n_heads, m.batch, m.steps, m.lr, m.dropout) == \
        ("mqar", 2, 128, 4, 256, 3000, 3e-3, 0.0)
    assert tasks.parse_options("mqar", m.task_opts) == {"seq_len": 64, "num_kv_pairs": 16, "random_non_queries": False}
    assert tasks.parse_options("mqar", make_config("mqar", task_opts="num_kv_pairs=8, seed=3").task_opts) == \
        {"seq_len": 64, "num_kv_pairs": 8, "random_non_queries": False, "seed": 3}
    assert make_config("mqar", task="shakespeare").task_opts == ""  # the preset's options were for its own task
    assert make_config("tiny", task_opts="seq_len=32").task_opts == "seq_len=32"


def test_every_field_has_a_cli_flag():
    import typer.main

    cmd = typer.main.get_command(cli.app).commands["train"]
    params = {p.name for p in cmd.params}
    assert set(TRAIN_FIELDS) <= params


@pytest.mark.parametrize("override, match", [({"ctx": 0}, "ctx"), ({"n_heads": 5}, "divide"),
                                             ({"schedule": "linear"}, "schedule"), ({"eval_stride": 999}, "stride")])
def test_nonsense_overrides_are_one_clear_line(override, match):
    with pytest.raises(AttnbenchError, match=match):
        make_config("tiny", **override).resolved()


def test_unknown_preset_and_field():
    with pytest.raises(AttnbenchError, match="preset"):
        make_config("huge")
    with pytest.raises(AttnbenchError, match="setting"):
        make_config("tiny", nonsense=1)


# ---------------------------------------------------------------------------------------------- schedule, data
def test_schedules():
    c = PRESETS["default"]
    assert lr_at(c.warmup - 1, c, 5000) == pytest.approx(c.lr)
    assert lr_at(0, c, 5000) == pytest.approx(c.lr / c.warmup)
    assert lr_at(4999, c, 5000) == pytest.approx(c.min_lr)
    lrs = [lr_at(s, c, 5000) for s in range(c.warmup, 5000, 50)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    p = PRESETS["paper"]
    peak = 128 ** -0.5 * 2000 ** -0.5  # Vaswani et al. 2017, eq. 3 at step = warmup
    assert lr_at(1999, p, 10**5) == pytest.approx(peak)
    assert lr_at(7999, p, 10**5) == pytest.approx(peak * 0.5)  # ∝ step^-0.5 after warm-up


def test_batches_are_a_function_of_seed_and_step():
    data = torch.arange(5000)
    a, b = Batches(data, 4, 16, 0, seed=3), Batches(data, 4, 16, 0, seed=3)
    for s in (0, 7, 123):
        xa, ya = a.get(s)
        assert torch.equal(xa, b.get(s)[0]) and torch.equal(ya, xa + 1)  # targets are the next tokens
    assert not torch.equal(a.get(0)[0], Batches(data, 4, 16, 0, seed=4).get(0)[0])
    assert not torch.equal(a.get(0)[0], Batches(data, 4, 16, 0, seed=3, rank=1, world=2).get(0)[0])


def test_memory_batches_are_contiguous_streams():
    data = torch.arange(1000)
    b = Batches(data, 4, 8, mem_len=16, seed=0)
    x0, _ = b.get(0)
    x1, y1 = b.get(1)
    assert torch.equal(x1[:, 0], x0[:, -1] + 1)  # the next segment continues each stream
    assert torch.equal(y1, x1 + 1)
    assert b.restarts(0) and not b.restarts(1) and b.restarts(b.n_seg)


# ---------------------------------------------------------------------------------------------- evaluation
@pytest.mark.parametrize("n, ctx, stride", [(50, 8, 1), (50, 8, 3), (50, 8, 8), (9, 8, 4), (5, 8, 2), (1000, 64, 32)])
def test_window_plan_scores_every_prediction_once(n, ctx, stride):
    L = min(ctx, n - 1)
    seen = []
    for start, first in evaluation.window_plan(n, ctx, stride):
        assert 0 <= start and start + L <= n - 1 and 0 <= first < L
        preds = list(range(start + first, start + L))
        seen += preds
        assert all(p - start >= min(p, L - stride) for p in preds)  # left context
    assert sorted(seen) == seen == list(range(n - 1))


def _brute_force(model, data, ctx_of):
    """Score prediction p (input position p -> token p+1) alone, from inputs ctx_of(p) … p."""
    nll, correct = 0.0, 0
    for p in range(len(data) - 1):
        logits, _ = model(data[ctx_of(p):p + 1][None])
        nll += F.cross_entropy(logits[0, -1:], data[p + 1:p + 2], reduction="sum").item()
        correct += int(logits[0, -1].argmax() == data[p + 1])
    n = len(data) - 1
    return nll / n, correct / n


@pytest.mark.parametrize("attn", ["mha", "rcmha"])
@pytest.mark.parametrize("stride", [1, 3])
def test_evaluation_equals_brute_force(attn, stride):
    torch.manual_seed(0)
    V, ctx = 7, 8
    model = build_model(attn, V, n_layers=2, d_model=16, n_heads=2, d_ff=16, ctx=ctx, dropout=0.0,
                        act="gelu").double()
    data = torch.randint(0, V, (41,))
    c = replace(PRESETS["tiny"], ctx=ctx, eval_stride=stride, eval_batch=4, mem_len=0)
    (got,) = evaluation.evaluate(Solo(model, 0), data, c, torch.device("cpu"))
    plan = evaluation.window_plan(len(data), ctx, stride)
    start_of = {}
    for s, f in plan:
        for p in range(s + f, s + min(ctx, len(data) - 1)):
            start_of[p] = s
    loss, acc = _brute_force(model, data, start_of.__getitem__)
    assert got["n"] == len(data) - 1
    assert got["loss"] == pytest.approx(loss, rel=1e-6) and got["acc"] == pytest.approx(acc)
    assert got["bpc"] == pytest.approx(loss / math.log(2)) and got["ppl"] == pytest.approx(math.exp(loss))
    if stride == 1:  # every prediction with the full ctx window behind it
        assert (loss, acc) == pytest.approx(_brute_force(model, data, lambda p: max(0, p - ctx + 1)), rel=1e-6)


def test_memory_evaluation_scores_every_prediction_once():
    plan = evaluation.stream_plan(101, 4, burn=6)
    covered = [p for _, a, b in plan for p in range(a, b)]
    assert covered == list(range(100))
    assert all(r == max(0, a - 6) for r, a, _ in plan)
    torch.manual_seed(0)
    model = build_model("rmha", 7, n_layers=1, d_model=16, n_heads=2, d_ff=16, ctx=4, dropout=0.0, act="relu",
                        mem_len=6).double()
    c = replace(PRESETS["paper"], ctx=4, mem_len=6, eval_batch=4)
    data = torch.randint(0, 7, (101,))
    (got,) = evaluation.evaluate(Solo(model, 0), data, c, torch.device("cpu"))
    assert got["n"] == 100
    # one stream only: the first prediction of a segment sees the previous segment through memory
    (one,) = evaluation.evaluate(Solo(model, 0), data[:9], replace(c, eval_batch=1), torch.device("cpu"))
    mem_logits = []
    _, mems = model(data[None, :4])
    out, _ = model(data[None, 4:8], mems)
    assert one["n"] == 8
    first = F.cross_entropy(model(data[None, :4])[0][0], data[1:5], reduction="sum").item()
    second = F.cross_entropy(out[0], data[5:9], reduction="sum").item()
    assert one["loss"] == pytest.approx((first + second) / 8, rel=1e-6)


# ---------------------------------------------------------------------------------------------- robustness
SMALL = dict(n_layers=1, d_model=32, n_heads=2, d_ff=32, ctx=16, batch=4, steps=12, eval_every=6, log_every=2,
             eval_stride=16)


def _small_corpus():
    text = (CORPUS.read_text(encoding="utf-8")[:40_000] if CORPUS.is_file() else "abcdefgh\n" * 4000)
    return corpus_from_text(text, source="first 40k characters")


def _cfg(**kw):
    return replace(PRESETS["tiny"], **{**SMALL, **kw}).resolved()


def _group(tmp_path, seeds=(0,), attn="mha", name="g", **kw):
    from attnbench.training.sources import make_source

    c = _cfg(**kw)
    return engine.train_group(attn, list(seeds), make_source(c, _small_corpus()), c,
                              record_path=tmp_path / f"{name}.jsonl", ckpt_path=tmp_path / f"{name}.pt",
                              command="test", stacked=len(seeds) > 1)


def _plan(tmp_path, attn="mha", seeds=1, **kw):
    job = TrainJob(attn=attn, preset="tiny", seeds=seeds, results_dir=str(tmp_path / "results"),
                   checkpoints_dir=str(tmp_path / "ck"), ensemble=kw.pop("ensemble", "auto"))
    p = new_plan(job, {**SMALL, **kw})
    p.start(data_sha256="")
    return p


def _lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU"))]


def _poison_before_step_9(monkeypatch, member: int = 0):
    """A weight of one member turned NaN in place before step 9 (on CUDA the step is a replayed CUDA graph: it reads
    the weights in place, so the NaN goes into the weights, not into a step's result)."""
    groups, real_build, real_get = [], engine.membership.build, Batches.get

    def build(*a, **k):
        groups.append(real_build(*a, **k))
        return groups[-1]

    def poison(self, step):
        if step == 8 and self.seed == member:
            with torch.no_grad():
                _, p, _ = groups[-1].named_trained()[0]
                (p[member] if groups[-1].stacked else p).fill_(float("nan"))
        return real_get(self, step)

    monkeypatch.setattr(engine.membership, "build", build)
    monkeypatch.setattr(Batches, "get", poison)


@pytest.mark.parametrize("device", DEVICES)
def test_nan_loss_stops_and_keeps_what_was_measured(tmp_path, monkeypatch, device):
    _poison_before_step_9(monkeypatch)
    (rec,) = _group(tmp_path, device=device)
    assert rec["config"]["cuda_graph"] == ("on" if device == "cuda" else "off: no GPU")
    assert rec["status"] == "error" and rec["reason"] == "non-finite training loss at step 9"
    assert [r["step"] for r in rec["curves"]] == [6]  # the evaluation before the NaN is kept
    saved = json.loads((tmp_path / "g.jsonl").read_text())
    assert saved["status"] == "error" and saved["curves"] == rec["curves"] and not saved.get("partial")


@pytest.mark.parametrize("device", DEVICES)
def test_a_nan_in_one_member_stops_it_alone_and_the_others_finish_as_alone(tmp_path, monkeypatch, device):
    """Three seeds as one model, a NaN put into member 1's weights before step 9: member 1 stops with its record
    (written at once), members 0 and 2 finish exactly as their solo runs."""
    _poison_before_step_9(monkeypatch, member=1)
    recs = _group(tmp_path, seeds=(0, 1, 2), device=device, name="three")
    assert [(r["config"]["seed"], r["status"]) for r in recs] == [(1, "error"), (0, "ok"), (2, "ok")]
    assert recs[0]["reason"] == "non-finite training loss at step 9" and recs[0]["metrics"]["steps"] == 10
    assert all(r["config"]["ensemble"] == 3 and r["config"]["group"] == [0, 1, 2] for r in recs)
    monkeypatch.undo()
    for r in recs[1:]:
        (solo,) = _group(tmp_path, seeds=(r["config"]["seed"],), device=device, name=f"solo{r['config']['seed']}")
        assert r["metrics"]["test_loss"] == pytest.approx(solo["metrics"]["test_loss"], rel=1e-5)
        assert [c["val_loss"] for c in r["curves"]] == pytest.approx([c["val_loss"] for c in solo["curves"]],
                                                                     rel=1e-5)


def _interrupt_at(monkeypatch, step: int, nth_run: int = 1, signum=signal.SIGINT):
    """A real signal to this process while run number `nth_run` reads the batch of `step` (the engine takes it at
    the batch boundary after that step). Runs are told apart by their loaders (a CUDA-graph capture reads a run's
    first batch once more)."""
    real, runs = Batches.get, []

    def get(self, s):
        if self.seed == 0 and not any(r is self for r in runs):
            runs.append(self)  # kept alive: an id could be reused by the next run's loader
        if len(runs) == nth_run and self is runs[-1] and s == step:
            os.kill(os.getpid(), signum)
        return real(self, s)

    monkeypatch.setattr(Batches, "get", get)


def test_ctrl_c_mid_plan_then_resume_continues_every_attention_and_seed(tmp_path, monkeypatch):
    """Two attentions × two seeds trained alone; Ctrl-C at step 8 of the second run. The finished run's record
    stays, the interrupted one gets a partial record (status interrupted) and a checkpoint, and resuming the plan
    runs what is left of all four."""
    corpus, p = _small_corpus(), _plan(tmp_path, attn="mha,sha", seeds=2, ensemble="off")
    _interrupt_at(monkeypatch, step=7, nth_run=2)
    with pytest.raises(Interrupted) as e:
        engine.run_plan(p, corpus, command="test")
    assert e.value.exit_code == 130 and "\n" not in str(e.value)
    assert str(e.value).startswith("sha (seed 0): interrupted at step 8; checkpoint and partial records saved")
    assert str(e.value).endswith(p.resume_command())
    first = _lines(p.record_path)
    assert [(r["attn"], r["status"], r.get("partial")) for r in first] == [("mha", "ok", None),
                                                                         ("sha", "interrupted", True)]
    assert not list(Path(p.run_dir).glob("*.part"))  # atomic writes left no temporary file
    monkeypatch.undo()

    again = resume_plan(p.run_dir, {})
    recs = engine.run_plan(again, corpus, command="test")
    assert [(r["attn"], r["config"]["seed"], r["status"]) for r in recs] == \
        [("mha", 0, "ok"), ("sha", 0, "ok"), ("mha", 1, "ok"), ("sha", 1, "ok")]
    assert recs[0] == {**first[0], "_source": recs[0]["_source"]}  # kept as it was, not trained again
    assert recs[1]["config"]["resumed_from_step"] == 8 and [c["step"] for c in recs[1]["curves"]] == [6, 12]
    assert recs[1]["metrics"]["steps"] == 12 and recs[1]["metrics"]["tokens"] == 12 * 4 * 16
    assert len(_lines(p.record_path)) == 5  # the same file: 2 from the first session, 3 from the second


def test_a_run_folder_carried_without_its_records_keeps_the_finished_runs_as_measured(tmp_path, monkeypatch):
    """The plan interrupted in its second run, then resumed where its record file is gone (the run folder alone
    carried to another machine, as between device calls): the finished run is neither trained nor tested again, its
    record is the first session's to the last figure (memory and time included), and the new record file holds it."""
    from attnbench.training import engine as eng

    corpus, p = _small_corpus(), _plan(tmp_path, attn="mha,sha", ensemble="off")
    _interrupt_at(monkeypatch, step=7, nth_run=2)
    with pytest.raises(Interrupted):
        engine.run_plan(p, corpus, command="test")
    monkeypatch.undo()
    first = _lines(p.record_path)[0]
    assert (first["attn"], first["status"]) == ("mha", "ok")
    p.record_path.unlink()  # another machine: only the checkpoint folder came

    ran = []
    real = eng.train_group
    monkeypatch.setattr(eng, "train_group", lambda attn, seeds, *a, **k: ran.append(attn) or real(attn, seeds, *a, **k))
    again = resume_plan(p.run_dir, {})
    recs = engine.run_plan(again, corpus, command="test")
    assert ran == ["sha"]  # mha's finished run is not run again, not even its test pass
    assert [(r["attn"], r["status"]) for r in recs] == [("mha", "ok"), ("sha", "ok")]
    assert recs[0] == first  # as measured: memory, time, test figures
    assert _lines(again.record_path)[0] == first and _lines(again.record_path)[1]["attn"] == "sha"  # a complete file


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stacked_group_interrupted_then_resumed_equals_an_uninterrupted_one(tmp_path, monkeypatch, signum, code):
    """Three seeds as one model, stopped by a signal at step 4 (SIGTERM as Ctrl-C, exit 143): partial records say
    interrupted, and the resumed group ends with the uninterrupted group's results."""
    whole = _group(tmp_path, seeds=(0, 1, 2), name="whole")
    p = _plan(tmp_path, seeds=3, ensemble="3")
    _interrupt_at(monkeypatch, step=3, signum=signum)
    with pytest.raises(Interrupted) as e:
        engine.run_plan(p, _small_corpus(), command="test")
    assert e.value.exit_code == code and str(e.value).startswith("mha (seeds 0-2): interrupted at step 4")
    part = _lines(p.record_path)
    assert [(r["status"], r["partial"], r["metrics"]["steps"]) for r in part] == [("interrupted", True, 4)] * 3
    monkeypatch.undo()
    recs = engine.run_plan(resume_plan(p.run_dir, {}), _small_corpus(), command="test")
    assert [r["config"]["resumed_from_step"] for r in recs] == [4] * 3
    for r, w in zip(recs, whole):
        assert r["config"]["seed"] == w["config"]["seed"] and r["status"] == "ok"
        for k in ("test_loss", "test_acc", "train_loss"):
            assert r["metrics"][k] == pytest.approx(w["metrics"][k], rel=1e-6), k


def test_ctrl_c_during_the_test_pass_keeps_a_record_and_resume_only_tests(tmp_path, monkeypatch):
    corpus, p = _small_corpus(), _plan(tmp_path)
    real_finish = engine.finish

    def interrupted(*a):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "finish", interrupted)
    with pytest.raises(Interrupted, match="interrupted during the test pass; checkpoint and partial records saved"):
        engine.run_plan(p, corpus, command="test")
    (part,) = _lines(p.record_path)
    assert part["partial"] and part["status"] == "interrupted" and part["metrics"]["steps"] == 12
    assert "test_acc" not in part["metrics"]
    assert [c["step"] for c in part["curves"]] == [6, 12]  # every validation pass is in the record

    def no_training(self, step):
        raise AssertionError("a finished run trained again")

    monkeypatch.setattr(engine, "finish", real_finish)
    monkeypatch.setattr(Batches, "get", no_training)
    (rec,) = engine.run_plan(resume_plan(p.run_dir, {}), corpus, command="test")
    assert rec["status"] == "ok" and rec["config"]["resumed_from_step"] == 12 and 0 < rec["metrics"]["test_acc"] < 1
    assert [c["step"] for c in rec["curves"]] == [6, 12]


def test_ctrl_c_while_a_run_starts_names_the_resume_command(tmp_path, monkeypatch):
    p = _plan(tmp_path)

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "start", interrupted)
    with pytest.raises(Interrupted, match="interrupted before its first step") as e:
        engine.run_plan(p, _small_corpus(), command="test")
    assert p.resume_command() in str(e.value)


def test_resume_command_repeats_where_files_go(tmp_path):
    job = TrainJob(attn="mha", preset="tiny", data="my text.txt", results_dir=str(tmp_path / "r"),
                   checkpoints_dir=str(tmp_path / "c"))
    p = new_plan(job, {})
    p.start(data_sha256="abc")
    cmd = shlex.split(p.resume_command())
    assert cmd[:4] == ["attnbench", "train", "--resume", p.run_dir]
    assert cmd[4:] == ["--data", "my text.txt", "--results-dir", str(tmp_path / "r"), "--checkpoints-dir",
                       str(tmp_path / "c")]
    assert p.resume_command(world=2).startswith("torchrun --nproc-per-node 2 -m attnbench train --resume")
    assert shlex.split(new_plan(TrainJob(), {}).resume_command(), posix=True)[2:3] == ["--resume"]


def test_resume_honours_data_and_results_dir_and_refuses_the_rest(tmp_path):
    p = _plan(tmp_path, attn="mha,sha", seeds=2)
    again = resume_plan(p.run_dir, {"results_dir": str(tmp_path / "elsewhere"), "data": "x.txt", "steps": 12,
                                    "attn": "mha, sha", "checkpoints_dir": str(tmp_path / "ck")})
    assert again.job.results_dir == str(tmp_path / "elsewhere") and again.job.data == "x.txt"
    again.start(data_sha256="")
    assert again.record_path.parent == tmp_path / "elsewhere" and again.records[0] == p.records[0]
    for typed, match in [({"steps": 13}, "--steps 13"), ({"attn": "mha"}, "--attn mha"), ({"seeds": 1}, "--seeds"),
                         ({"preset": "default"}, "--preset"), ({"checkpoints_dir": str(tmp_path)}, "--checkpoints-dir"),
                         ({"lr": 0.5}, "--lr 0.5"), ({"device": "cpu"}, "--device cpu")]:
        with pytest.raises(AttnbenchError, match=f"{match}.*--resume continues the run as planned"):
            resume_plan(p.run_dir, typed)


def test_summary_tests_differences_with_welch_and_holm():
    def rec(attn, acc):
        return {"attn": attn, "status": "ok", "metrics": {"test_acc": acc, "test_bpc": 2.0 - acc, "params": 10}}

    recs = [rec("mha", a) for a in (0.50, 0.52, 0.51)] + [rec("rcmha", a) for a in (0.60, 0.62, 0.61)] + \
        [rec("mdha", a) for a in (0.51, 0.53, 0.50)] + [rec("sha", 0.4)]
    rows, notes = summarize(recs)
    assert rows[0]["params"] == 10 and rows[0]["params_std"] is None  # the same in every seed: no spread
    assert rows[0]["test_acc"] == pytest.approx(0.51) and rows[0]["test_acc_std"] == pytest.approx(0.01)
    text = "\n".join(notes)
    from attnbench import stats

    p = stats.pairwise({"mha": [0.50, 0.52, 0.51], "rcmha": [0.60, 0.62, 0.61], "mdha": [0.51, 0.53, 0.50]}, True)
    by = {(r["a"], r["b"]): r for r in p}
    assert by[("mha", "rcmha")]["p_holm"] < 0.05 and by[("mha", "mdha")]["p_holm"] > 0.05
    assert "test_acc: mha − rcmha = -0.1000, rcmha better than mha (p_holm<0.001)" in text
    assert "test_acc: mha − mdha = -0.0033, cannot be told apart" in text
    assert "sha" not in text  # one seed: no test
    assert len([n for n in notes if n.startswith("test_acc")]) == 3  # 3 pairs of the three tested attentions


# ---------------------------------------------------------------------------------------------- the real CLI
def _cli(tmp_path, *args, env=None):
    env = {"ATTNBENCH_DATA": str(CORPUS), "XDG_CACHE_HOME": str(tmp_path / "cache"), **(env or {})}
    return runner.invoke(cli.app, ["train", "--results-dir", str(tmp_path / "results"), "--checkpoints-dir",
                                   str(tmp_path / "ck"), *args], env=env)


@needs_corpus
def test_a_stacked_group_that_stops_says_why_once(tmp_path):
    """Every member of a stacked group gets its partial record; the reason they stopped is printed once, not once a
    member (five identical lines for rcmha x 5 on the GPU)."""
    r = _cli(tmp_path, "--attn", "mha", "--preset", "tiny", "--steps", "8", "--eval-every", "4", "--seeds", "3",
             "--ensemble", "3", "--stop-after", "0.001", "--format", "json")
    assert r.exit_code == 75, r.output
    assert r.output.count("mha: stopped by --stop-after at step 4") == 1, r.output
    partial = [json.loads(x) for f in (tmp_path / "results").glob("train-*.jsonl") for x in f.read_text().splitlines()]
    assert sorted((p["config"]["seed"], p["status"]) for p in partial) == [(s, "interrupted") for s in range(3)]


@needs_corpus
def test_a_group_starts_after_the_earlier_groups_are_freed(tmp_path, monkeypatch):
    """Each group's memory figures are its own: before a group starts, nothing of an earlier one is alive, even where
    its objects refer to each other (here a cycle planted in every group, with the cyclic collector off, as between
    two of its rare automatic passes)."""
    import gc
    import weakref

    models, alive_at_start = [], []
    start, train_group = engine.start, engine.train_group

    def planted(*a, **k):
        g, st = start(*a, **k)
        g.cycle = g  # group -> group
        models.append(weakref.ref(g.members.member_model(0)))
        return g, st

    def counted(*a, **k):
        alive_at_start.append(sum(m() is not None for m in models))
        return train_group(*a, **k)

    monkeypatch.setattr(engine, "start", planted)
    monkeypatch.setattr(engine, "train_group", counted)
    gc.disable()
    try:
        r = _cli(tmp_path, "--attn", "mha,sha", "--preset", "tiny", "--steps", "2", "--eval-every", "2", "--seeds", "2",
                 "--ensemble", "off", "--format", "json")
    finally:
        gc.enable()
    assert r.exit_code == 0, r.output
    assert alive_at_start == [0, 0, 0, 0] and len(models) == 4


def test_release_on_a_gpu_frees_the_cublas_workspaces_then_the_cache(monkeypatch):
    """empty_cache leaves the cuBLAS workspaces PyTorch keeps per (handle, stream) (pytorch/pytorch#95668), which
    count as allocated: release frees them first, so that the next group's allocator peak is its own."""
    calls = []
    monkeypatch.setattr(torch._C, "_cuda_clearCublasWorkspaces", lambda: calls.append("workspaces"), raising=False)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("cache"))
    engine.release(torch.device("cuda"))
    assert calls == ["workspaces", "cache"]
    calls.clear()
    engine.release(torch.device("cpu"))
    assert calls == []


@needs_corpus
def test_cli_tiny_rcmha_finishes_and_writes_a_record(tmp_path):
    r = _cli(tmp_path, "--attn", "rcmha", "--preset", "tiny", "--sample", "40", "--format", "json")
    assert r.exit_code == 0, r.output
    files = list((tmp_path / "results").glob("train-*.jsonl"))
    assert len(files) == 1
    rec = json.loads(files[0].read_text())
    m = rec["metrics"]
    assert rec["kind"] == "train" and rec["attn"] == "rcmha" and rec["status"] == "ok"
    assert rec["config"]["preset_fields"]["act"] == "gelu"
    assert m["test_n"] == 55_770 and 0 < m["test_acc"] < 1 and m["test_bpc"] == pytest.approx(m["test_loss"] / math.log(2))
    assert m["test_bpc"] < math.log2(65)  # learned something beyond uniform guessing
    # the last 10 % (validation + test, two equal 5 % splits): their position-weighted mean
    assert m["heldout_acc"] == pytest.approx((m["val_acc_best"] + m["test_acc"]) / 2, abs=1e-4)
    assert min(m["val_acc_best"], m["test_acc"]) <= m["heldout_acc"] <= max(m["val_acc_best"], m["test_acc"])
    assert [c["step"] for c in rec["curves"]] == [60, 120]
    assert m["cpu_peak_rss_mib"] > 0 and m["tokens_per_s"] > 0 and m["params"] > 0
    assert len(rec["sample"]) == 40
    assert list((tmp_path / "ck").rglob("rcmha-seed0.pt"))


@pytest.mark.parametrize("args, match", [
    (["--device", "cuda"], "no CUDA GPU"),
    (["--preset", "huge"], "unknown preset"),
    (["--heads", "5"], "must divide"),
    (["--ctx", "0"], "ctx must be positive"),
    (["--attn", "nope"], "unknown attention"),
    (["--data", "/nonexistent/input.txt"], "not found"),
])
def test_bad_input_is_one_clear_line(tmp_path, args, match):
    if args[0] == "--device" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    r = _cli(tmp_path, "--preset", "tiny", *args) if args[0] != "--preset" else _cli(tmp_path, *args)
    assert r.exit_code != 0
    out = r.output.strip()
    assert match in out and "Traceback" not in out and len(out.splitlines()) == 1, out


def test_a_crashing_attention_is_recorded_and_the_others_still_run(tmp_path, monkeypatch):
    """`--attn all` on GPU once died in mhe-add and took the five runs after it along: now a crash is an error
    record with its traceback, and the remaining runs go on."""
    real = engine.train_group

    def crash_mdha(attn, *a, **k):
        if attn == "mdha":
            raise RuntimeError("expected mat1 and mat2 to have the same dtype\nsecond line")
        return real(attn, *a, **k)

    monkeypatch.setattr(engine, "train_group", crash_mdha)
    p, events = _plan(tmp_path, attn="mdha,mha"), []
    recs = engine.run_plan(p, _small_corpus(), command="test",
                          on=lambda ev, **d: events.append((ev, d.get("record", {}).get("attn"))))
    assert [r["status"] for r in recs] == ["error", "ok"]
    assert recs[0]["reason"] == "crashed: RuntimeError: expected mat1 and mat2 to have the same dtype"
    assert "crash_mdha" in recs[0]["traceback"]
    assert [(r["attn"], r["status"]) for r in _lines(p.record_path)] == [("mdha", "error"), ("mha", "ok")]
    assert ("done", "mdha") in events


def test_an_out_of_memory_crash_is_recorded_as_oom(tmp_path, monkeypatch):
    def cpu_oom(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory: you "
                           "tried to allocate 123 bytes")

    monkeypatch.setattr(engine, "train_group", cpu_oom)
    (rec,) = engine.run_plan(_plan(tmp_path), _small_corpus(), command="test")
    assert rec["status"] == "oom" and "can't allocate memory" in rec["reason"]


# ---------------------------------------------------------------------------------------------- nothing lost
TINY_CLI = ["--preset", "tiny", "--device", "cpu", "--layers", "1", "--d-model", "32", "--heads", "2", "--d-ff", "32",
            "--ctx", "16", "--batch", "4", "--steps", "4", "--eval-every", "2", "--eval-stride", "16"]


def _text_file(tmp_path) -> Path:
    f = tmp_path / "text.txt"
    f.write_text(CORPUS.read_text(encoding="utf-8")[:40_000] if CORPUS.is_file() else "abcdefgh\n" * 4000)
    return f


def test_a_results_dir_that_cannot_be_written_is_refused_before_training(tmp_path, monkeypatch):
    import os

    (tmp_path / "ro").mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path / "ro" else real(p, mode))
    monkeypatch.setattr(engine, "run_plan", lambda *a, **k: pytest.fail("trained before checking the folder"))
    r = runner.invoke(cli.app, ["train", *TINY_CLI, "--data", str(_text_file(tmp_path)), "--results-dir",
                                str(tmp_path / "ro"), "--checkpoints-dir", str(tmp_path / "ck")])
    assert r.exit_code == 2 and r.output.strip() == f"error: --results-dir {tmp_path / 'ro'}: the folder is not writable"
    assert not (tmp_path / "ck").exists() or not list((tmp_path / "ck").iterdir())


def test_a_record_that_cannot_be_written_goes_to_the_fallback_folder(tmp_path, monkeypatch):
    """The results folder stops being writable during the run: the metrics are still shown, the record goes to
    the fallback folder, which is named, and the exit code says something went wrong."""
    from attnbench import results

    real = results.append

    def broken_disk(path, record):
        if Path(path).parent == tmp_path / "results":
            raise OSError(30, "Read-only file system")
        real(path, record)

    monkeypatch.setattr(results, "append", broken_disk)
    monkeypatch.setattr(results, "fallback_dir", lambda: tmp_path / "fallback")
    r = runner.invoke(cli.app, ["train", *TINY_CLI, "--data", str(_text_file(tmp_path)), "--format", "csv",
                                "--results-dir", str(tmp_path / "results"), "--checkpoints-dir", str(tmp_path / "ck")])
    assert r.exit_code == 1, r.output
    (moved,) = (tmp_path / "fallback").glob("train-*.jsonl")
    (rec,) = _lines(moved)
    assert rec["status"] == "ok" and rec["metrics"]["steps"] == 4
    assert f"mha,1,1,{rec['metrics']['test_acc']}" in r.stdout  # the metrics are on screen (runs_ok, runs)
    assert f"could not be written; the records are in {moved}" in r.output


def test_cli_resume_with_a_changed_flag_is_refused_in_one_line(tmp_path):
    p = _plan(tmp_path, attn="mha,sha")
    r = runner.invoke(cli.app, ["train", "--resume", p.run_dir, "--steps", "50"])
    assert r.exit_code == 2
    assert r.output.strip() == "error: --steps 50: --resume continues the run as planned (12); start a new run to " \
                               "change it"


@needs_corpus
def test_cli_stop_after_stops_between_stretches_exits_75_and_resume_finishes(tmp_path, monkeypatch):
    """--stop-after's time long gone (this process started before the test): each session trains its first stretch
    (a training chunk and its validation pass), then stops at the next stop point with exit 75 and the command that
    continues; a session without the budget finishes the run with every step. The records name the run's own
    command, and a resumed run's every session."""
    from attnbench import results

    typed = iter(["attnbench train (the run)", "attnbench train --resume (2)", "attnbench train --resume (3)"])
    monkeypatch.setattr(results, "command_line", lambda: next(typed))
    args = ("--attn", "mha", "--preset", "tiny", "--steps", "12", "--eval-every", "4", "--format", "json")
    r = _cli(tmp_path, *args, "--stop-after", "0.001")
    assert r.exit_code == 75, r.output
    assert "step 4/12: loss" in r.output  # not a terminal: a plain progress line (the first update at least)
    assert "stopped by --stop-after at step 4" in r.output and "continue with: attnbench train --resume" in r.output
    run_dir = next((tmp_path / "ck").glob("train-*"))
    partial = [json.loads(x) for f in (tmp_path / "results").glob("train-*.jsonl") for x in f.read_text().splitlines()]
    assert [(p["status"], p["metrics"]["steps"]) for p in partial] == [("interrupted", 4)]
    r = _cli(tmp_path, "--resume", str(run_dir), "--stop-after", "0.001")  # the budget may change on resume
    assert r.exit_code == 75 and "at step 8" in r.output, r.output
    shutil.rmtree(tmp_path / "results")  # as on another machine, where only the checkpoint folder was carried
    r = _cli(tmp_path, "--resume", str(run_dir), "--format", "json")
    assert r.exit_code == 0 and "could not write" not in r.output, r.output
    last = [json.loads(x) for f in (tmp_path / "results").glob("train-*.jsonl") for x in f.read_text().splitlines()][-1]
    assert last["status"] == "ok" and last["metrics"]["steps"] == 12
    assert last["command"] == "attnbench train (the run)" and last["config"]["sessions"] == \
        ["attnbench train (the run)", "attnbench train --resume (2)", "attnbench train --resume (3)"]
    assert _cli(tmp_path, *args, "--stop-after", "0").exit_code == 2
