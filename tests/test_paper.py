"""The `paper` preset (issue 12): the authors' schedule, data order, model and metric, against independent rebuilds."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from attnbench.config import PRESETS
from attnbench.model_labml import LabmlCharLM
from attnbench.training.schedule import labml_schedule
from attnbench.training.sources import Streams
from paper_reference import RefModel, merge_memory


def _labml_rounds(total: int, inner: int) -> list[tuple[int, int]]:
    """labml_helpers' Trainer/BatchIndex loop, simulated step by step: the batches each call of the trainer runs."""
    idx, out = 0, []
    for iteration in range(inner):
        start = idx
        while not idx >= (iteration + 1) * total // inner:  # BatchIndex.iteration_completed
            idx += 1
        out.append((start, idx))
    return out


def test_schedule_matches_labml_batch_index_and_interleaves_validation():
    n_train, n_valid, epochs = 15685, 1742, 3
    chunks = labml_schedule(n_train, n_valid, epochs).chunks
    train = [(c.start, c.stop) for c in chunks if c.kind == "train" and c.epoch == 1]
    valid = [(c.start, c.stop) for c in chunks if c.kind == "score" and c.epoch == 1]
    assert train == _labml_rounds(n_train, 25)
    assert valid == _labml_rounds(n_valid, 25)
    assert [c.kind for c in chunks[:4]] == ["train", "score", "train", "score"]
    assert sum(c.stop - c.start for c in chunks if c.kind == "train") == epochs * n_train


def test_schedule_cut_after_max_train_steps_keeps_its_round_validation():
    chunks = labml_schedule(1000, 100, 5, max_train_steps=90).chunks
    assert [(c.kind, c.start, c.stop) for c in chunks] == [("train", 0, 40), ("score", 0, 4), ("train", 40, 80),
                                                          ("score", 4, 8), ("train", 80, 90), ("score", 8, 12)]


def test_streams_read_like_labml_sequential_loader():
    data = torch.arange(103)
    s = Streams(data, batch=4, ctx=3, device=torch.device("cpu"))  # per = 25: stream k holds 25k .. 25k+24
    assert len(s) == 25 // 3
    x, y = s.get(0)
    assert x.tolist() == [[0, 1, 2], [25, 26, 27], [50, 51, 52], [75, 76, 77]]
    assert torch.equal(y, x + 1)
    x, y = s.get(len(s) - 1)  # batch 7 starts at 21: min(3, 25 - 1 - 21) = 3 tokens
    assert x[0].tolist() == [21, 22, 23] and y[0].tolist() == [22, 23, 24]
    t = Streams(torch.arange(4 * 24), batch=4, ctx=2, device=torch.device("cpu"))  # per = 24: last segment short
    x, y = t.get(len(t) - 1)
    assert x.shape == (4, 1) and x[0].tolist() == [22] and y[0].tolist() == [23]


# ------------------------------------------------------------------------------------------------ the model

PAPER_FOUR = {"mha": (False, False), "mdha": (False, True), "rmha": (True, False), "rcmha": (True, True)}


def _ours(attn: str, impl: str = "fast", **kw):
    c = replace(PRESETS["paper"], attn_impl=impl, **kw).resolved()
    torch.manual_seed(0)
    return LabmlCharLM(c.model_config(attn, 65))


