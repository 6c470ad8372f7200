"""The RCMHA paper's training run, as the authors' code runs it (issue 12; attention.md, RCMHA; docs/paper.md).

The authors train with labml's TrainValidConfigs and `inner_iterations = 25` (labml_helpers/train_valid.py): each
epoch is cut into 25 rounds; a round trains on the next 1/25 of the training batches, then scores the next 1/25 of
the validation batches without gradients. Batches come from labml's SequentialDataLoader: `batch` contiguous
streams read segment after segment, the epoch's last segment shorter when the stream length leaves a remainder.
Transformer-XL memory is carried from segment to segment, separately for the training and the validation streams,
and emptied when each loader starts a new epoch (labml's SimpleStateModule.on_epoch_start). The authors' accuracy
keeps its counters on the class, never resets them and is fed by every training and validation batch: `paper_acc`
is that running figure at the end of the run. The clean figures beside it come from one full pass over the
validation text (the authors' last 10 %) at the final weights, which nothing selected on.

Several runs (attentions × seeds) advance in lockstep in one process: the data order has no seed, so each batch is
sliced once and every run takes its step; on a GPU each run replays its own captured step (attnbench.graphed).
step_all can give each run a CUDA stream of its own so that the replays overlap, but make_run does not yet (a group
of two hung in replay on an H200): today the replays of a group run one after another on one stream. Steps whose memory is still filling (the first
mem_len / ctx segments of an epoch) or whose segment is short run eagerly, with the same weights and optimizer.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from attnbench.errors import AttnbenchError
from attnbench.model import lm_loss

INNER_ITERATIONS = 25  # the authors' main.py


@dataclass(frozen=True)
class Chunk:
    """Batches [start, stop) of one split's loader, in epoch `epoch` (a round of labml's inner iterations)."""

    split: str  # "train" | "valid"
    epoch: int
    start: int
    stop: int


def labml_schedule(n_train: int, n_valid: int, epochs: int, inner: int = INNER_ITERATIONS,
                   max_train_steps: int | None = None) -> list[Chunk]:
    """labml_helpers' BatchIndex: round r of an epoch covers batches [r·n // inner, (r+1)·n // inner) of each loader,
    training first. `max_train_steps` cuts the schedule after that many training batches (the round's validation
    chunk still runs)."""
    out: list[Chunk] = []
    done = 0
    for e in range(epochs):
        for r in range(inner):
            a, b = r * n_train // inner, (r + 1) * n_train // inner
            if max_train_steps is not None:
                b = min(b, a + max_train_steps - done)
            if b > a:
                out.append(Chunk("train", e, a, b))
                done += b - a
            va, vb = r * n_valid // inner, (r + 1) * n_valid // inner
            if vb > va:
                out.append(Chunk("valid", e, va, vb))
            if max_train_steps is not None and done >= max_train_steps:
                return out
    return out


class Streams:
    """labml_helpers' SequentialDataLoader over `data`: the text cut into `batch` contiguous streams of `per` tokens
    (the remainder dropped); batch b reads inputs [b·ctx, b·ctx + s) and targets one further, s = min(ctx,
    per − 1 − b·ctx); the loader has per // ctx batches."""

    def __init__(self, data: torch.Tensor, batch: int, ctx: int, device: torch.device):
        per = len(data) // batch
        if per // ctx < 1 or per < 2:
            raise AttnbenchError(f"text of {len(data)} tokens is too short for {batch} streams of segment {ctx}")
        self.grid = data[: per * batch].view(batch, per).to(device)  # [batch, per]
        self.per, self.ctx = per, ctx

    def __len__(self) -> int:
        return self.per // self.ctx

    def get(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        a = b * self.ctx
        s = min(self.ctx, self.per - 1 - a)
        return self.grid[:, a:a + s], self.grid[:, a + 1:a + 1 + s]


def labml_split(corpus) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' 90/10 split (labml_helpers' TextFileDataset: split = int(len · 0.9)): our 90 % training text and
    our validation and test texts joined, which is the same last 10 %."""
    return corpus.train, torch.cat([corpus.val, corpus.test])


# ------------------------------------------------------------------------------------------------ one run's state
@dataclass
class Run:
    """One model of the lockstep group, with everything its steps change."""

    attn: str
    seed: int
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    lr: torch.Tensor  # the optimizer's learning rate, a tensor so that captured steps read it at replay
    correct: torch.Tensor  # paper_acc numerator: correct top-1 predictions of every batch scored (device, int64)
    loss_sum: torch.Tensor  # training loss summed since the last check (device)
    mems: dict[str, list | None] = field(default_factory=lambda: {"train": None, "valid": None})
    scored: int = 0  # paper_acc denominator
    graphs: dict[str, Any] = field(default_factory=dict)  # "train": GraphedStep, "valid": GraphedForward
    in_graph: dict[str, bool] = field(default_factory=lambda: {"train": False, "valid": False})
    stream: Any = None
    status: str = "ok"
    reason: str | None = None


def make_run(attn: str, seed: int, c, vocab: int, device: torch.device, build: Callable) -> Run:
    torch.manual_seed(seed)
    model = build(attn, c, vocab).to(device)
    lr = torch.tensor(float(c.lr), device=device) if device.type == "cuda" else float(c.lr)
    # labml's Noam is Adam (no weight decay here) with its learning rate set every step (docs/paper.md)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(c.beta1, c.beta2), eps=1e-8,
                           fused=device.type == "cuda", capturable=device.type == "cuda")
    zero = torch.zeros((), device=device)
    # One stream for every run: with a CUDA stream per run the lockstep group hung in graph replay on an H200
    # (torch 2.11, two runs; one run was fine), so the runs' replays are queued one after another for now.
    return Run(attn, seed, model, opt, lr, zero.long(), zero.clone().float(), stream=None)


def _set_lr(run: Run, lr: float) -> None:
    if torch.is_tensor(run.lr):
        run.lr.fill_(lr)
    else:
        for g in run.opt.param_groups:
            g["lr"] = lr


def _leave_graph(run: Run, split: str) -> None:
    """Memory back from a captured step's static buffers into ordinary tensors (for an eager step)."""
    if run.in_graph[split]:
        run.mems[split] = [m.clone() for m in run.graphs[split].mems]
        run.in_graph[split] = False


