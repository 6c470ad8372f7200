"""How fast seeds train as one stacked model (issue 18, item 5): a benchmark, not a test.

For each (preset, attention) and each group size N, the group is built as `attnbench train` builds it
(training/engine.start: N seeds, stacked when N > 1, steps captured as CUDA graphs) and its captured training step is
replayed in its steady state (memory full) on real batches: the median of CUDA-event times over repeated blocks of
replays is `ms_per_step`, and ms_per_step / N is `ms_per_run_step`. The solo row (N = 1) is the plain module, every
fast path included, measured in the same run. A size that runs out of memory is a row with "status": "oom".

    python scripts/ensemble_bench.py [--members 1,5,10,20,40] [--out DIR]        (a GPU; about 3 minutes on an H200)
Writes DIR/ensemble-<UTC stamp>.jsonl (default DIR results/scratch/ensemble) and prints a Markdown table.
`--device cpu` times eager steps with the host clock instead (a smoke run of this script, not a figure to quote).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from attnbench import kernels, results  # noqa: E402
from attnbench.config import PRESETS  # noqa: E402
from attnbench.data import load_corpus  # noqa: E402
from attnbench.errors import classify  # noqa: E402
from attnbench.training import distributed, engine  # noqa: E402
from attnbench.training.sources import make_source  # noqa: E402

GRID = [("paper", "mha"), ("paper", "rcmha"), ("default", "mha")]
BLOCK, BLOCKS = 20, 7  # replays per timed block, timed blocks (the median of their per-step times)


def _batches(g, n_steps: int):
    """`n_steps` real training batches of the group's loader, on the device."""
    loader = g.loaders["train"]
    return [tuple(t.to(g.device) for t in loader.get(b)) for b in range(n_steps)]


def measure(preset: str, attn: str, n: int, corpus, tmp: Path, device: str) -> dict:
    c = replace(PRESETS[preset], device=device, cuda_graph=True).resolved()
    source = make_source(c, corpus)
    t = time.perf_counter()
    g, st = engine.start(attn, list(range(n)), source, c, ckpt_path=tmp / "bench.pt", resume=None,
                         proc=distributed.SINGLE, stacked=n > 1)
    setup_s = time.perf_counter() - t
    step = g.graphs.get("train") or _Eager(g)
    if c.mem_len:  # the steady state: a full memory (its values do not change the work)
        step.load_mems([torch.randn_like(m) for m in step.mems])
    batches = [b for b in _batches(g, BLOCK + 4) if b[0].shape[-1] == c.ctx][:BLOCK]
    for x, y in batches[:5]:  # warm-up
        step.step(x, y)
    times = [_block(step, batches, g.device) for _ in range(BLOCKS)]
    ms = statistics.median(times)
    row = {"preset": preset, "attn": attn, "members": n, "status": "ok", "ms_per_step": ms,
           "ms_per_run_step": ms / n, "ms_per_step_p25_p75": _quartiles(times), "setup_s": setup_s,
           "alloc_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if g.device.type == "cuda" else None,
           "stacked_fallbacks": sorted(kernels.STACKED_FALLBACKS), "cuda_graph": g.config["cuda_graph"]}
    del g, st, step, batches
    return row


class _Eager:
    """The eager step where nothing is captured (a CPU): the same interface as graphed.GraphedStep."""

    def __init__(self, g):
        self.g, self.mems = g, None if not g.cfg.mem_len else [torch.zeros(g.members.n, g.cfg.batch, g.cfg.mem_len,
                                                                              g.cfg.d_model)
                                                                  for _ in range(g.cfg.n_layers)]

    def load_mems(self, mems):
        self.mems = mems

    def step(self, x, y):
        g = self.g
        loss, self.mems, _ = engine.train_step(g.members, g.opt, x, y, self.mems, g.cfg.grad_clip, g.amp, False)
        return loss


def _block(step, batches, device: torch.device) -> float:
    """ms per step over one block of steps: CUDA events on a GPU, the host clock elsewhere."""
    if device.type != "cuda":
        t = time.perf_counter()
        for x, y in batches:
            step.step(x, y)
        return 1e3 * (time.perf_counter() - t) / len(batches)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for x, y in batches:
        step.step(x, y)
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / len(batches)


def _quartiles(xs: list[float]) -> list[float]:
    q = statistics.quantiles(xs, n=4)
    return [q[0], q[2]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", default="1,5,10,20,40")
    ap.add_argument("--grid", default=",".join(f"{p}:{a}" for p, a in GRID), help="preset:attn,...")
    ap.add_argument("--out", default="results/scratch/ensemble")
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/tinyshakespeare/input.txt"))
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: the ensemble benchmark needs a CUDA GPU (or --device cpu for a smoke run)")
    corpus = load_corpus(args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"ensemble-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.jsonl"
    env = results.environment(args.device)
    command = " ".join(["python", *sys.argv])
    tmp = Path("/tmp/attnbench-ensemble-bench")
    rows = []
    for item in args.grid.split(","):
        preset, attn = item.split(":")
        solo = None
        for n in (int(m) for m in args.members.split(",")):
            kernels.STACKED_FALLBACKS.clear()
            if args.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            try:
                row = measure(preset, attn, n, corpus, tmp, args.device)
            except Exception as e:
                status, reason = classify(e)
                row = {"preset": preset, "attn": attn, "members": n, "status": status, "reason": reason}
            gc.collect()  # the group's graphs and their memory pools go with it
            if args.device == "cuda":
                torch.cuda.empty_cache()
            if n == 1 and row["status"] == "ok":
                solo = row["ms_per_step"]
            row.update(solo_ms_per_step=solo, speedup_per_run=(solo / row["ms_per_run_step"]
                                                               if solo and row["status"] == "ok" else None),
                       device=env.get("device_name"), command=command, env=env)
            with path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            rows.append(row)
            print(_line(row), flush=True)
    print(f"\nrecords: {path}")
    print("| preset | attn | members | ms/step | ms/run-step | x solo per run | fallbacks |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(_line(r))


def _line(r: dict) -> str:
    if r["status"] != "ok":
        return f"| {r['preset']} | {r['attn']} | {r['members']} | {r['status']}: {r.get('reason', '')[:60]} | | | |"
    sp = f"{r['speedup_per_run']:.2f}" if r.get("speedup_per_run") else "-"
    return (f"| {r['preset']} | {r['attn']} | {r['members']} | {r['ms_per_step']:.3f} | {r['ms_per_run_step']:.4f} "
            f"| {sp} | {'; '.join(r['stacked_fallbacks']) or '-'} |")


if __name__ == "__main__":
    main()