def _copy_into_reference(ours: LabmlCharLM, ref: RefModel) -> None:
    with torch.no_grad():
        ref.embed.weight.copy_(ours.tok.weight)
        ref.norm.load_state_dict(ours.ln_f.state_dict())
        ref.generator.load_state_dict(ours.head.state_dict())
        for blk, lay in zip(ours.blocks, ref.layers):
            lay.ln_att.load_state_dict(blk.ln1.state_dict())
            lay.ln_ff.load_state_dict(blk.ln2.state_dict())
            lay.ff1.load_state_dict(blk.ffn.up.state_dict())
            lay.ff2.load_state_dict(blk.ffn.down.state_dict())
            for name in "qkvo":
                getattr(lay.attn, name).load_state_dict(getattr(blk.attn, name).state_dict())
            if lay.attn.convs is not None:
                for i, name in enumerate(("q_conv", "k_conv", "v_conv")):
                    lay.attn.convs[i].load_state_dict(getattr(blk.attn, name).state_dict())
            if lay.attn.relative:
                lay.attn.P.copy_(blk.attn.rel.p_table)
                lay.attn.S.copy_(blk.attn.rel.s_table)
                lay.attn.u.copy_(blk.attn.rel.u)


@pytest.mark.parametrize("attn", list(PAPER_FOUR))
def test_paper_model_has_the_authors_parameters_and_layers_start_equal(attn):
    relative, conv = PAPER_FOUR[attn]
    ours = _ours(attn)
    ref = RefModel(65, 128, 8, 256, 6, relative, conv, rel_rows=4096)
    assert ours.n_params() == sum(p.numel() for p in ref.parameters())
    first = ours.blocks[0].state_dict()
    assert all(torch.equal(first[k], v) for b in ours.blocks[1:] for k, v in b.state_dict().items())