def _enter_graph(run: Run, split: str) -> None:
    if not run.in_graph[split]:
        run.graphs[split].load_mems(run.mems[split])
        run.in_graph[split] = True


def eager_train_step(run: Run, x, y, grad_clip: float, amp_ctx) -> None:
    """One optimiser step of the authors' Configs.step: forward with memory, loss, accuracy of this batch, backward,
    gradient clipping, Adam."""
    with amp_ctx:
        logits, run.mems["train"] = run.model(x, run.mems["train"])
        loss = lm_loss(logits, y)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), grad_clip)
    run.opt.step()
    run.correct += (logits.detach().argmax(-1) == y).sum()
    run.loss_sum += loss.detach()


@torch.no_grad()
def eager_valid_step(run: Run, x, y, amp_ctx) -> None:
    with amp_ctx:
        logits, run.mems["valid"] = run.model(x, run.mems["valid"])
    run.correct += (logits.argmax(-1) == y).sum()


def step_all(runs: list[Run], split: str, x, y, graphed: bool, grad_clip: float, amp_ctx) -> None:
    """Every run takes its step on (x, y); on a GPU each on its own stream (the streams overlap)."""
    cur = torch.cuda.current_stream(x.device) if x.is_cuda else None
    for run in runs:
        if run.status != "ok":
            continue
        ctx = torch.cuda.stream(run.stream) if run.stream is not None else contextlib.nullcontext()
        if run.stream is not None:
            run.stream.wait_stream(cur)  # x, y and the learning rate were written on the current stream
        with ctx:
            if graphed:
                _enter_graph(run, split)
                run.graphs[split].step(x, y)
            else:
                _leave_graph(run, split)
                if split == "train":
                    eager_train_step(run, x, y, grad_clip, amp_ctx)
                else:
                    eager_valid_step(run, x, y, amp_ctx)
        run.scored += y.numel()
    for run in runs:
        if run.stream is not None:
            cur.wait_stream(run.stream)  # the next batch overwrites what these steps read


def reset_memory(runs: list[Run], split: str) -> None:
    for run in runs:
        run.mems[split], run.in_graph[split] = None, False


def check_losses(runs: list[Run], train_steps: int, n_steps: int) -> float:
    """One host sync per chunk: a run whose summed training loss is not finite stops (status error). Returns the
    mean training loss of the chunk's `n_steps` steps over the runs still going (NaN when none is)."""
    losses = []
    for run in runs:
        loss = float(run.loss_sum) / max(1, n_steps)
        if run.status == "ok" and not math.isfinite(loss):
            run.status, run.reason = "error", f"non-finite training loss before step {train_steps}"
        elif run.status == "ok":
            losses.append(loss)
        run.loss_sum.zero_()
    return sum(losses) / len(losses) if losses else float("nan")


