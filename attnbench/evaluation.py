"""Evaluation: a full pass over a split, every prediction scored exactly once with its left context, and
sampling from a trained model."""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F

from attnbench import distributed
from attnbench.config import TrainConfig
from attnbench.errors import classify
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
    """Sums of loss, correct predictions and positions scored; and of examples (rows) with every scored position
    right, for the synthetic tasks."""

    def __init__(self):
        self.nll, self.correct, self.n, self.exact, self.examples = 0.0, 0, 0, 0, 0

    def add(self, logits: torch.Tensor, y: torch.Tensor, keep: torch.Tensor) -> None:
        """logits [b, L, V], targets y [b, L], keep [b, L]: the positions scored."""
        self._scored(logits[keep], y[keep])

    def add_kept(self, logits: torch.Tensor, y: torch.Tensor, rows: torch.Tensor, examples: int) -> None:
        """The scored positions only, and which examples have them all right: logits [k, V], targets y [k], rows
        [k] (which of the batch's `examples` rows each came from)."""
        wrong = self._scored(logits, y)
        errors = torch.zeros(examples, device=y.device).index_add_(0, rows, wrong.float())  # [b]
        self.exact += int((errors == 0).sum())
        self.examples += examples

    def _scored(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Loss, correct and count of scored positions (logits [k, V], y [k]); returns which were wrong [k]."""
        lg = logits.float()
        self.nll += F.cross_entropy(lg, y, reduction="sum").double().item()
        wrong = lg.argmax(-1) != y
        self.correct += int((~wrong).sum())
        self.n += len(y)
        return wrong

    def reduce(self, device: torch.device) -> None:
        """Sum the ranks' tallies (float64: counts stay exact up to 2^53)."""
        t = torch.tensor([self.nll, self.correct, self.n, self.exact, self.examples], dtype=torch.float64,
                         device=device)
        self.nll, *counts = distributed.all_reduce_sum(t).tolist()
        self.correct, self.n, self.exact, self.examples = map(int, counts)

    def metrics(self) -> dict[str, float]:
        loss = self.nll / max(1, self.n)
        return {"loss": loss, "bpc": loss / math.log(2), "ppl": math.exp(min(loss, 700.0)),
                "acc": self.correct / max(1, self.n), "n": self.n}

    def task_metrics(self) -> dict[str, float]:
        """A synthetic task: loss and accuracy over the scored positions, and the share of examples with every
        scored position right (nats only: its tokens are not characters, so no bpc)."""
        return {"loss": self.nll / max(1, self.n), "acc": self.correct / max(1, self.n), "n": self.n,
                "exact": self.exact / max(1, self.examples), "examples": self.examples}


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
def evaluate_task(model, batches, c: TrainConfig, device: torch.device, rank: int = 0,
                  world: int = 1) -> dict[str, float]:
    """A synthetic task's split (batches of x, y, mask from tasks.SyntheticTask.eval_batches): every example once,
    scored at its masked positions only (the model's output layer runs there alone: CharLM.features, .logits).
    Under W processes rank r takes every W-th batch and the sums are all-reduced. Returns loss (nats), acc,
    n (positions scored), exact (share of examples all right), examples."""
    was = model.training
    model.eval()
    tally, amp = Tally(), autocast(device, c.amp)
    try:
        for i, (x, y, mask) in enumerate(batches):
            if i % world != rank:
                continue
            y, mask = y.to(device), mask.to(device)
            with amp:
                h, _ = model.features(x.to(device))
                logits = model.logits(h[mask])  # [k, V]: the output layer at the scored positions only
            tally.add_kept(logits, y[mask], mask.nonzero()[:, 0], len(y))
    finally:
        model.train(was)
    if world > 1:
        tally.reduce(device)
    return tally.task_metrics()


def extrapolation(model, data: torch.Tensor, c: TrainConfig, lengths, device: torch.device, rank: int = 0,
                  world: int = 1) -> list[dict]:
    """Length extrapolation (issue 13): the split `data` scored at each context length L, a full pass with every
    prediction scored once (window_plan, stride L/2: each has at least L/2 tokens of left context, as the trained
    length's default pass) and the windows per batch scaled so that a batch holds as many tokens as at training
    length. A length the model cannot run (a learned position table shorter than L), or one that fails, is a cell
    {"ctx", "status", "reason"}; the other lengths are still scored."""
    out = []
    for L in lengths:
        if L >= len(data):
            out.append({"ctx": L, "status": "n/a", "reason": f"the split has {len(data)} tokens, not more than {L}"})
            continue
        at = replace(c, ctx=L, eval_stride=max(1, L // 2), eval_batch=max(1, c.eval_batch * c.ctx // L))
        try:
            m = evaluate(model, data, at, device, rank, world)
        except Exception as e:  # a table too short (AttnbenchError): n/a; out of memory: oom; else an error cell
            status, reason = classify(e)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            out.append({"ctx": L, "status": status, "reason": reason})
            continue
        out.append({"ctx": L, **{k: m[k] for k in ("loss", "bpc", "acc", "n")}})
    return out


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
