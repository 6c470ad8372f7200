"""How much the evaluation stride moves the figures (issue 4): re-evaluates a train checkpoint's best-validation
weights on the validation and test splits at several sliding-window strides. Stride s gives every scored position
at least ctx − s tokens of left context; s = 1 gives every position its full ctx − 1.

    python scripts/eval_strides.py CHECKPOINT [--strides 128,32,8,1] [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import fields, replace

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from attnbench import checkpoints  # noqa: E402
from attnbench.config import TrainConfig  # noqa: E402
from attnbench.data import load_corpus  # noqa: E402
from attnbench.evaluation import evaluate  # noqa: E402
from attnbench.model import CharLM  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--strides", default="128,32,8,1")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    ck = checkpoints.load(args.checkpoint)
    known = {f.name for f in fields(TrainConfig)}
    c = TrainConfig(**{k: v for k, v in ck["cfg"].items() if k in known})
    corpus = load_corpus()
    device = torch.device(args.device)
    model = CharLM(c.model_config(ck["attn"], corpus.vocab_size)).to(device)
    model.load_state_dict(ck["state"]["best_state"] or ck["model"])
    print(f"{ck['attn']} seed {ck['seed']} step {ck['state']['step']} (best-validation weights), ctx {c.ctx}")
    print("| stride | min left context | val loss | val acc | test loss | test acc | seconds |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for s in (int(v) for v in args.strides.split(",")):
        cs = replace(c, eval_stride=s, eval_batch=256)
        t0 = time.perf_counter()
        val, test = evaluate(model, corpus.val, cs, device), evaluate(model, corpus.test, cs, device)
        dt = time.perf_counter() - t0
        print(f"| {s} | {c.ctx - s} | {val['loss']:.4f} | {val['acc']:.4f} | {test['loss']:.4f} | {test['acc']:.4f} "
              f"| {dt:.1f} |", flush=True)


if __name__ == "__main__":
    main()