@pytest.mark.parametrize("impl", ["reference", "fast"])
@pytest.mark.parametrize("attn", list(PAPER_FOUR))
def test_paper_model_computes_the_authors_model_over_segments_with_memory(attn, impl):
    """Three segments with memory merged and cut as the authors' Configs.merge_memory does; random weights (the
    relative tables and u too), so that every term of the score matters."""
    relative, conv = PAPER_FOUR[attn]
    ours = _ours(attn, impl, mem_len=3, max_rel=16).double()
    with torch.no_grad():
        for p in ours.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    ref = RefModel(65, 128, 8, 256, 6, relative, conv, rel_rows=16).double()
    _copy_into_reference(ours, ref)
    g = torch.Generator().manual_seed(1)
    mine, theirs = None, None
    for _ in range(3):
        idx = torch.randint(0, 65, (2, 2), generator=g)  # [B, T]
        out, mine = ours(idx, mine)
        ref_out, new = ref(idx.t(), theirs)
        theirs = merge_memory(theirs, new, 3)
        torch.testing.assert_close(out, ref_out.transpose(0, 1), rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------------------------------ the run
def _corpus():
    from attnbench.data import corpus_from_text
    from testdata import CORPUS

    text = CORPUS.read_text(encoding="utf-8")[:12000] if CORPUS.is_file() else \
        "".join(chr(97 + (i * 7919) % 26) for i in range(12000))
    return corpus_from_text(text, source="test")


def _group(tmp_path, attn, seeds, steps=30, resume=None, name="g"):
    """The paper schedule on a small text and a 2-layer model with small tables (CI-sized)."""
    from attnbench.training.engine import train_group
    from attnbench.training.sources import make_source

    c = replace(PRESETS["paper"], steps=steps, epochs=0.0, device="cpu", n_layers=2, max_rel=64).resolved()
    return train_group(attn, list(seeds), make_source(c, _corpus()), c, record_path=tmp_path / f"{name}.jsonl",
                       ckpt_path=tmp_path / f"{name}.pt", command="test", resume=resume, stacked=len(seeds) > 1)


def test_paper_run_records_the_authors_metric_and_stacked_seeds_equal_solo_runs(tmp_path):
    both = _group(tmp_path, "rcmha", [0, 1], name="both")
    solo = _group(tmp_path, "rcmha", [1], name="solo")
    rec = both[1]
    assert rec["attn"] == "rcmha" and rec["status"] == "ok" and rec["config"]["seed"] == 1
    assert rec["config"]["preset"] == "paper" and rec["config"]["ensemble"] == 2
    m = rec["metrics"]
    # 30 training batches (rounds of 6 or 7 of the 168) and, after each round, 0 or 1 of the 18 validation
    # batches (3 in all), each batch of 32 streams x 2 tokens
    assert m["steps"] == 30 and m["paper_scored"] == (30 + 3) * 32 * 2
    assert 0 < m["paper_acc"] < 1 and 0 < m["test_acc"] < 1 and m["test_bpc"] > 0
    assert m["params"] == solo[0]["metrics"]["params"]  # the full tables counted, though the group trains fewer rows
    for k in ("paper_acc", "test_loss", "test_acc"):
        assert m[k] == pytest.approx(solo[0]["metrics"][k], rel=1e-5), k  # a member's result is its solo run's


def test_paper_run_interrupted_then_resumed_gives_the_same_result(tmp_path, monkeypatch):
    import os
    import signal

    from attnbench.errors import Interrupted
    from attnbench.training import engine

    whole = _group(tmp_path, "rmha", [0], name="whole")
    real = engine.log_losses

    def interrupt(g, st, pending, on, since):
        real(g, st, pending, on, since)
        if st.pos.step >= 12:
            os.kill(os.getpid(), signal.SIGINT)  # taken at the batch boundary

    monkeypatch.setattr(engine, "log_losses", interrupt)
    with pytest.raises(Interrupted):
        _group(tmp_path, "rmha", [0], name="cut")
    monkeypatch.undo()
    ck = torch.load(tmp_path / "cut.pt", weights_only=False)
    # stopped at the first batch boundary after step 12, inside a round
    assert 12 <= ck["pos"]["step"] < 30 and ck["pos"]["batch"] is not None
    resumed = _group(tmp_path, "rmha", [0], resume=ck, name="cut")
    for k in ("paper_acc", "test_loss", "test_acc"):
        assert resumed[0]["metrics"][k] == pytest.approx(whole[0]["metrics"][k], rel=1e-6), k


def test_the_wait_at_the_loss_sync_is_training_time(tmp_path, monkeypatch):
    """On a GPU the steps only queue work and the host waits for it where the losses come back (`.cpu()` every
    log_every steps). A clock that moves only there must be all accounted for: as training time (or evaluation),
    never lost between them (the stacked paper runs' tok/s once counted 340 of 573 s)."""
    import types

    from attnbench.training import distributed, engine
    from attnbench.training.sources import make_source

    clock, syncs = [0.0], []
    monkeypatch.setattr(engine, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    real_cpu = torch.Tensor.cpu

    def slow_cpu(self, *a, **k):  # the host waiting 1 s for the queued steps
        clock[0] += 1.0
        syncs.append(1)
        return real_cpu(self, *a, **k)

    c = replace(PRESETS["paper"], steps=30, epochs=0.0, log_every=10, device="cpu", n_layers=2, max_rel=64).resolved()
    g, st = engine.start("mha", [0, 1], make_source(c, _corpus()), c, ckpt_path=tmp_path / "c.pt", resume=None,
                         proc=distributed.SINGLE, stacked=True)
    monkeypatch.setattr(torch.Tensor, "cpu", slow_cpu)
    engine.loop(g, st, lambda ev, **d: None, lambda: None)
    monkeypatch.setattr(torch.Tensor, "cpu", real_cpu)
    assert len(syncs) >= 3 and st.pos.step == 30
    assert st.train_s + st.eval_s == pytest.approx(len(syncs)), (st.train_s, st.eval_s, len(syncs))


def test_stop_after_stops_at_an_epoch_boundary_with_no_memory_saved_and_resumes_exactly(tmp_path):
    """--stop-after (engine.train_group's deadline) on the paper schedule stops only where both streams start over,
    so the checkpoint holds no Transformer-XL memory (a quarter of a stacked rcmha group's, which then fits through
    a device call's file limits); the run continued from it, stopped again and finished, equals the uninterrupted run."""
    import time

    from attnbench.errors import EXIT_STOPPED, Interrupted
    from attnbench.training.engine import train_group
    from attnbench.training.sources import make_source

    c = replace(PRESETS["paper"], epochs=3, device="cpu", n_layers=2, max_rel=64).resolved()

    def run(name, resume=None, deadline=None):
        return train_group("mha", [0, 1], make_source(c, _corpus()), c, record_path=tmp_path / f"{name}.jsonl",
                           ckpt_path=tmp_path / f"{name}.pt", command="test", resume=resume, stacked=True,
                           deadline=deadline)

    whole = run("whole")
    per_epoch = whole[0]["metrics"]["steps"] // 3
    for epoch in (1, 2):  # time is up at once: each session trains one epoch, then stops at the next boundary
        resume = torch.load(tmp_path / "cut.pt", weights_only=False) if epoch > 1 else None
        with pytest.raises(Interrupted) as e:
            run("cut", resume, deadline=time.perf_counter())
        assert e.value.exit_code == EXIT_STOPPED and "--stop-after" in str(e.value)
        ck = torch.load(tmp_path / "cut.pt", weights_only=False)
        assert ck["pos"]["step"] == epoch * per_epoch and ck["pos"]["batch"] is None
        assert ck["mems"] == {"train": None, "score": None} and set(ck["pos"]["m_len"].values()) == {0}
    done = run("cut", torch.load(tmp_path / "cut.pt", weights_only=False))
    for a, b in zip(whole, done):
        assert b["status"] == "ok" and b["metrics"]["steps"] == a["metrics"]["steps"]
        for k in ("paper_acc", "test_loss", "test_acc"):
            assert b["metrics"][k] == pytest.approx(a["metrics"][k], rel=1e-6), k


@pytest.mark.parametrize("preset, over", [("tiny", dict(mem_len=8, ctx=16, eval_stride=16, steps=12, eval_every=4)),
                                          ("paper", dict(steps=12, epochs=0.0, n_layers=2, max_rel=64))],
                         ids=["step-schedule", "paper-under-an-epoch"])
def test_stop_after_with_memory_that_never_restarts_stops_at_a_chunk_and_resumes_exactly(tmp_path, preset, over):
    """Where no stream starts over at a chunk's start (the step schedule: a stream's epoch of n_seg steps against
    eval_every; a paper run shorter than an epoch), --stop-after stops before the next training chunk with the
    memory in the checkpoint, where it once never stopped; the run continued from it equals the uninterrupted run."""
    import time

    from attnbench.errors import EXIT_STOPPED, Interrupted
    from attnbench.training.engine import train_group
    from attnbench.training.sources import make_source

    c = replace(PRESETS[preset], device="cpu", **over).resolved()
    src = make_source(c, _corpus())

    def run(name, resume=None, deadline=None):
        return train_group("mha", [0, 1], src, c, record_path=tmp_path / f"{name}.jsonl", ckpt_path=tmp_path /
                           f"{name}.pt", command="test", resume=resume, stacked=True, deadline=deadline)

    whole = run("whole")
    with pytest.raises(Interrupted) as e:
        run("cut", deadline=time.perf_counter())  # time is up at once: the first stretch, then a stop
    assert e.value.exit_code == EXIT_STOPPED
    ck = torch.load(tmp_path / "cut.pt", weights_only=False)
    assert 0 < ck["pos"]["step"] < 12 and ck["pos"]["batch"] is None
    assert ck["mems"]["train"] is not None and ck["pos"]["m_len"]["train"] > 0  # the memory travels with it
    done = run("cut", ck)
    for a, b in zip(whole, done):
        assert b["status"] == "ok" and b["metrics"]["steps"] == a["metrics"]["steps"] == 12
        for k in ("test_loss", "test_acc", *(("paper_acc",) if preset == "paper" else ())):
            assert b["metrics"][k] == pytest.approx(a["metrics"][k], rel=1e-6), k
