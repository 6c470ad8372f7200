"""Seeds trained as one stacked model (issue 18; training/members.py): each member's training is its solo run's.

On CPU: three seeds stacked give, per member, the per-step losses and final weights of the three solo runs, for mha,
rcmha under the paper preset (Transformer-XL memory, narrowed relative tables), mhe-add (whose fast path takes its
PyTorch form inside vmap) and a plugin from a file; per-member clipping is clip_grad_norm_ on each member; the
ensemble's sizes, fallbacks, refusals and out-of-memory split. The NaN stop of one member and the interrupted-then-
resumed group are in test_train.py; the captured stacked step against the eager one in test_graphed_cuda.py (GPU)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from attnbench import cli
from attnbench.config import PRESETS, TrainJob
from attnbench.data import corpus_from_text
from attnbench.errors import AttnbenchError
from attnbench.training import engine, members
from attnbench.training.plan import new_plan
from attnbench.training.sources import make_source
from testdata import CORPUS

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = f"{ROOT / 'examples' / 'sliding_window.py'}:SlidingWindow"
STEPS = 30
TINY = dict(n_layers=2, d_model=32, n_heads=2, d_ff=64, ctx=32, batch=8, steps=STEPS, eval_every=STEPS,
            log_every=1, eval_stride=32, device="cpu")
CASES = {  # attention: (preset, settings)
    "mha": ("tiny", TINY),
    "mhe-add": ("tiny", TINY),
    PLUGIN: ("tiny", TINY),
    "rcmha": ("paper", dict(n_layers=2, max_rel=64, steps=STEPS, epochs=0.0, log_every=1, device="cpu")),
}


def _corpus():
    text = CORPUS.read_text(encoding="utf-8")[:40_000] if CORPUS.is_file() else "to be or not to be; " * 2000
    return corpus_from_text(text)


def _train(attn: str, seeds: list[int], tmp_path: Path):
    """Train a group through the engine's start and loop (no test pass): per-step losses per member, the group."""
    preset, over = CASES[attn]
    c = replace(PRESETS[preset], **over).resolved()
    source = make_source(c, _corpus())
    g, st = engine.start(attn, seeds, source, c, ckpt_path=tmp_path / f"{len(seeds)}-{seeds[0]}.pt", resume=None,
                         proc=engine.distributed.SINGLE, stacked=len(seeds) > 1)
    steps: list[list[float]] = []
    engine.loop(g, st, lambda ev, **d: steps.append(d["losses"]) if ev == "step" else None, lambda: None)
    return torch.tensor(steps), g


def _full_weights(g, i: int) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in g.members.member_model(i).state_dict().items()}


# Final weights: |member − solo| / |solo| per tensor. MHE-ADD's key embeddings e^k_h are invisible to the loss (q·e^k
# is the same for every key of a query, and softmax ignores a constant: attention.md, MHE-ADD), so their gradient is
# rounding noise, which Adam scales to steps near lr·g/(|g| + eps) whatever its size and which feeds back into the
# shared q, k projections: measured 2.6e-5 to 3.8e-5 there (the losses agree to 6e-7), 1e-6 at most elsewhere.
WEIGHT_RTOL = {"mhe-add": 1e-4}


@pytest.mark.parametrize("attn", list(CASES), ids=["mha", "mhe-add", "plugin", "rcmha-paper"])
def test_stacked_members_train_exactly_as_their_solo_runs(attn, tmp_path):
    stacked, g = _train(attn, [0, 1, 2], tmp_path)
    assert stacked.shape == (STEPS, 3) and g.members.stacked
    for i, seed in enumerate((0, 1, 2)):
        solo, s = _train(attn, [seed], tmp_path)
        torch.testing.assert_close(stacked[:, i], solo[:, 0], rtol=1e-5, atol=0)  # every step's loss
        mine, theirs = _full_weights(g, i), _full_weights(s, 0)
        assert mine.keys() == theirs.keys()
        for k in theirs:
            err = float((mine[k] - theirs[k]).norm() / theirs[k].norm().clamp_min(1e-30))
            assert err <= WEIGHT_RTOL.get(attn, 1e-5), (k, err)
    assert len({round(float(x), 4) for x in stacked[-1]}) == 3  # three different runs, not one run three times


