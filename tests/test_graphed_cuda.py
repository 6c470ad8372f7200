"""The captured CUDA-graph steps (attnbench.training.graphed) against the eager steps: same losses, same weights,
for a run alone and for seeds stacked as one model, with and without Transformer-XL memory; and a stacked member on
the GPU against its solo run. Needs a GPU; skipped elsewhere (CI). Run on the device:
python -m pytest -q tests/test_graphed_cuda.py"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from attnbench.config import PRESETS  # noqa: E402
from attnbench.data import corpus_from_text  # noqa: E402
from attnbench.training import distributed, engine  # noqa: E402
from attnbench.training.sources import make_source  # noqa: E402

STEPS = 50


def _corpus():
    g = torch.Generator().manual_seed(0)
    return corpus_from_text("".join(chr(97 + int(i)) for i in torch.randint(0, 26, (60_000,), generator=g)))


def _cfg(preset: str, graphs: bool):
    if preset == "mqar":  # a synthetic task: the loss's output layer at the 8 scored positions of 64 alone
        return replace(PRESETS["tiny"], task="mqar", task_opts="vocab_size=512,seq_len=64,num_kv_pairs=8",
                       steps=STEPS, eval_every=STEPS, log_every=1, amp=False, dropout=0.0, cuda_graph=graphs,
                       device="cuda").resolved()
    if preset == "paper":  # memory 32 over segments of 2: the first 16 steps of an epoch run eagerly either way
        return replace(PRESETS["paper"], steps=STEPS, epochs=0.0, log_every=1, n_layers=2, max_rel=64,
                       cuda_graph=graphs, device="cuda").resolved()
    return replace(PRESETS["tiny"], steps=STEPS, eval_every=STEPS, log_every=1, amp=False, dropout=0.0,
                   cuda_graph=graphs, device="cuda").resolved()


def _train(attn: str, preset: str, seeds: list[int], graphs: bool, tmp_path):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    c = _cfg(preset, graphs)
    g, st = engine.start(attn, seeds, make_source(c, None if c.task == "mqar" else _corpus()), c,
                         ckpt_path=tmp_path / "c.pt", resume=None, proc=distributed.SINGLE, stacked=len(seeds) > 1)
    assert g.config["cuda_graph"] == ("on" if graphs else "off"), g.config["cuda_graph"]
    assert g.config["loss_positions"] == (8 if c.task == "mqar" else None)
    losses: list[list[float]] = []
    engine.loop(g, st, lambda ev, **d: losses.append(d["losses"]) if ev == "step" else None, lambda: None)
    return torch.tensor(losses), g


CASES = [("mha", "tiny", [0]), ("mdha", "tiny", [0]), ("rcmha", "tiny", [0]), ("mhe-mul", "tiny", [0]),
         ("gqa", "tiny", [0]), ("mha", "tiny", [0, 1, 2]), ("rcmha", "tiny", [0, 1, 2]),
         ("mha", "paper", [0]), ("rcmha", "paper", [0]), ("mha", "paper", [0, 1, 2]), ("mdha", "paper", [0, 1, 2]),
         ("rmha", "paper", [0, 1, 2]), ("rcmha", "paper", [0, 1, 2]), ("mha", "mqar", [0]),
         ("mha", "mqar", [0, 1, 2])]


@pytest.mark.parametrize("attn, preset, seeds", CASES, ids=[f"{a}-{p}-{len(s)}" for a, p, s in CASES])
def test_captured_steps_equal_eager_steps(attn, preset, seeds, tmp_path):
    eager, e = _train(attn, preset, seeds, False, tmp_path)
    graphed, g = _train(attn, preset, seeds, True, tmp_path)
    assert eager.shape == (STEPS, len(seeds))
    torch.testing.assert_close(graphed, eager, rtol=1e-4, atol=1e-5)
    if e.counter is not None:  # the paper's running accuracy, counted inside the graphs
        torch.testing.assert_close(g.counter.float(), e.counter.float(), rtol=1e-3, atol=0)
    for (k, p, _), (_, q, _) in zip(g.members.named_trained(), e.members.named_trained()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4, msg=lambda m: f"{k}: {m}")


@pytest.mark.parametrize("attn", ["mha", "rcmha"])
def test_a_stacked_member_on_the_gpu_is_its_solo_run(attn, tmp_path):
    """Three seeds of the paper preset stacked (captured, narrowed tables) against seed 1 alone (captured)."""
    stacked, _ = _train(attn, "paper", [0, 1, 2], True, tmp_path)
    solo, _ = _train(attn, "paper", [1], True, tmp_path)
    torch.testing.assert_close(stacked[:, 1], solo[:, 0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("attn", ["mha", "mdha", "rcmha", "mhe-add", "mhe-mul"])
def test_captured_speed_call_computes_the_eager_gradients(attn):
    """`attnbench speed --cuda-graph` times replays of the captured fwd+bwd call: a replay must leave the same
    gradients as an eager call (inputs and every parameter). mhe-mul: the eager call takes weight-qkv (256 rows), the
    capture combine-qkv (MHEMul.fast_path), with no warm-up of its own."""
    from attnbench.attention import build
    from attnbench.measure.timing import capture, make_call

    torch.manual_seed(0)
    mod = build(attn, d_model=256, n_heads=4).cuda()
    x = torch.randn(2, 128, 256, device="cuda", requires_grad=True)
    leaves = [x, *mod.parameters()]
    setup, call = make_call(lambda: mod(x), leaves, "fwd+bwd", list(mod.parameters()))
    setup()
    call()
    eager = [t.grad.clone() for t in leaves]
    replay = capture(setup, call, "cuda")
    for t in leaves:
        t.grad.zero_()
    replay()
    torch.cuda.synchronize()
    for t, g in zip(leaves, eager):
        torch.testing.assert_close(t.grad, g, rtol=1e-4, atol=1e-5)


def test_speed_cli_with_cuda_graph_writes_records(tmp_path):
    from typer.testing import CliRunner

    from attnbench import cli

    out = CliRunner().invoke(cli.app, ["speed", "--device", "cuda", "--cuda-graph", "--attn", "mha,mdha",
                                       "--seq-len", "256", "--max-time", "0.2", "--format", "json",
                                       "--results-dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    import json

    rows = json.loads(out.stdout)
    assert {r["attn"] for r in rows} >= {"mha", "mdha"} and all(r["median_ms"] > 0 for r in rows)