# ------------------------------------------------------------------------------------------------ checkpoints
def run_state(run: Run) -> dict[str, Any]:
    for split in ("train", "valid"):
        _leave_graph(run, split)
    mems = {s: None if m is None else [t.detach().cpu() for t in m] for s, m in run.mems.items()}
    return {"attn": run.attn, "seed": run.seed, "model": run.model.state_dict(), "opt": run.opt.state_dict(),
            "mems": mems, "correct": int(run.correct), "scored": run.scored, "status": run.status,
            "reason": run.reason}


def load_run_state(run: Run, st: dict[str, Any], device: torch.device) -> None:
    run.model.load_state_dict(st["model"])
    lr = run.lr
    run.opt.load_state_dict(st["opt"])
    for g in run.opt.param_groups:
        g["lr"] = lr  # keep the tensor the captured steps read
    run.mems = {s: None if m is None else [t.to(device) for t in m] for s, m in st["mems"].items()}
    run.correct.fill_(st["correct"])
    run.scored, run.status, run.reason = st["scored"], st["status"], st["reason"]


# ------------------------------------------------------------------------------------------------ the group
@dataclass
class Position:
    """Where the group stands in the schedule: the next batch is batch `batch` of chunk `chunk`."""

    chunk: int = 0
    batch: int | None = None  # None: the chunk's first batch
    train_steps: int = 0
    m_len: dict[str, int] = field(default_factory=lambda: {"train": 0, "valid": 0})  # memory length held
    seconds: float = 0.0


def capture_graphs(runs: list[Run], c, n_layers: int, d_model: int, device: torch.device) -> str:
    """Each run's steady-state steps captured as CUDA graphs; returns "on", or "off: why" (then steps run eagerly)."""
    from attnbench.graphed import GraphedXLForward, GraphedXLStep

    if device.type != "cuda" or not c.cuda_graph:
        return "off" if device.type == "cuda" else "off: no GPU"
    shape, mem_shape = (c.batch, c.ctx), (n_layers, c.batch, c.mem_len, d_model)
    try:
        for run in runs:
            with torch.cuda.stream(run.stream):
                run.graphs["train"] = GraphedXLStep(run.model, run.opt, shape, mem_shape, device, c.grad_clip, c.amp,
                                                    run.correct, run.loss_sum)
                run.graphs["valid"] = GraphedXLForward(run.model, shape, mem_shape, device, c.amp, run.correct)
            if run.stream is not None:
                torch.cuda.current_stream(device).wait_stream(run.stream)
    except Exception as e:  # the eager steps compute the same function
        for run in runs:
            run.graphs.clear()
        return f"off: capture failed ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"
    return "on"


def run_schedule(runs: list[Run], c, schedule: list[Chunk], loaders: dict[str, Streams], pos: Position,
                 lr_at: Callable[[int], float], amp_ctx, on: Callable, save: Callable[[Position], None],
                 ckpt_every_s: float = 60.0) -> Position:
    """Advance every run through the schedule from `pos`, in place; a checkpoint every `ckpt_every_s` seconds at a
    chunk boundary. Ctrl-C (SIGINT) is taken at the next batch boundary, where every run has taken the same steps:
    the position is saved there, then KeyboardInterrupt is raised."""
    graphs = bool(runs[0].graphs)
    t0 = last_save = time.perf_counter()
    base, start_steps = pos.seconds, pos.train_steps
    total = sum(ch.stop - ch.start for ch in schedule if ch.split == "train")
    with _interrupt_flag() as stop:
        while pos.chunk < len(schedule):
            ch = schedule[pos.chunk]
            first = ch.start if pos.batch is None else pos.batch
            if first == 0:
                reset_memory(runs, ch.split)  # a loader's new epoch (SimpleStateModule.on_epoch_start)
                pos.m_len[ch.split] = 0
            for b in range(first, ch.stop):
                x, y = loaders[ch.split].get(b)
                if ch.split == "train":
                    for run in runs:
                        _set_lr(run, lr_at(pos.train_steps))
                full = pos.m_len[ch.split] == c.mem_len and x.shape[1] == c.ctx
                step_all(runs, ch.split, x, y, graphs and full, c.grad_clip, amp_ctx)
                pos.m_len[ch.split] = min(c.mem_len, pos.m_len[ch.split] + x.shape[1])
                pos.train_steps += ch.split == "train"
                pos.batch = b + 1
                if stop():
                    pos.seconds = base + time.perf_counter() - t0
                    save(pos)
                    raise KeyboardInterrupt
            pos.chunk, pos.batch = pos.chunk + 1, None
            pos.seconds = base + time.perf_counter() - t0
            if ch.split == "train":
                loss = check_losses(runs, pos.train_steps, ch.stop - first)
                tokens = (pos.train_steps - start_steps) * c.batch * c.ctx * len(runs)
                on("step", step=pos.train_steps, total=total, loss=loss,
                   tok_s=tokens / max(1e-9, time.perf_counter() - t0))
                if all(r.status != "ok" for r in runs):
                    break
            if time.perf_counter() - last_save > ckpt_every_s:
                save(pos)
                last_save = time.perf_counter()
    return pos


