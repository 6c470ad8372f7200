"""The CUDA-graph training step (attnbench.graphed) against the eager step: same losses, same weights.
Needs a GPU; skipped elsewhere (CI). Run on the device: python -m pytest -q tests/test_graphed_cuda.py"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from attnbench.graphed import GraphedStep  # noqa: E402
from attnbench.model import build_model  # noqa: E402
from attnbench.config import TrainConfig  # noqa: E402
from attnbench.optim import make_optimizer, train_step  # noqa: E402
import contextlib  # noqa: E402

ATTNS = ["mha", "mdha", "rcmha", "mhe-mul", "gqa"]


def _setup(attn, capturable):
    torch.manual_seed(0)
    m = build_model(attn, 65, n_layers=2, d_model=64, n_heads=4, d_ff=128, ctx=32, dropout=0.0, act="gelu").cuda()
    c = TrainConfig(lr=3e-3, weight_decay=0.1)
    return m, make_optimizer(m, c, torch.device("cuda"), capturable=capturable)


@pytest.mark.parametrize("attn", ATTNS)
def test_graphed_steps_equal_eager_steps(attn):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    g = torch.Generator().manual_seed(1)
    data = [torch.randint(0, 65, (8, 33), generator=g) for _ in range(12)]
    lrs = [3e-3 * (k + 1) / 12 for k in range(12)]

    m_e, o_e = _setup(attn, capturable=False)
    eager = []
    for d, lr in zip(data, lrs):
        loss, _ = train_step(m_e, o_e, d[:, :-1].cuda(), d[:, 1:].cuda(), None, lr, 1.0, contextlib.nullcontext())
        eager.append(loss.item())

    m_g, o_g = _setup(attn, capturable=True)
    before = [p.detach().clone() for p in m_g.parameters()]
    step = GraphedStep(m_g, o_g, (8, 32), torch.device("cuda"), grad_clip=1.0, amp=False)
    for p, b in zip(m_g.parameters(), before):  # the warm-up steps were undone
        assert torch.equal(p, b)
    graphed = [step.step(d[:, :-1].cuda(), d[:, 1:].cuda(), lr).item() for d, lr in zip(data, lrs)]

    assert graphed == pytest.approx(eager, rel=1e-4, abs=1e-5)
    for pe, pg in zip(m_e.parameters(), m_g.parameters()):
        torch.testing.assert_close(pg, pe, rtol=1e-3, atol=1e-5)


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