def test_the_paper_group_trains_only_the_table_rows_it_reads(tmp_path):
    _, g = _train("rcmha", [0, 1], tmp_path)
    c = g.cfg
    keys = c.ctx + c.mem_len
    tables = {k: v for k, v in g.members.params.items() if k.endswith(("p_table", "s_table"))}
    assert tables and all(v.shape[1] == 2 * keys for v in tables.values())  # 2 (ctx + mem) rows, not 2·max_rel
    full = _full_weights(g, 0)
    assert all(full[k].shape[0] == 2 * c.max_rel for k in tables)
    assert g.members.n_params == members.seeded_model("rcmha", c, g.source.vocab_size, 0).n_params()


def test_per_member_clipping_is_clip_grad_norm_of_each_member():
    c = replace(PRESETS["tiny"], **TINY).resolved()
    group = members.build("mha", c, 11, [0, 1, 2], torch.device("cpu"), stacked=True)
    g = torch.Generator().manual_seed(0)
    scales = (0.01, 1.0, 30.0)  # under, near and far over the limit
    grads = {k: torch.stack([s * torch.randn(p.shape[1:], generator=g) for s in scales])
             for k, p, _ in group.named_trained()}
    for k, p, _ in group.named_trained():
        p.grad = grads[k].clone()
    norms = group.clip_grad_norm_(1.0)
    for i in range(3):
        solo = [torch.nn.Parameter(torch.zeros_like(grads[k][i])) for k in grads]
        for p, k in zip(solo, grads):
            p.grad = grads[k][i].clone()
        total = torch.nn.utils.clip_grad_norm_(solo, 1.0)
        assert float(norms[i]) == pytest.approx(float(total), rel=1e-6)
        for p, (k, q, _) in zip(solo, group.named_trained()):
            torch.testing.assert_close(q.grad[i], p.grad, rtol=1e-6, atol=0)


# ------------------------------------------------------------------------------------------------ sizes, notes
def _plan(tmp_path, seeds: int, ensemble: str, **over):
    job = TrainJob(attn="mha", preset="tiny", seeds=seeds, ensemble=ensemble, results_dir=str(tmp_path / "r"),
                   checkpoints_dir=str(tmp_path / "c"))
    p = new_plan(job, {**{k: v for k, v in TINY.items() if k != "log_every"}, "steps": 4, "eval_every": 4, **over})
    p.start("")
    return p


def test_ensemble_sizes_group_consecutive_seeds(tmp_path):
    p = _plan(tmp_path, 5, "2")
    assert p.groups(2, set()) == [("mha", [0, 1]), ("mha", [2, 3]), ("mha", [4])]
    assert p.groups(5, {("mha", 1)}) == [("mha", [0, 2, 3, 4])]
    assert engine._group_size(p, torch.device("cpu"), engine.distributed.SINGLE) == (2, False)
    auto = _plan(tmp_path, 5, "auto")
    # auto: a CPU trains each seed alone (a stacked group is slower there: docs/design.md), a GPU every seed at once
    assert engine._group_size(auto, torch.device("cpu"), engine.distributed.SINGLE) == (1, True)
    assert engine._group_size(auto, torch.device("cuda"), engine.distributed.SINGLE) == (5, True)
    with pytest.raises(AttnbenchError, match="--ensemble 0: auto, off, or a positive number"):
        _plan(tmp_path, 2, "0")