@contextlib.contextmanager
def _interrupt_flag():
    """SIGINT sets a flag (read between batches) instead of raising at an arbitrary point; elsewhere unchanged."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    hit = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: hit.append(signum))
    try:
        yield lambda: bool(hit)
    finally:
        signal.signal(signal.SIGINT, old)


# ------------------------------------------------------------------------------------------------ checkpoints
def save_group(path: Path, runs: list[Run], c, pos: Position, plan: list[tuple[str, int]]) -> None:
    from attnbench.checkpoints import atomic_save

    atomic_save({"kind": "paper-group", "cfg": asdict(c), "plan": plan, "pos": asdict(pos),
                 "runs": [run_state(r) for r in runs]}, path)


def total_epochs(c, n_train: int) -> tuple[int, int | None]:
    """(epochs to lay out, training steps to stop after or None): --epochs as the authors count them, or --steps."""
    if c.epochs > 0:
        if c.epochs != int(c.epochs):
            raise AttnbenchError(f"the paper schedule takes whole epochs, got {c.epochs}")
        return int(c.epochs), None
    return max(1, math.ceil(c.steps / n_train)), c.steps


# ------------------------------------------------------------------------------------------------ a whole group
def build_model(attn: str, c, vocab: int) -> torch.nn.Module:
    from attnbench.model_labml import LabmlCharLM

    return LabmlCharLM(c.model_config(attn, vocab))


def train_group(pairs: list[tuple[str, int]], corpus, c, device: torch.device, *, record_path: Path, ckpt_path: Path,
                command: str, on: Callable = lambda event, **d: None, resume: dict | None = None) -> list[dict]:
    """Train the (attention, seed) runs of `pairs` in lockstep under the paper schedule, score each on the
    validation text at its final weights, write one record per run (also when a run fails); returns the records.
    Ctrl-C: the group's checkpoint is saved at the batch reached and Interrupted names --resume."""
    from attnbench import results
    from attnbench.evaluation import evaluate
    from attnbench.optim import autocast, lr_at
    from attnbench.train import cpu_peak_rss_mib, nvml_sampler

    from attnbench.plan import check_flavour

    for attn, _ in pairs:
        check_flavour(attn, c)
    train, valid = labml_split(corpus)
    loaders = {"train": Streams(train, c.batch, c.ctx, device), "valid": Streams(valid, c.batch, c.ctx, device)}
    epochs, max_steps = total_epochs(c, len(loaders["train"]))
    schedule = labml_schedule(len(loaders["train"]), len(loaders["valid"]), epochs, INNER_ITERATIONS, max_steps)
    runs = [make_run(a, s, c, corpus.vocab_size, device, build_model) for a, s in pairs]
    pos = Position()
    if resume is not None:
        for run, st in zip(runs, resume["runs"]):
            load_run_state(run, st, device)
        pos = Position(**resume["pos"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t_setup = time.perf_counter()
    graph_note = capture_graphs(runs, c, c.n_layers, c.d_model, device)
    setup_s = time.perf_counter() - t_setup
    total = sum(ch.stop - ch.start for ch in schedule if ch.split == "train")
    on("start", attn=", ".join(a for a, _ in pairs), seed=", ".join(str(s) for _, s in pairs), total=total,
       step=pos.train_steps, params=max(r.model.n_params() for r in runs))
    lr_of = lambda step: lr_at(step, c, total)  # noqa: E731  (the preset's schedule: labml's Noam)
    save = lambda p: save_group(ckpt_path, runs, c, p, pairs)  # noqa: E731
    sampler = nvml_sampler(device)
    status, reason = "ok", None
    with sampler if sampler is not None else contextlib.nullcontext():
        try:
            run_schedule(runs, c, schedule, loaders, pos, lr_of, autocast(device, c.amp), on, save)
            save(pos)
        except KeyboardInterrupt:
            status, reason = "error", f"interrupted at training step {pos.train_steps}"
    metrics_common = {"steps": pos.train_steps, "tokens": pos.train_steps * c.batch * c.ctx, "setup_s": setup_s,
                      "wall_s": pos.seconds + setup_s, "runs_in_group": len(runs)}
    metrics_common.update(_memory_metrics(device, sampler))
    metrics_common["cpu_peak_rss_mib"] = cpu_peak_rss_mib()
    records = []
    for run in runs:
        m = {**metrics_common, "params": run.model.n_params(), "paper_acc": int(run.correct) / max(1, run.scored),
             "paper_scored": run.scored}
        st, why = (status, reason) if run.status == "ok" else (run.status, run.reason)
        if st == "ok":
            test = evaluate(run.model, valid, c, device)  # the last 10 %, at the final weights
            m.update({"test_loss": test["loss"], "test_bpc": test["bpc"], "test_ppl": test["ppl"],
                      "test_acc": test["acc"], "test_n": test["n"]})
        config = {"preset": "paper", "preset_fields": asdict(c), "attn": run.attn, "seed": run.seed,
                  "group": [list(p) for p in pairs], "runs_in_group": len(runs), "total_steps": total,
                  "schedule": {"epochs": epochs, "inner_iterations": INNER_ITERATIONS,
                               "train_batches": len(loaders["train"]), "valid_batches": len(loaders["valid"])},
                  "data": corpus.source, "data_sha256": corpus.sha256, "vocab": corpus.vocab_size,
                  "split_tokens": [len(train), len(valid)], "device": str(device),
                  "amp": "bf16" if (c.amp and device.type == "cuda") else "fp32", "cuda_graph": graph_note,
                  "resumed_from_step": None if resume is None else resume["pos"]["train_steps"]}
        rec = results.make_record("train", run.attn, command, config, m, results.environment(str(device)),
                                  status=st, reason=why, checkpoint=str(ckpt_path), partial=status != "ok")
        on("done", record=rec, written=results.append_or_fallback(record_path, rec))
        records.append(rec)
    if status != "ok":
        from attnbench.errors import Interrupted

        raise Interrupted(f"{reason}; checkpoint {ckpt_path} and partial records saved")
    return records


def _memory_metrics(device: torch.device, sampler) -> dict[str, Any]:
    out: dict[str, Any] = {"alloc_peak_mib": None, "reserved_peak_mib": None}
    if device.type == "cuda":
        out["alloc_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        out["reserved_peak_mib"] = torch.cuda.max_memory_reserved(device) / 2**20
    if sampler is not None:
        out.update({k: v for k, v in sampler.result().items() if k.startswith("nvml_") and k != "nvml_scope"})
    return out


def run_plan(plan, corpus, *, command: str, on: Callable, proc) -> list[dict]:
    """`attnbench train` with the paper preset: the plan's (attention, seed) runs in groups of `--parallel`, each
    group in lockstep; finished runs of earlier sessions are kept, an interrupted group continues from its
    checkpoint. One process (the lockstep group is this preset's way of using a GPU fully)."""
    from attnbench.attention import file_safe
    from attnbench.device import resolve_device
    from attnbench.errors import Interrupted
    from attnbench.train import crash_record, finished_records

    if proc.world > 1:
        raise AttnbenchError("--preset paper runs in one process: use --parallel N for several runs on one GPU")
    done = finished_records(plan)
    todo = [(s.attn, s.seed) for s in plan.specs() if (s.attn, s.seed) not in done]
    out = [done[(s.attn, s.seed)] for s in plan.specs() if (s.attn, s.seed) in done]
    for rec in out:
        on("done", record=rec, written=None, earlier=True)
    device = resolve_device(plan.cfg.device)
    n = plan.job.parallel
    for pairs in (todo[i:i + n] for i in range(0, len(todo), n)):
        ckpt = Path(plan.run_dir) / ("group-" + "_".join(f"{file_safe(a)}-seed{s}" for a, s in pairs) + ".pt")
        resume = torch.load(ckpt, map_location="cpu", weights_only=False) if ckpt.is_file() else None
        try:
            out += train_group(pairs, corpus, plan.cfg, device, record_path=plan.record_path, ckpt_path=ckpt,
                               command=command, on=on, resume=resume)
        except Interrupted as e:
            raise Interrupted(f"{e}; continue with: {plan.resume_command()}") from None
        except AttnbenchError:
            raise
        except Exception as e:  # a bug: an error record (with its traceback) per run of the group, then the others
            for spec in (s for s in plan.specs() if (s.attn, s.seed) in pairs):
                rec, written = crash_record(spec, e, plan.record_path, command)
                on("done", record=rec, written=written)
                out.append(rec)
    return out
