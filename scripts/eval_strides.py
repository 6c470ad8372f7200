"""How much the evaluation stride moves the figures (issue 4): re-evaluates a train checkpoint's best-validation
weights on the validation and test splits at several sliding-window strides. Stride s gives every scored position
at least ctx − s tokens of left context; s = 1 gives every position its full ctx − 1.

    python scripts/eval_strides.py CHECKPOINT [--member I] [--strides 128,32,8,1] [--device cuda]
(a group's checkpoint holds several seeds trained as one model: --member picks one, 0 by default)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import fields, replace

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from attnbench.config import TrainConfig  # noqa: E402
from attnbench.data import load_corpus  # noqa: E402
from attnbench.training import checkpoints  # noqa: E402
from attnbench.training.evaluation import evaluate  # noqa: E402
from attnbench.training.members import Solo, build_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--member", type=int, default=0)
    ap.add_argument("--strides", default="128,32,8,1")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    ck = checkpoints.load(args.checkpoint)
    known = {f.name for f in fields(TrainConfig)}
    c = TrainConfig(**{k: v for k, v in ck["cfg"].items() if k in known})
    corpus = load_corpus()
    device = torch.device(args.device)
    model = build_model(ck["attn"], c, corpus.vocab_size).to(device)
    i, state = args.member, ck["states"][args.member]
    stacked = len(ck["seeds"]) > 1  # a stacked group's weights: tensors with a leading member dimension
    model.load_state_dict(state["best_state"] or {k: v[i] if stacked else v for k, v in ck["members"].items()})
    group = Solo(model, ck["seeds"][i])
    print(f"{ck['attn']} seed {ck['seeds'][i]} step {ck['pos']['step']} (best-validation weights), ctx {c.ctx}")
    print("| stride | min left context | val loss | val acc | test loss | test acc | seconds |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for s in (int(v) for v in args.strides.split(",")):
        cs = replace(c, eval_stride=s, eval_batch=256)
        t0 = time.perf_counter()
        (val,), (test,) = evaluate(group, corpus.val, cs, device), evaluate(group, corpus.test, cs, device)
        dt = time.perf_counter() - t0
        print(f"| {s} | {c.ctx - s} | {val['loss']:.4f} | {val['acc']:.4f} | {test['loss']:.4f} | {test['acc']:.4f} "
              f"| {dt:.1f} |", flush=True)


if __name__ == "__main__":
    main()
