"""Each run's GPU memory figures are its own: a run that ends leaves nothing allocated on the GPU for the next run
of the same command. On an H200 (results/h200/mqar/, 90a3e21) every solo MQAR run of one command read 65 MiB more
allocator peak than the run before, and CPU tests see no tensor outliving a run: the likely cause is the cuBLAS
workspace PyTorch keeps per (handle, stream) for the process, one more for each capture's fresh side stream
(attnbench.device.side_stream; engine.release frees them). Needs a GPU; skipped elsewhere (CI). On failure it names
the live allocations and the Python frames that made them (torch.cuda.memory's history)."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from attnbench import cli  # noqa: E402
from attnbench.training import engine  # noqa: E402

MIB = 2**20


def _live_blocks(top: int = 6) -> str:
    """The largest allocated blocks now, each with the innermost frames of its allocation (attnbench's first)."""
    snap = torch.cuda.memory._snapshot()
    blocks = [(b["size"], b.get("frames") or []) for seg in snap["segments"] for b in seg["blocks"]
              if b["state"] == "active_allocated"]
    lines = []
    for size, frames in sorted(blocks, key=lambda b: -b[0])[:top]:
        ours = [f for f in frames if "attnbench" in f.get("filename", "")] or frames
        where = "; ".join(f"{f['filename'].rsplit('/', 2)[-1]}:{f['line']} {f['name']}" for f in ours[:4])
        lines.append(f"{size / MIB:.1f} MiB: {where or 'no frames recorded'}")
    return "\n".join(lines)


@pytest.mark.parametrize("attns", ["mha,mdha", "sha,mqa"])
def test_a_run_leaves_no_gpu_memory_to_the_next(attns, tmp_path, monkeypatch):
    at_start: list[int] = []
    release = engine.release

    def measured(device):
        release(device)
        torch.cuda.synchronize()
        at_start.append(torch.cuda.memory_allocated())

    monkeypatch.setattr(engine, "release", measured)
    torch.cuda.memory._record_memory_history(max_entries=200_000)
    try:
        r = CliRunner().invoke(cli.app, [
            "train", "--preset", "mqar", "--attn", attns, "--seeds", "2", "--ensemble", "off", "--steps", "20",
            "--batch", "64", "--eval-every", "10", "--task-opt", "train_examples=2000,test_examples=128",
            "--device", "cuda", "--results-dir", str(tmp_path / "r"), "--checkpoints-dir", str(tmp_path / "c"),
            "--format", "json"], env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
        assert r.exit_code == 0, r.output
        release(torch.device("cuda"))
        torch.cuda.synchronize()
        at_start.append(torch.cuda.memory_allocated())
        # from the second run on (what the first leaves may be a cache of the command: the task's data, kernels)
        grown = [(b - at_start[1]) / MIB for b in at_start]
        assert len(at_start) == 5 and max(grown[1:]) < 1, \
            f"allocated at each run's start, MiB over the second's: {grown}\nlive now:\n{_live_blocks()}"
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)


def test_every_capture_shares_one_side_stream():
    """A fresh stream per capture would leave a cuBLAS workspace behind each time (pytorch/pytorch#95668)."""
    from attnbench.device import side_stream

    assert side_stream("cuda") is side_stream(torch.device("cuda", torch.cuda.current_device()))


def test_a_resumed_run_peaks_where_a_fresh_run_does():
    """The allocator peak of a run's start (the capture's warm-up steps) is the same fresh and resumed from a
    checkpoint. Before the optimizer state's snapshot went to host memory (training/graphed.py), a resumed run also
    held a second copy of its AdamW moments there: on an H200 an rcmha run resumed at step 4,500 read 2,271 MiB
    against 2,192 for its fresh seeds (results/h200/extrapolation/)."""
    from dataclasses import replace
    from pathlib import Path
    from tempfile import TemporaryDirectory

    from attnbench.config import PRESETS
    from attnbench.training import checkpoints, distributed
    from attnbench.training.sources import make_source

    c = replace(PRESETS["mqar"], steps=40, eval_every=40, d_model=256, task_opts="train_examples=2000,test_examples=64",
                device="cuda").resolved()
    source = make_source(c, None)

    def peak_at_start(ckpt: Path, resume):  # MiB above what was allocated before it (the run's own)
        engine.release(torch.device("cuda"))
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        g, st = engine.start("mha", [0], source, c, ckpt_path=ckpt, resume=resume, proc=distributed.SINGLE,
                             stacked=False)
        assert g.config["cuda_graph"] == "on", g.config["cuda_graph"]
        return g, st, (torch.cuda.max_memory_allocated() - base) / MIB

    with TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "mha-seed0.pt"
        g, st, fresh = peak_at_start(ckpt, None)
        try:  # train 20 steps, then stop: the checkpoint holds the moments and step counts
            engine.loop(g, st, lambda ev, **d: None, lambda: 1 if st.pos.step >= 20 else None)
        except engine._Stop:
            pass
        assert st.pos.step == 20 and ckpt.is_file()
        n_params = sum(p.numel() for _, p, _ in g.members.named_trained())
        del g, st
        _, _, resumed = peak_at_start(ckpt, checkpoints.load(ckpt))
    moments = 2 * n_params * 4 / MIB
    assert abs(resumed - fresh) < moments / 4, f"peak at start: fresh {fresh:.1f} MiB, resumed {resumed:.1f} MiB " \
                                               f"(AdamW moments: {moments:.1f} MiB)"
