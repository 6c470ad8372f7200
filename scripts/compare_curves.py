"""Validation-loss curves of train records side by side (issue 5: the fast and the reference path of an attention
should give the same curve within seed noise). One column per run (attention, path, seed), one row per evaluation
step, plus the fast runs' min–max spread and how far the reference lies outside it.

    python scripts/compare_curves.py results/h100/train-*/ --attn rcmha
"""

from __future__ import annotations

import argparse
import os
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
        runs[(impl, rec["config"]["seed"])] = {c["step"]: c["val_loss"] for c in rec["curves"]}
    keys = sorted(runs)
    steps = sorted({s for r in runs.values() for s in r})
    head = [f"{impl} seed {seed}" for impl, seed in keys]
    print("| step | " + " | ".join(head) + " | fast min–max | reference outside by |")
    print("|---:|" + "---:|" * (len(head) + 2))
    for s in steps:
        cells = [f"{runs[k][s]:.4f}" if s in runs[k] else "–" for k in keys]
        fast = [runs[k][s] for k in keys if k[0] == "fast" and s in runs[k]]
        ref = [runs[k][s] for k in keys if k[0] == "reference" and s in runs[k]]
        span = f"{min(fast):.4f}–{max(fast):.4f}" if fast else "–"
        out = "–"
        if fast and ref:
            d = max(ref[0] - max(fast), min(fast) - ref[0], 0.0)
            out = "inside" if d == 0 else f"{d:.4f}"
        print(f"| {s} | " + " | ".join(cells) + f" | {span} | {out} |")


if __name__ == "__main__":
    main()
