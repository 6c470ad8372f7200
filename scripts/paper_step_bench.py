"""Steps per second of `--preset paper` on one GPU (issue 12): eager steps against captured steps with memory, per
attention, then lockstep groups of N runs (paper_run.step_all, one CUDA stream per run). Medians of repeated timed
blocks; the projection to a full run counts its 156,850 training and 17,420 validation steps.

    python scripts/paper_step_bench.py [--out DIR]   (DIR/paper-step-bench.jsonl and .md; exits 1 without a GPU)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from attnbench.config import PRESETS
from attnbench.optim import autocast
from attnbench.paper_run import Streams, build_model, capture_graphs, make_run, step_all
from attnbench.results import environment

FOUR = ["mha", "mdha", "rmha", "rcmha"]
TRAIN_STEPS, VALID_STEPS = 156_850, 17_420  # 10 epochs of the authors' loaders (paper_run.labml_schedule)


def ms_per_step(runs, c, loader, graphed: bool, steps: int, split: str = "train", repeats: int = 5) -> float:
    """Median over `repeats` blocks of `steps` lockstep steps, memory full, in milliseconds per step."""
    dev, amp = loader.grid.device, autocast(loader.grid.device, c.amp)
    x, y = loader.get(0)
    for _ in range(c.mem_len // c.ctx + 2):  # fill the memory (eager), warm up
        step_all(runs, split, x, y, False, c.grad_clip, amp)
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize(dev)
        t = time.perf_counter()
        for b in range(steps):
            x, y = loader.get(b + 1)
            step_all(runs, split, x, y, graphed, c.grad_clip, amp)
        torch.cuda.synchronize(dev)
        times.append((time.perf_counter() - t) / steps * 1e3)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/scratch")
    ap.add_argument("--groups", default="1,2,4,8")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("error: no CUDA GPU", file=sys.stderr)
        return 1
    dev = torch.device("cuda")
    c = PRESETS["paper"].resolved()
    data = torch.randint(0, 65, (c.batch * 20_000,), generator=torch.Generator().manual_seed(0))
    loader = Streams(data, c.batch, c.ctx, dev)
    rows = []
    for attn in FOUR:
        run = make_run(attn, 0, c, 65, dev, build_model)
        note = capture_graphs([run], c, c.n_layers, c.d_model, dev)
        eager = ms_per_step([run], c, loader, False, 100)
        graph = ms_per_step([run], c, loader, True, 1000)
        valid = ms_per_step([run], c, loader, True, 1000, split="valid")
        full_s = (TRAIN_STEPS * graph + VALID_STEPS * valid) / 1e3
        rows.append({"what": f"{attn}, one run", "eager_ms": eager, "graph_ms": graph, "valid_graph_ms": valid,
                     "graph_speedup": eager / graph, "full_run_s": full_s, "cuda_graph": note})
        print(rows[-1], flush=True)
    for n in [int(v) for v in a.groups.split(",")]:
        runs = [make_run(FOUR[i % 4], i, c, 65, dev, build_model) for i in range(n)]
        capture_graphs(runs, c, c.n_layers, c.d_model, dev)
        graph = ms_per_step(runs, c, loader, True, 500)
        valid = ms_per_step(runs, c, loader, True, 500, split="valid")
        full_s = (TRAIN_STEPS * graph + VALID_STEPS * valid) / 1e3
        rows.append({"what": f"lockstep group of {n} ({', '.join(FOUR[i % 4] for i in range(n))})",
                     "graph_ms": graph, "valid_graph_ms": valid, "full_run_s": full_s,
                     "runs_per_hour": n * 3600 / full_s, "mem_alloc_peak_gib": torch.cuda.max_memory_allocated() / 2**30})
        print(rows[-1], flush=True)
        del runs
        torch.cuda.empty_cache()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    env = environment("cuda")
    with open(out / "paper-step-bench.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps({**r, "env": env, "command": " ".join(sys.argv)}) + "\n")
    cols = ["what", "eager_ms", "graph_ms", "valid_graph_ms", "graph_speedup", "full_run_s", "runs_per_hour"]
    lines = [f"# paper preset: steps on {env.get('device_name')} (median of 5 timed blocks)", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k)) for k in cols) + " |")
    (out / "paper-step-bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.3f}" if v < 100 else f"{v:,.0f}"
    return str(v)


if __name__ == "__main__":
    sys.exit(main())
