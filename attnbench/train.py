"""Train character-level language models on Tiny Shakespeare, one per attention, and measure them (issue 4).

Pieces, each small so that a distributed runner (torchrun/DDP) can reuse them unchanged:
    TrainConfig / PRESETS      every setting, defaults declared once; presets default / paper / tiny
    Batches                    the data order: a pure function of (seed, rank, step)
    lr_at                      warm-up + cosine, or Noam
    train_step                 one optimiser step
    evaluate                   a full pass: every position of a split scored exactly once
    run_one / run_many         a run per (attention, seed): checkpoints, record, metrics
Library code: nothing here prints; progress goes to a callback `on(event, **data)`.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from attnbench import distributed
from attnbench.config import PRESETS, TRAIN_FIELDS as FIELDS, TrainConfig, make_config  # noqa: F401 (re-exported)
from attnbench.device import resolve_device
from attnbench.errors import AttnbenchError, classify
from attnbench.model import lm_loss

def pick_device(spec: str) -> torch.device:
    return resolve_device(spec)


# ------------------------------------------------------------------------------------------------ data order
class Batches:
    """Training batches as a pure function of (seed, rank, step), so that every attention sees the same data in
    the same order and a resumed run continues the same sequence.

    `batch` is the GLOBAL batch b. Step s draws b rows from a generator seeded by (seed, s) alone; rank r of a world
    of W processes takes rows [r·b/W, (r+1)·b/W). So the ranks' batches differ, their union is exactly the
    one-process batch of that step, and a checkpoint resumes under any world size that divides b.

    mem_len == 0: random windows of ctx + 1 tokens. mem_len > 0: `batch` contiguous streams over the training text
    (Transformer-XL, Dai et al. 2019, §3.2), read segment by segment; `new_epoch(step)` says when memories restart."""

    def __init__(self, data: torch.Tensor, batch: int, ctx: int, mem_len: int, seed: int, rank: int = 0,
                 world: int = 1):
        if batch % world:
            raise AttnbenchError(f"batch {batch} (the global batch) is not divisible by the {world} processes; "
                                 f"use a multiple of {world}")
        self.data, self.batch, self.ctx, self.seed = data, batch, ctx, seed
        self.rows = slice(rank * batch // world, (rank + 1) * batch // world)  # this rank's share
        self.streams = mem_len > 0
        if len(data) < ctx + 2:
            raise AttnbenchError(f"training text ({len(data)} tokens) is shorter than ctx + 2 ({ctx + 2})")
        if self.streams:
            per = len(data) // batch
            self.n_seg = (per - 1) // ctx
            if self.n_seg < 1:
                raise AttnbenchError(f"training text too short for {batch} streams of ctx {ctx}")
            self.stream = data[: per * batch].view(batch, per)[self.rows]  # [b/W, per]

    @property
    def steps_per_epoch(self) -> int:
        if self.streams:
            return self.n_seg
        return max(1, (len(self.data) - 1) // (self.batch * self.ctx))

    def new_epoch(self, step: int) -> bool:
        return self.streams and step % self.n_seg == 0

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of [b/W, ctx]: this rank's inputs and next-token targets."""
        if self.streams:
            off = (step % self.n_seg) * self.ctx
            return self.stream[:, off:off + self.ctx], self.stream[:, off + 1:off + self.ctx + 1]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        ix = torch.randint(0, len(self.data) - self.ctx - 1, (self.batch,), generator=g)[self.rows]
        w = torch.stack([self.data[i:i + self.ctx + 1] for i in ix.tolist()])  # [B, ctx+1]
        return w[:, :-1], w[:, 1:]


# ------------------------------------------------------------------------------------------------ optimisation
def lr_at(step: int, c: TrainConfig, total: int) -> float:
    """Learning rate for optimiser step `step` (0-based).

    cosine: linear warm-up to lr, then half a cosine down to min_lr at `total` (Loshchilov & Hutter 2017, eq. 5).
    noam: lr * min(s / warmup, sqrt(warmup / s)), s = step + 1 (Vaswani et al. 2017, eq. 3, scaled to peak lr)."""
    s = step + 1
    if c.schedule == "noam":
        w = max(1, c.warmup)
        return c.lr * min(s / w, math.sqrt(w / s))
    if c.warmup and s <= c.warmup:
        return c.lr * s / c.warmup
    frac = min(1.0, (s - c.warmup) / max(1, total - c.warmup))
    return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1 + math.cos(math.pi * frac))


