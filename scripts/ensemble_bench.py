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
LOOP = {"paper": 600, "default": 40, "tiny": 20}  # steps of the short run whose loop time is also reported


def measure(preset: str, attn: str, n: int, corpus, tmp: Path, device: str, profile) -> dict:
    c = replace(PRESETS[preset], device=device, cuda_graph=True).resolved()
    source = make_source(c, corpus)
    t = time.perf_counter()
    g, st = engine.start(attn, list(range(n)), source, c, ckpt_path=tmp / "bench.pt", resume=None,
                         proc=distributed.SINGLE, stacked=n > 1)
    setup_s = time.perf_counter() - t
    times = [engine.step_ms(g, BLOCK, 1) for _ in range(BLOCKS)]
    row = {"preset": preset, "attn": attn, "members": n, "status": "ok", "ms_per_step": statistics.median(times),
           "ms_per_step_p25_p75": _quartiles(times), "setup_s": setup_s,
           "alloc_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if g.device.type == "cuda" else None,
           "stacked_fallbacks": sorted(kernels.STACKED_FALLBACKS), "cuda_graph": g.config["cuda_graph"]}
    row["ms_per_run_step"] = row["ms_per_step"] / n
    if profile is not None:
        profile.write(f"\n## {preset} {attn}, {n} member(s): eager steps, kernels by CUDA time\n")
        profile.write(_profile(g))
    g = st = None
    # what training sees: the loop's time per training step over a short run (host work, uncaptured steps, and on
    # the paper schedule the eager steps while memory fills; its scoring steps are not counted)
    short = replace(c, steps=LOOP[preset], epochs=0.0, eval_every=10**9)
    g, st = engine.start(attn, list(range(n)), source, short, ckpt_path=tmp / "bench.pt", resume=None,
                         proc=distributed.SINGLE, stacked=n > 1)
    engine.loop(g, st, lambda *a, **k: None, lambda: None)
    row["loop_ms_per_step"] = 1e3 * st.train_s / max(1, st.pos.step)
    return row


def _profile(g) -> str:
    """Five eager steps under torch.profiler: the kernels that cost the time (a table)."""
    from torch.profiler import ProfilerActivity, profile

    c, x, y = g.cfg, *(t.to(g.device) for t in g.loaders["train"].get(0))
    mems = None if not c.mem_len else [torch.zeros(g.members.n, x.shape[-2], c.mem_len, c.d_model, device=g.device)
                                       for _ in range(c.n_layers)]
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if g.device.type == "cuda" else [])
    for _ in range(2):
        engine.train_step(g.members, g.opt, x, y, mems, c.grad_clip, g.amp, False)
    with profile(activities=acts) as prof:
        for _ in range(5):
            engine.train_step(g.members, g.opt, x, y, mems, c.grad_clip, g.amp, False)
        if g.device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if g.device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=70)


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
    ap.add_argument("--profile", default="", help="group sizes to profile (eager steps), e.g. 1,20: profiles.txt")
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
    profiled = {int(m) for m in args.profile.split(",") if m}
    profile_file = (out / "profiles.txt").open("a", encoding="utf-8") if profiled else None
    for item in args.grid.split(","):
        preset, attn = item.split(":")
        solo = None
        for n in (int(m) for m in args.members.split(",")):
            kernels.STACKED_FALLBACKS.clear()
            if args.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            try:
                row = measure(preset, attn, n, corpus, tmp, args.device, profile_file if n in profiled else None)
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
    print("| preset | attn | members | ms/step | ms/run-step | x solo per run | loop ms/step | fallbacks |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(_line(r))


def _line(r: dict) -> str:
    if r["status"] != "ok":
        return f"| {r['preset']} | {r['attn']} | {r['members']} | {r['status']}: {r.get('reason', '')[:60]} | | | | |"
    sp = f"{r['speedup_per_run']:.2f}" if r.get("speedup_per_run") else "-"
    return (f"| {r['preset']} | {r['attn']} | {r['members']} | {r['ms_per_step']:.3f} | {r['ms_per_run_step']:.4f} "
            f"| {sp} | {r['loop_ms_per_step']:.3f} | {'; '.join(r['stacked_fallbacks']) or '-'} |")


if __name__ == "__main__":
    main()
