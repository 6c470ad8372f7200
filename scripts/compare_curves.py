"""Validation-loss curves of train records side by side (issue 5: the fast and the reference path of an attention
should give the same curve within seed noise). One column per run (attention, path, seed), one row per evaluation
step, plus the fast runs' and the reference runs' min–max spreads, the difference of their means and whether it
exceeds the seed spread (|Δmean| > std fast + std reference, as `attnbench train --seeds` states it). Where one
(path, seed) has several records (a stopped run and a full rerun), the one with the most evaluations counts.

    python scripts/compare_curves.py results/h100/train-*/ --attn rcmha
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from attnbench.results import read  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("paths", nargs="+", help="record files or folders")
    ap.add_argument("--attn", required=True)
    ap.add_argument("--steps", type=int, default=5000, help="only runs planned for this many steps (default preset)")
    args = ap.parse_args()
    runs = {}
    records, _problems = read(args.paths)
    for rec in records:
        if rec.get("kind") != "train" or rec.get("attn") != args.attn or not rec.get("curves"):
            continue
        impl = rec["config"]["preset_fields"]["attn_impl"]
        if rec["config"].get("total_steps") != args.steps:
            continue
        curve = {c["step"]: c["val_loss"] for c in rec["curves"]}
        key = (impl, rec["config"]["seed"])
        if len(curve) > len(runs.get(key, {})):
            runs[key] = curve
    keys = sorted(runs)
    steps = sorted({s for r in runs.values() for s in r})
    head = [f"{impl} seed {seed}" for impl, seed in keys]
    print("| step | " + " | ".join(head) + " | fast min–max | reference min–max | Δ mean (ref − fast) | beyond spread? |")
    print("|---:|" + "---:|" * (len(head) + 4))

    def span(xs):
        return f"{min(xs):.4f}–{max(xs):.4f}" if xs else "–"

    for s in steps:
        cells = [f"{runs[k][s]:.4f}" if s in runs[k] else "–" for k in keys]
        fast = [runs[k][s] for k in keys if k[0] == "fast" and s in runs[k]]
        ref = [runs[k][s] for k in keys if k[0] == "reference" and s in runs[k]]
        delta = verdict = "–"
        if fast and ref:
            d = statistics.fmean(ref) - statistics.fmean(fast)
            spread = sum(statistics.stdev(xs) if len(xs) > 1 else 0.0 for xs in (fast, ref))
            delta = f"{d:+.4f}"
            verdict = "yes" if abs(d) > spread else "no"
            verdict += f" ({spread:.4f})"
        print(f"| {s} | " + " | ".join(cells) + f" | {span(fast)} | {span(ref)} | {delta} | {verdict} |")

if __name__ == "__main__":
    main()
