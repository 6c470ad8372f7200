"""Evaluation: a full pass over a split, every prediction scored exactly once with its left context, and
sampling from a trained model."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from attnbench import distributed
from attnbench.config import TrainConfig
from attnbench.optim import autocast


def window_plan(n: int, ctx: int, stride: int) -> list[tuple[int, int]]:
    """Sliding windows over a text of n tokens (n - 1 predictions): (start, first scored offset) per window.

    A window reads inputs [start, start + L) with L = min(ctx, n - 1) and predicts tokens start+1 … start+L; it
    scores only offsets >= first, the predictions no earlier window scored. Every prediction is scored exactly
    once; each has at least L - stride tokens of left context (fewer only at the start of the text)."""
    n_pred, L = n - 1, min(ctx, n - 1)
    plan, done = [], 0  # `done`: predictions 0 … done-1 (of inputs 0 … done-1) already scored
    while done < n_pred:
        start = max(0, min(done + stride - L, n_pred - L))
        plan.append((start, done - start))
        done = start + L
    return plan


def stream_plan(n: int, streams: int, burn: int) -> list[tuple[int, int, int]]:
    """Memory evaluation: (read from, score from, score to) input positions per stream. Stream k scores a
    contiguous share of the n - 1 predictions and starts reading `burn` tokens earlier so that its memory is full
    when scoring begins (at the start of the text there is nothing earlier to read)."""
    n_pred = n - 1
    share = math.ceil(n_pred / streams)
    out = []
    for a in range(0, n_pred, share):
        out.append((max(0, a - burn), a, min(a + share, n_pred)))
    return out


class Tally:
    """Sums of loss, correct predictions and positions scored."""

    def __init__(self):
        self.nll, self.correct, self.n = 0.0, 0, 0

    def add(self, logits: torch.Tensor, y: torch.Tensor, keep: torch.Tensor) -> None:
        lg, yy = logits.float()[keep], y[keep]
        self.nll += F.cross_entropy(lg, yy, reduction="sum").double().item()
        self.correct += int((lg.argmax(-1) == yy).sum())
        self.n += int(keep.sum())

    def reduce(self, device: torch.device) -> None:
        """Sum the ranks' tallies (float64: counts stay exact up to 2^53)."""
        t = torch.tensor([self.nll, self.correct, self.n], dtype=torch.float64, device=device)
        self.nll, self.correct, self.n = distributed.all_reduce_sum(t).tolist()
        self.correct, self.n = int(self.correct), int(self.n)

    def metrics(self) -> dict[str, float]:
        loss = self.nll / max(1, self.n)
        return {"loss": loss, "bpc": loss / math.log(2), "ppl": math.exp(min(loss, 700.0)),
                "acc": self.correct / max(1, self.n), "n": self.n}


@torch.no_grad()
def evaluate(model, data: torch.Tensor, c: TrainConfig, device: torch.device, rank: int = 0,
             world: int = 1) -> dict[str, float]:
    """Full pass over `data`: every prediction scored exactly once, with its left context.

    Without memory: sliding windows (window_plan). With memory: contiguous streams carrying Transformer-XL
    memory, segment by segment, after a burn-in of at least mem_len tokens (stream_plan).
    Under W processes rank r scores every W-th batch of windows (every W-th stream) and the sums of loss, correct
    predictions and positions are all-reduced: the metrics are those of one process, up to float rounding.
    Returns loss (nats), bpc (loss / ln 2), ppl (e^loss), acc (top-1), n (predictions scored)."""
    was = model.training
    model.eval()
    tally, amp = Tally(), autocast(device, c.amp)
    try:
        if c.mem_len == 0:
            plan = window_plan(len(data), c.ctx, c.eval_stride)
            L = min(c.ctx, len(data) - 1)
            for i in range(rank * c.eval_batch, len(plan), world * c.eval_batch):
                chunk = plan[i:i + c.eval_batch]
                w = torch.stack([data[s:s + L + 1] for s, _ in chunk]).to(device)  # [b, L+1]
                first = torch.tensor([f for _, f in chunk], device=device)
                keep = torch.arange(L, device=device)[None, :] >= first[:, None]  # [b, L]
                with amp:
                    logits, _ = model(w[:, :-1])
                tally.add(logits, w[:, 1:], keep)
        else:
            seg = c.ctx
            burn = math.ceil(c.mem_len / seg) * seg
            plan = stream_plan(len(data), c.eval_batch, burn)
            Lmax = max(b - r for r, _, b in plan)
            plan = plan[rank::world]
            Lmax = math.ceil(Lmax / seg) * seg
            X = torch.zeros(len(plan), Lmax, dtype=torch.long)
            Y = torch.zeros_like(X)
            K = torch.zeros(len(plan), Lmax, dtype=torch.bool)
            for k, (r, a, b) in enumerate(plan):
                X[k, :b - r] = data[r:b]
                Y[k, :b - r] = data[r + 1:b + 1]
                K[k, a - r:b - r] = True
            X, Y, K = X.to(device), Y.to(device), K.to(device)
            mems = None
            for off in range(0, Lmax if plan else 0, seg):
                with amp:
                    logits, mems = model(X[:, off:off + seg], mems)
                tally.add(logits, Y[:, off:off + seg], K[:, off:off + seg])
    finally:
        model.train(was)
    if world > 1:
        tally.reduce(device)
    return tally.metrics()


@torch.no_grad()
def generate(model, corpus, n: int, device: torch.device, c: TrainConfig, seed: int = 0) -> str:
    """n characters sampled at temperature 1 after a newline; memory carried when the model has it."""
    if n <= 0:
        return ""
    model.eval()
    g = torch.Generator(device=device).manual_seed(seed)
    start = corpus.stoi.get("\n", 0)
    idx = torch.tensor([[start]], device=device)
    out, mems = [], None
    for _ in range(n):
        with autocast(device, c.amp):
            if c.mem_len > 0:
                logits, mems = model(idx[:, -1:], mems)
            else:
                logits, _ = model(idx[:, -c.ctx:])
        probs = logits[0, -1].float().softmax(-1)
        nxt = torch.multinomial(probs, 1, generator=g)
        out.append(int(nxt))
        idx = torch.cat([idx, nxt.view(1, 1)], dim=1)[:, -max(c.ctx, 1):]
    return corpus.decode(out)
