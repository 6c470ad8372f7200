"""The paper preset's captured steps with Transformer-XL memory compute the eager steps (issue 12): GPU only."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from attnbench.config import PRESETS
from attnbench.optim import autocast
from attnbench.paper_run import Streams, build_model, capture_graphs, make_run, step_all

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _losses(attn: str, graphs: bool, steps: int = 50):
    """Per-step training losses of `steps` steps from the same initial weights, with memory from step 1 on; the
    first mem_len / ctx steps run eagerly either way (the memory is filling), the rest replayed when `graphs`."""
    dev = torch.device("cuda")
    c = replace(PRESETS["paper"], cuda_graph=graphs).resolved()
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, 65, (c.batch * (steps * c.ctx + 2),), generator=g)
    loader = Streams(data, c.batch, c.ctx, dev)
    run = make_run(attn, 0, c, 65, dev, build_model)
    capture_graphs([run], c, c.n_layers, c.d_model, dev)
    assert bool(run.graphs) == graphs
    out, m_len = [], 0
    for b in range(steps):
        x, y = loader.get(b)
        run.lr.fill_(c.lr * min((b + 1) / c.warmup, math.sqrt(c.warmup / (b + 1))))
        step_all([run], "train", x, y, graphs and m_len == c.mem_len, c.grad_clip, autocast(dev, c.amp))
        m_len = min(c.mem_len, m_len + c.ctx)
        out.append(float(run.loss_sum))
        run.loss_sum.zero_()
    return out, run


@pytest.mark.parametrize("attn", ["mha", "mdha", "rmha", "rcmha"])
def test_graphed_steps_with_memory_equal_eager_steps(attn):
    eager, e_run = _losses(attn, graphs=False)
    graphed, g_run = _losses(attn, graphs=True)
    assert len(eager) == 50
    torch.testing.assert_close(torch.tensor(graphed), torch.tensor(eager), rtol=1e-4, atol=1e-5)
    assert int(g_run.correct) == pytest.approx(int(e_run.correct), abs=e_run.scored * 1e-3)
    for p, q in zip(g_run.model.parameters(), e_run.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)