def make_optimizer(model: torch.nn.Module, c: TrainConfig, device: torch.device,
                   capturable: bool = False) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices only (not on norms, biases, embeddings' rows are matrices too).
    capturable: safe to capture in a CUDA graph (attnbench.graphed)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": c.weight_decay}, {"params": other, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=c.lr, betas=(c.beta1, c.beta2), fused=device.type == "cuda",
                             capturable=capturable)


def autocast(device: torch.device, amp: bool):
    if device.type == "cuda" and amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(model, opt, x, y, mems, lr: float, grad_clip: float, amp_ctx) -> tuple[torch.Tensor, list | None]:
    """One optimiser step on (x, y); returns the (device) loss and the new memories. No host sync."""
    for g in opt.param_groups:
        g["lr"] = lr
    with amp_ctx:
        logits, new_mems = model(x, mems)
        loss = lm_loss(logits, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return loss.detach(), new_mems


# ------------------------------------------------------------------------------------------------ evaluation
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


class _Tally:
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
    tally, amp = _Tally(), autocast(device, c.amp)
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


# ------------------------------------------------------------------------------------------------ measurements
def cpu_peak_rss_mib() -> float:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if os.uname().sysname == "Darwin" else r / 2**10


def _nvml_sampler(device: torch.device):
    """attnbench.measure.nvml's background sampler when present and on a GPU; else None (n/a)."""
    if device.type != "cuda":
        return None
    try:
        from attnbench.measure.nvml import NvmlSampler
    except ImportError:
        return None
    return NvmlSampler(device.index or 0, interval_s=0.05)


def atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _cpu_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------------------ runs
Callback = Callable[..., None]


def _quiet(event: str, **data: Any) -> None:
    pass


@dataclass
class RunSpec:
    attn: str
    seed: int
    cfg: TrainConfig  # resolved for this attention


def total_steps(c: TrainConfig, batches: Batches) -> int:
    if c.epochs > 0:
        return max(1, round(c.epochs * batches.steps_per_epoch))
    return c.steps


def run_one(spec: RunSpec, corpus, *, record_path: Path, ckpt_path: Path, command: str, on: Callback = _quiet,
            sample: int = 0, resume: dict | None = None, rank: int = 0, world: int = 1) -> dict[str, Any]:
    """Train one model, evaluate it, write its record; returns the record (also on NaN, status "error").

    Under torchrun (world > 1, process group joined): DistributedDataParallel, rank r's share of each global batch,
    evaluation split and reduced; only rank 0 writes checkpoints and the record.
    Ctrl-C (or a peer process failing): checkpoint + partial record, then AttnbenchError naming --resume."""
    from attnbench import results
    from attnbench.model import CharLM

    c, attn = spec.cfg, spec.attn
    device = pick_device(c.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())  # LOCAL_RANK (distributed.init_from_env)
    torch.manual_seed(spec.seed)
    model = CharLM(c.model_config(attn, corpus.vocab_size)).to(device)
    use_graph = c.cuda_graph and device.type == "cuda" and c.mem_len == 0 and world == 1 and not c.compile
    opt = make_optimizer(model, c, device, capturable=use_graph)
    batches = Batches(corpus.train, c.batch, c.ctx, c.mem_len, spec.seed, rank, world)
    total = total_steps(c, batches)
    step, curves, best_val, best_state, prior_s = 0, [], None, None, 0.0
    val_n = len(corpus.val) - 1  # predictions in a validation pass (evaluate's n)
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["opt"])
        step, curves, best_val, prior_s = resume["step"], resume["curves"], resume["best_val"], resume["seconds"]
        best_state = resume["best_state"]
    net = distributed.wrap(model, device)  # DDP under torchrun; `model` stays the unwrapped one
    fwd_model = torch.compile(net) if (c.compile and device.type == "cuda") else net
    amp = autocast(device, c.amp)
    if device.type == "cuda":
        # before the capture: its eager warm-up steps are what the allocator sees of a step, since replays reuse the
        # graph's private pool without allocating (a reset after the capture reported 476 MiB for mha, not ~1.9 GiB)
        torch.cuda.reset_peak_memory_stats(device)
    graphed, graph_note = None, "off" if not use_graph else "on"
    t_setup = time.perf_counter()
    if use_graph:
        from attnbench.graphed import GraphedStep

        try:
            graphed = GraphedStep(model, opt, (c.batch, c.ctx), device, c.grad_clip, c.amp)
        except Exception as e:  # the eager step computes the same function
            graph_note = f"off: capture failed ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"
    setup_s = time.perf_counter() - t_setup  # the capture's warm-up steps (and Triton compiles): part of the wall time
    config = {"preset_fields": asdict(c), "attn": attn, "seed": spec.seed, "total_steps": total,
              "data": corpus.source, "data_sha256": corpus.sha256, "vocab": corpus.vocab_size,
              "split_tokens": [len(corpus.train), len(corpus.val), len(corpus.test)],
              "device": str(device), "amp": "bf16" if (c.amp and device.type == "cuda") else "fp32",
              "resumed_from_step": step if resume is not None else None,
              "resumed_world_size": resume.get("world_size", 1) if resume is not None else None,
              "world_size": world, "global_batch": c.batch, "per_rank_batch": c.batch // world,
              "cuda_graph": graph_note}
    n_params = model.n_params()
    on("start", attn=attn, seed=spec.seed, total=total, step=step, params=n_params)

    sampler = _nvml_sampler(device)
    t0 = time.perf_counter()
    train_s = eval_s = 0.0
    tokens = 0
    status, reason = "ok", None
    mems = None
    last_loss = float("nan")
    pending: list[torch.Tensor] = []

    def save_ckpt() -> None:
        if rank != 0:
            return
        atomic_save({"attn": attn, "seed": spec.seed, "cfg": asdict(c), "step": step, "world_size": world,
                     "model": model.state_dict(), "opt": opt.state_dict(), "best_state": best_state,
                     "best_val": best_val, "curves": curves,
                     "seconds": prior_s + time.perf_counter() - t0, "vocab": corpus.chars}, ckpt_path)

    def do_eval() -> None:
        nonlocal best_val, best_state, eval_s, val_n
        te = time.perf_counter()
        m = evaluate(model, corpus.val, c, device, rank, world)
        val_n = m["n"]
        eval_s += time.perf_counter() - te
        curves.append({"step": step, "seconds": round(prior_s + time.perf_counter() - t0, 3),
                       "train_loss": last_loss, "val_loss": m["loss"], "val_acc": m["acc"]})
        if best_val is None or m["loss"] < best_val:
            best_val, best_state = m["loss"], _cpu_state(model)
        save_ckpt()
        on("eval", step=step, val=m)

    with (sampler if sampler is not None else contextlib.nullcontext()):
        try:
            ts = time.perf_counter()
            while step < total:
                if batches.new_epoch(step):
                    mems = None
                x, y = batches.get(step)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if graphed is not None:
                    loss = graphed.step(x, y, lr_at(step, c, total))
                else:
                    loss, mems = train_step(fwd_model, opt, x, y, mems, lr_at(step, c, total), c.grad_clip, amp)
                pending.append(loss)
                step += 1
                tokens += x.numel() * world
                at_eval = step % c.eval_every == 0 or step == total
                if at_eval or step % c.log_every == 0:
                    losses = torch.stack(pending).float()
                    if world > 1:  # the global batch's mean loss; every rank then takes the same NaN decision
                        losses = distributed.all_reduce_sum(losses) / world
                    losses = losses.cpu()  # one host sync per log interval
                    pending.clear()
                    last_loss = float(losses.mean())
                    if not torch.isfinite(losses).all():
                        bad = step - len(losses) + int((~torch.isfinite(losses)).nonzero()[0])
                        status, reason = "error", f"non-finite training loss at step {bad + 1}"
                        break
                    train_s += time.perf_counter() - ts
                    on("step", step=step, total=total, loss=last_loss, tok_s=tokens / max(train_s, 1e-9))
                    if at_eval:
                        do_eval()
                    ts = time.perf_counter()
        except KeyboardInterrupt:
            status, reason = "error", f"interrupted at step {step}"
            save_ckpt()
        except Exception as e:
            if not (world > 1 and distributed.is_collective_failure(e)):
                raise
            status, reason = "error", f"another process failed at step {step} ({type(e).__name__})"
            save_ckpt()
    wall_s = prior_s + setup_s + time.perf_counter() - t0

    metrics: dict[str, Any] = {"params": n_params, "steps": step, "tokens": tokens, "wall_s": wall_s,
                               "setup_s": setup_s,
                               "train_s": train_s, "eval_s": eval_s,
                               "tokens_per_s": tokens / train_s if train_s > 0 else None,
                               "train_loss": last_loss if math.isfinite(last_loss) else None,
                               "val_loss_best": best_val}
    if status == "ok" and best_state is not None:
        model.load_state_dict(best_state)  # test on the best-validation weights
        te = time.perf_counter()
        test = evaluate(model, corpus.test, c, device, rank, world)
        metrics["test_eval_s"] = time.perf_counter() - te
        best = min(curves, key=lambda r: r["val_loss"])
        metrics.update({"best_step": best["step"], "val_acc_best": best["val_acc"],
                        "val_bpc_best": best_val / math.log(2), "test_loss": test["loss"], "test_bpc": test["bpc"],
                        "test_ppl": test["ppl"], "test_acc": test["acc"], "test_n": test["n"],
                        # the last 10 % of the text (validation then test, best weights): the held-out split of
                        # nanoGPT's shakespeare_char, which the 0.579 reference model was most likely scored on
                        "heldout_acc": (best["val_acc"] * val_n + test["acc"] * test["n"]) / (val_n + test["n"])})
    if device.type == "cuda":
        metrics["alloc_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        metrics["reserved_peak_mib"] = torch.cuda.max_memory_reserved(device) / 2**20
    else:
        metrics["alloc_peak_mib"] = None
    nv = sampler.result() if sampler is not None else {"nvml_peak_mib": None, "nvml_avg_mib": None,
                                                       "nvml_note": "n/a: no GPU" if device.type != "cuda" else
                                                       "n/a: attnbench.measure.nvml missing"}
    metrics.update({k: v for k, v in nv.items() if k.startswith("nvml_") and k != "nvml_scope"})
    metrics["cpu_peak_rss_mib"] = cpu_peak_rss_mib()
    text = generate(model, corpus, sample, device, c, spec.seed) if (sample and status == "ok" and rank == 0) \
        else None
    rec = results.make_record("train", attn, command, config, metrics, results.environment(str(device)),
                              status=status, reason=reason, curves=curves, sample=text,
                              checkpoint=str(ckpt_path), nvml_scope=nv.get("nvml_scope"))
    if rank == 0:
        results.append(record_path, rec)
    on("done", record=rec)
    if reason and (reason.startswith("interrupted") or reason.startswith("another process")):
        launcher = "attnbench" if world == 1 else f"torchrun --nproc-per-node {world} -m attnbench"
        raise AttnbenchError(f"{attn} (seed {spec.seed}): {reason}; checkpoint and partial record saved; "
                             f"continue with: {launcher} train --resume {ckpt_path}", exit_code=130)
    return rec


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise AttnbenchError(f"checkpoint not found: {p}")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:
        raise AttnbenchError(f"cannot read checkpoint {p}: {type(e).__name__}") from None
    if not isinstance(ck, dict) or "cfg" not in ck or "attn" not in ck:
        raise AttnbenchError(f"{p} is not an attnbench train checkpoint")
    return ck


def plan_runs(attns: list[str], cfg: TrainConfig, seeds: int) -> list[RunSpec]:
    """(attention, seed) pairs; seeds cfg.seed … cfg.seed + seeds - 1, each shared by every attention."""
    if seeds <= 0:
        raise AttnbenchError(f"seeds must be positive, got {seeds}")
    pick_device(cfg.device)
    c = cfg.resolved()
    return [RunSpec(a, cfg.seed + k, c) for k in range(seeds) for a in attns]


def run_many(specs: list[RunSpec], corpus, *, record_path: Path, ckpt_dir: Path, command: str,
             on: Callback = _quiet, sample: int = 0, resume: dict | None = None, rank: int = 0,
             world: int = 1) -> list[dict[str, Any]]:
    stamp = record_path.stem
    out = []
    for spec in specs:
        ckpt = ckpt_dir / stamp / f"{spec.attn}-seed{spec.seed}.pt"
        try:
            out.append(run_one(spec, corpus, record_path=record_path, ckpt_path=ckpt, command=command, on=on,
                               sample=sample, resume=resume, rank=rank, world=world))
        except (AttnbenchError, KeyboardInterrupt):
            raise
        except Exception as e:  # a bug in one attention: record it (with its traceback) and go on with the others
            if world > 1:
                raise
            out.append(_crash_record(spec, e, record_path, command))
            on("done", record=out[-1])
    return out


def _crash_record(spec: RunSpec, e: Exception, record_path: Path, command: str) -> dict[str, Any]:
    import traceback

    from attnbench import results

    first = str(e).splitlines()[0][:200] if str(e) else ""
    rec = results.make_record("train", spec.attn, command, {"preset_fields": asdict(spec.cfg), "attn": spec.attn,
                                                           "seed": spec.seed}, {},
                              results.environment(str(pick_device(spec.cfg.device))), status="error",
                              reason=f"crashed: {type(e).__name__}: {first}", traceback=traceback.format_exc())
    results.append(record_path, rec)
    return rec


# ------------------------------------------------------------------------------------------------ summaries
SUMMARY_METRICS = ("test_acc", "heldout_acc", "test_bpc", "test_loss", "val_loss_best", "tokens_per_s", "wall_s", "params",
                   "alloc_peak_mib", "nvml_avg_mib", "nvml_peak_mib", "cpu_peak_rss_mib")


def summarize(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows per attention (mean, and std over seeds when there are several) and plain statements saying which
    test-accuracy and test-bpc differences exceed the seed spread (|Δmean| > std_a + std_b)."""
    by: dict[str, list[dict]] = {}
    for r in records:
        by.setdefault(r["attn"], []).append(r)
    rows, stats = [], {}
    for attn, recs in by.items():
        ok = [r for r in recs if r["status"] == "ok"]
        row: dict[str, Any] = {"attn": attn, "runs": f"{len(ok)}/{len(recs)}"}
        if len(ok) < len(recs):
            row["status"] = "; ".join(r["reason"] for r in recs if r["status"] != "ok")
        for m in SUMMARY_METRICS:
            vals = [r["metrics"].get(m) for r in ok if r["metrics"].get(m) is not None]
            if not vals:
                row[m] = None
                continue
            same = len(set(vals)) == 1  # e.g. params: no spread to show
            mean = vals[0] if same else statistics.fmean(vals)
            sd = statistics.stdev(vals) if len(vals) > 1 and not same else None
            stats[(attn, m)] = (mean, sd, len(vals))
            row[m] = mean if sd is None else f"{_fmt(mean)} ± {_fmt(sd)}"
        rows.append(row)
    notes = []
    names = list(by)
    multi = any(n > 1 for (_, _), (_, _, n) in stats.items())
    if multi:
        for m, better in (("test_acc", "higher"), ("test_bpc", "lower")):
            for i, a in enumerate(names):
                for b in names[i + 1:]:
                    if (a, m) not in stats or (b, m) not in stats:
                        continue
                    (ma, sa, _), (mb, sb, _) = stats[(a, m)], stats[(b, m)]
                    spread = (sa or 0.0) + (sb or 0.0)
                    d = ma - mb
                    verdict = "exceeds" if abs(d) > spread else "does not exceed"
                    notes.append(f"{m}: {a} − {b} = {d:+.4f}, which {verdict} the seed spread "
                                 f"(std {a} + std {b} = {spread:.4f})")
    return rows, notes


def _fmt(v: float) -> str:
    return f"{v:.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
