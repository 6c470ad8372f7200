"""Evaluation of a group's members (members.py: every model call gives one result per member): a full pass over a
split, every prediction scored exactly once with its left context, per member; and sampling from one member."""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F

from attnbench.config import TrainConfig
from attnbench.errors import classify
from attnbench.training import distributed
from attnbench.training.optim import autocast


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
    """Per member: sums of loss and correct predictions (device tensors [n], one host sync at the end), positions
    scored (the same for every member); and examples (rows) with every scored position right, for the synthetic
    tasks."""

    def __init__(self, n: int, device: torch.device):
        self.nll = torch.zeros(n, dtype=torch.float64, device=device)
        self.correct = torch.zeros(n, dtype=torch.long, device=device)
        self.exact = torch.zeros(n, dtype=torch.long, device=device)
        self.n, self.examples = 0, 0

    def add(self, logits: torch.Tensor, y: torch.Tensor, keep: torch.Tensor) -> None:
        """logits [n, b, L, V], targets y [b, L], keep [b, L]: the positions scored."""
        self._scored(logits[:, keep], y[keep])

    def add_kept(self, logits: torch.Tensor, y: torch.Tensor, rows: torch.Tensor, examples: int) -> None:
        """The scored positions only, and which examples have them all right: logits [n, k, V], targets y [k], rows
        [k] (which of the batch's `examples` rows each came from)."""
        wrong = self._scored(logits, y)  # [n, k]
        errors = torch.zeros(len(wrong), examples, device=y.device).index_add_(1, rows, wrong.float())  # [n, b]
        self.exact += (errors == 0).sum(1)
        self.examples += examples

    def _scored(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Loss, correct and count of scored positions (logits [n, k, V], y [k]); returns which were wrong [n, k]."""
        lg = logits.float()
        n, k = lg.shape[:2]
        nll = F.cross_entropy(lg.flatten(0, 1), y.repeat(n), reduction="none").view(n, k)
        self.nll += nll.double().sum(1)
        wrong = lg.argmax(-1) != y
        self.correct += (~wrong).sum(1)
        self.n += len(y)
        return wrong

    def reduce(self) -> None:
        """Sum the ranks' tallies (float64: counts stay exact up to 2^53)."""
        self.nll = distributed.all_reduce_sum(self.nll)
        counts = distributed.all_reduce_sum(torch.stack([self.correct, self.exact]))
        self.correct, self.exact = counts[0], counts[1]
        n = distributed.all_reduce_sum(torch.tensor([self.n, self.examples], dtype=torch.float64,
                                                    device=self.nll.device)).tolist()
        self.n, self.examples = map(int, n)

    def metrics(self) -> list[dict[str, float]]:
        out = []
        for nll, c in zip(self.nll.tolist(), self.correct.tolist()):
            loss = nll / max(1, self.n)
            out.append({"loss": loss, "bpc": loss / math.log(2), "ppl": math.exp(min(loss, 700.0)),
                        "acc": c / max(1, self.n), "n": self.n})
        return out

    def task_metrics(self) -> list[dict[str, float]]:
        """A synthetic task: loss and accuracy over the scored positions, and the share of examples with every
        scored position right (nats only: its tokens are not characters, so no bpc)."""
        return [{"loss": nll / max(1, self.n), "acc": c / max(1, self.n), "n": self.n,
                 "exact": e / max(1, self.examples), "examples": self.examples}
                for nll, c, e in zip(self.nll.tolist(), self.correct.tolist(), self.exact.tolist())]


@torch.no_grad()
def evaluate(members, data: torch.Tensor, c: TrainConfig, device: torch.device, rank: int = 0,
             world: int = 1) -> list[dict[str, float]]:
    """Full pass over `data`, per member: every prediction scored exactly once, with its left context.

    Without memory: sliding windows (window_plan). With memory: contiguous streams carrying Transformer-XL
    memory, segment by segment, after a burn-in of at least mem_len tokens (stream_plan).
    Under W processes rank r scores every W-th batch of windows (every W-th stream) and the sums of loss, correct
    predictions and positions are all-reduced: the metrics are those of one process, up to float rounding.
    Returns per member: loss (nats), bpc (loss / ln 2), ppl (e^loss), acc (top-1), n (predictions scored)."""
    tally, amp = Tally(members.n, device), autocast(device, c.amp)
    members.train(False)
    try:
        if c.mem_len == 0:
            plan = window_plan(len(data), c.ctx, c.eval_stride)
            L = min(c.ctx, len(data) - 1)
            for i in range(rank * c.eval_batch, len(plan), world * c.eval_batch):
                chunk = plan[i:i + c.eval_batch]
                starts = torch.tensor([s for s, _ in chunk])
                w = data[starts[:, None] + torch.arange(L + 1)].to(device)  # [b, L+1]
                first = torch.tensor([f for _, f in chunk], device=device)
                keep = torch.arange(L, device=device)[None, :] >= first[:, None]  # [b, L]
                with amp:
                    logits, _ = members.forward(w[:, :-1])  # [n, b, L, V]
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
                    logits, mems = members.forward(X[:, off:off + seg], mems)
                tally.add(logits, Y[:, off:off + seg], K[:, off:off + seg])
    finally:
        members.train(True)
    if world > 1:
        tally.reduce()
    return tally.metrics()


@torch.no_grad()
def evaluate_task(members, batches, c: TrainConfig, device: torch.device, rank: int = 0,
                  world: int = 1) -> list[dict[str, float]]:
    """A synthetic task's split (batches of x, y, mask from tasks.SyntheticTask.eval_batches), per member: every
    example once, scored at its masked positions only (the output layer runs there alone: CharLM.features,
    .logits). Under W processes rank r takes every W-th batch and the sums are all-reduced. Returns per member:
    loss (nats), acc, n (positions scored), exact (share of examples all right), examples."""
    tally, amp = Tally(members.n, device), autocast(device, c.amp)
    members.train(False)
    try:
        for i, (x, y, mask) in enumerate(batches):
            if i % world != rank:
                continue
            y, mask = y.to(device), mask.to(device)
            with amp:
                h = members.features(x.to(device))  # [n, b, T, D]
                logits = members.logits(h[:, mask])  # [n, k, V]: the output layer at the scored positions only
            tally.add_kept(logits, y[mask], mask.nonzero()[:, 0], len(y))
    finally:
        members.train(True)
    if world > 1:
        tally.reduce()
    return tally.task_metrics()


def extrapolation(members, data: torch.Tensor, c: TrainConfig, lengths, device: torch.device, rank: int = 0,
                  world: int = 1) -> list[list[dict]]:
    """Length extrapolation (issue 13), per member: the split `data` scored at each context length L, a full pass
    with every prediction scored once (window_plan, stride L/2: each has at least L/2 tokens of left context, as the
    trained length's default pass) and the windows per batch scaled so that a batch holds as many tokens as at
    training length. A length the model cannot run (a learned position table shorter than L), or one that fails,
    is a cell {"ctx", "status", "reason"}; the other lengths are still scored."""
    out: list[list[dict]] = [[] for _ in range(members.n)]
    for L in lengths:
        if L >= len(data):
            cells = [{"ctx": L, "status": "n/a", "reason": f"the split has {len(data)} tokens, not more than {L}"}]
        else:
            at = replace(c, ctx=L, eval_stride=max(1, L // 2), eval_batch=max(1, c.eval_batch * c.ctx // L))
            try:
                cells = [{"ctx": L, **{k: m[k] for k in ("loss", "bpc", "acc", "n")}}
                         for m in evaluate(members, data, at, device, rank, world)]
            except Exception as e:  # a table too short (AttnbenchError): n/a; out of memory: oom; else an error
                status, reason = classify(e)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                cells = [{"ctx": L, "status": status, "reason": reason}]
        for i in range(members.n):
            out[i].append(cells[i] if len(cells) > 1 else dict(cells[0]))
    return out


@torch.no_grad()
def generate(model, corpus, n: int, device: torch.device, c: TrainConfig, seed: int = 0) -> str:
    """n characters sampled at temperature 1 after a newline from one plain model (a member's: members.member_model);
    memory carried when the model has it."""
    if n <= 0:
        return ""
    was = model.training
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
    model.train(was)
    return corpus.decode(out)