def test_cli_trains_seeds_as_one_model_and_records_the_group(tmp_path):
    r = CliRunner().invoke(cli.app, ["train", "--attn", "mhe-add", "--preset", "tiny", "--seeds", "3", "--ensemble",
                                     "3", "--device", "cpu", "--steps", "4", "--eval-every", "2", "--data",
                                     str(_text(tmp_path)), "--results-dir", str(tmp_path / "r"), "--checkpoints-dir",
                                     str(tmp_path / "c"), "--format", "json"])
    assert r.exit_code == 0, r.output
    assert "mhe-add (seeds 0-2): " in r.output and "3 seeds trained as one model" in r.output
    recs = [json.loads(line) for f in (tmp_path / "r").glob("*.jsonl") for line in f.read_text().splitlines()]
    assert [x["config"]["seed"] for x in recs] == [0, 1, 2]
    for x in recs:
        assert x["status"] == "ok" and x["config"]["ensemble"] == 3 and x["config"]["group"] == [0, 1, 2]
        # MHE-ADD's fused autograd node has no vmap rule: the stacked group ran its weight-qkv form, and says so
        assert any(f.startswith("MHEAdd combine-qkv") for f in x["config"]["stacked_fallbacks"])
        assert x["metrics"]["run_share_s"] == pytest.approx(x["metrics"]["wall_s"] / 3)
        assert "alloc_peak_mib" not in x["metrics"] and "group_cpu_peak_rss_mib" not in x["metrics"]
    assert list((tmp_path / "c").rglob("mhe-add-seeds0-2.pt"))


def _text(tmp_path) -> Path:
    f = tmp_path / "text.txt"
    f.write_text(CORPUS.read_text(encoding="utf-8")[:40_000] if CORPUS.is_file() else "abcdefgh\n" * 4000)
    return f


class Unstackable(torch.nn.Module):
    """Causal, but its forward reads a value on the host (`.item()`), which vmap cannot batch."""

    def __init__(self, cfg):
        super().__init__()
        self.proj = torch.nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x, mem=None):
        return self.proj(x) * (1.0 if float(self.proj.weight.sum().item()) > -1e9 else 0.0)


def test_an_attention_that_cannot_stack_trains_alone_under_auto_and_is_refused_when_asked(tmp_path, monkeypatch):
    plugin = tmp_path / "unstackable.py"
    plugin.write_text("import torch\n" + _source(Unstackable))
    name = f"{plugin}:Unstackable"
    for ensemble, code in (("2", 2), ("auto", 0)):
        p = _plan(tmp_path / ensemble, 2, ensemble)
        p.attns = [name]
        notes = []
        monkeypatch.setattr(engine, "_group_size", lambda *a: (2, ensemble == "auto"))
        if code:
            with pytest.raises(AttnbenchError, match=r"--ensemble 2: .* cannot train stacked \(.*\); use --ensemble off"):
                engine.run_plan(p, _corpus(), command="test")
            continue
        recs = engine.run_plan(p, _corpus(), command="test", on=lambda ev, **d: notes.append(d.get("text")))
        assert [(r["config"]["seed"], r["status"], r["config"]["ensemble"]) for r in recs] == [(0, "ok", 1),
                                                                                              (1, "ok", 1)]
        assert recs[0]["config"]["ensemble_note"].startswith("trained alone: cannot train stacked")
        assert any(n and "cannot train stacked" in n for n in notes)


def _source(cls) -> str:
    import inspect
    import textwrap

    return textwrap.dedent(inspect.getsource(cls))


def test_a_group_out_of_memory_splits_in_two_and_each_half_finishes(tmp_path, monkeypatch):
    """A stacked step that needs more memory than a group of 4 has: the group splits into 2 + 2, says so, and every
    seed gets its record, equal to its solo run's."""
    real = engine.train_step

    def small_device(members_, *a, **k):
        if members_.n > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(members_, *a, **k)

    monkeypatch.setattr(engine, "train_step", small_device)
    p, notes = _plan(tmp_path, 4, "4"), []
    recs = engine.run_plan(p, _corpus(), command="test", on=lambda ev, **d: notes.append(d.get("text")))
    assert [(r["config"]["seed"], r["status"], r["config"]["ensemble"]) for r in recs] == \
        [(0, "ok", 2), (1, "ok", 2), (2, "ok", 2), (3, "ok", 2)]
    assert "mha: out of memory as one model of 4 seeds; split into 2 + 2" in notes
    assert recs[0]["config"]["ensemble_note"] == "mha: out of memory as one model of 4 seeds; split into 2 + 2"
    monkeypatch.undo()
    solo = engine.run_plan(_plan(tmp_path / "solo", 4, "off"), _corpus(), command="test")
    for r, s in zip(recs, solo):
        assert r["metrics"]["test_loss"] == pytest.approx(s["metrics"]["test_loss"], rel=1e-5)
