"""The one training loop (style.md, habit 13): a group (members.py: one attention, its seeds trained alone or as one
stacked model) follows a schedule (schedule.py: steps with validation passes, or labml's rounds for --preset
paper). Every run of `attnbench train` goes through it.

One group (train_group) reads top to bottom in three parts:
    start    device, members, optimiser, loaders, schedule, the steps (eager, or replays of captured CUDA graphs);
             the state, fresh or from a checkpoint
    loop     chunk after chunk: training steps (logging and the non-finite check, per member), scoring steps,
             validation passes (evaluate and checkpoint); a stop request (Ctrl-C, SIGTERM) taken at a batch
             boundary, where the checkpoint is exact
    finish   the test pass (best-validation or final weights), length extrapolation, a sample; one record per member
A plan (run_plan) is its groups in order: finished runs of earlier sessions are kept, an interrupted group continues
from its checkpoint, a group out of memory splits in two and says so. Library code: nothing here prints; progress
goes to a callback `on(event, **data)`.
"""

from __future__ import annotations

import contextlib
import gc
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import torch

from attnbench import kernels, results
from attnbench.config import TrainConfig
from attnbench.device import resolve_device
from attnbench.errors import EXIT_STOPPED, EXIT_TERMINATED, AttnbenchError, Interrupted, RunFailed, classify
from attnbench.training import checkpoints, distributed, members as membership, records
from attnbench.training.evaluation import extrapolation, generate
from attnbench.training.optim import autocast, lr_at, make_optimizer, score_step, set_lr, train_step
from attnbench.training.plan import Plan, ensemble_size
from attnbench.training.schedule import Position, Schedule

Callback = Callable[..., None]
CKPT_EVERY_S = 300.0  # a checkpoint at the first batch boundary this long after the last one (and at every validation)


def _quiet(event: str, **data: Any) -> None:
    pass


@dataclass
class MemberState:
    """What one member has done and measured: a checkpoint saves it, a resumed group starts from it."""

    seed: int
    curves: list[dict[str, Any]] = field(default_factory=list)  # one row per validation pass
    best_val: float | None = None
    best_state: dict | None = None  # the best-validation weights, on the host
    last_loss: float = float("nan")  # mean training loss of the last log interval
    val_n: int = 0  # predictions in a validation pass
    status: str = "ok"  # ok | error (non-finite loss: the member stopped) | interrupted
    reason: str | None = None
    steps: int | None = None  # steps done when the member stopped; None while it trains
    recorded: bool = False  # its record is written (a member that stopped early)


@dataclass
class GroupState:
    pos: Position
    members: list[MemberState]
    seconds: float = 0.0  # wall time of earlier sessions
    train_s: float = 0.0  # time in training steps (evaluation excluded), every session
    eval_s: float = 0.0
    tokens: int = 0  # tokens each member trained on (every process), every session
    scored: int = 0  # predictions counted into paper_acc, each member

    def live(self) -> list[int]:
        return [i for i, m in enumerate(self.members) if m.status == "ok"]


@dataclass
class Group:
    """What start() builds for one group; fixed while the loop runs, but for the memories."""

    attn: str
    cfg: TrainConfig
    source: Any
    device: torch.device
    members: Any  # members.Solo | members.Stacked
    opt: torch.optim.Optimizer
    loaders: dict[str, Any]
    schedule: Schedule
    graphs: dict[str, Any]  # "train": GraphedStep, "score": GraphedScore (GPU)
    counter: torch.Tensor | None  # correct predictions per member [n] (paper_acc), on the device
    ckpt_path: Path
    proc: distributed.Proc
    config: dict[str, Any]  # the records' config, but for the seed
    setup_s: float
    record_path: Path | None = None
    command: str = ""
    written: list[dict] = field(default_factory=list)  # records of members that stopped early, this session
    mems: dict[str, list | None] = field(default_factory=lambda: {"train": None, "score": None})
    in_graph: dict[str, bool] = field(default_factory=lambda: {"train": False, "score": False})
    t0: float = 0.0
    last_save: float = 0.0
    deadline: float | None = None  # --stop-after: perf_counter() by which this command means to have stopped
    point_t: float | None = None  # when the loop last passed a stop point (_at_stop_point), this session
    stretch_s: float = 0.0  # the longest stretch between two stop points seen this session
    after_others: bool = False  # another group of this command trained before this one

    @property
    def amp(self):
        return autocast(self.device, self.cfg.amp)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


class _Stop(Exception):
    """A stop request reached a batch boundary (the checkpoint is saved there): a signal's number, or STOP_AFTER."""

    def __init__(self, signum: int):
        self.signum = signum


STOP_AFTER = -1  # _Stop's cause when --stop-after's time ran out (not a signal)
STRETCH_MARGIN = 1.05  # the next stretch is taken to last this much longer than the longest one seen


# ================================================================================================ start
def start(attn: str, seeds: list[int], source, c: TrainConfig, *, ckpt_path: Path, resume: dict | None,
          proc: distributed.Proc, stacked: bool) -> tuple[Group, GroupState]:
    device = resolve_device(c.device)
    if proc.world > 1 and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())  # LOCAL_RANK (distributed.init_from_env)
    graphs_on = c.cuda_graph and device.type == "cuda" and proc.world == 1 and not c.compile
    net = None if stacked else (lambda m: _training_net(m, c, device))
    group = membership.build(attn, c, source.vocab_size, seeds, device, stacked=stacked, net=net)
    group.scored = getattr(source, "scored_per_example", None)  # a synthetic task's: the loss at those alone
    if stacked:
        _probe(group, c, device)
    opt = make_optimizer(group, c, device)
    loaders = source.loaders(c, seeds, proc.rank, proc.world, device)
    schedule = source.schedule(c, loaders)
    counter = torch.zeros(len(seeds), dtype=torch.long, device=device) if schedule.count_correct else None
    st = GroupState(Position(), [MemberState(s) for s in seeds])
    g = Group(attn, c, source, device, group, opt, loaders, schedule, {}, counter, ckpt_path, proc, {}, 0.0)
    if resume is not None:
        _load(g, st, resume)
    if device.type == "cuda":
        # before the capture: its eager warm-up steps are what the allocator sees of a step, since replays reuse the
        # graph's private pool without allocating
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    if not graphs_on:
        graph_note = "off" if device.type == "cuda" else "off: no GPU"
    elif st.pos.chunk >= len(schedule.chunks):  # resumed for its test pass only: no step left to capture
        graph_note = "off: nothing left to train"
    else:
        graph_note = _capture(g)
    g.setup_s = time.perf_counter() - t
    g.config = records.config(g, resume, graph_note)
    g.config["loss_positions"] = group.scored  # the loss's output layer at this many positions an example; None: all
    return g, st


def _training_net(model, c: TrainConfig, device: torch.device):
    """What a solo member's training forward calls: DDP under torchrun; torch.compile'd on request (GPU)."""
    net = distributed.wrap(model, device)
    return torch.compile(net) if (c.compile and device.type == "cuda") else net


def _probe(group, c: TrainConfig, device: torch.device) -> None:
    """One forward and backward of the stacked members on one short row, before anything is trained: an attention
    that cannot run under vmap (data-dependent Python, an autograd Function without a vmap rule) says so here."""
    x = torch.zeros(group.n, 1, min(c.ctx, 2), dtype=torch.long, device=device)
    try:
        with autocast(device, c.amp):
            losses, _, _ = group.loss(x, x, None)
        losses.sum().backward()
    except Exception as e:
        if classify(e)[0] == "oom":
            raise
        raise CannotStack(f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
    finally:
        for _, p, _ in group.named_trained():
            p.grad = None


class CannotStack(Exception):
    """The attention's forward or backward fails inside torch.func.vmap: its seeds cannot train as one model."""


def _capture(g: Group) -> str:
    """The steady-state steps captured as CUDA graphs (memory full, a full segment); "on" or "off: why" (then every
    step runs eagerly: the same function)."""
    from attnbench.training.graphed import GraphedScore, GraphedStep

    c, n = g.cfg, g.members.n
    x_shape = tuple(g.loaders["train"].get(0)[0].shape)
    mem_shape = (c.n_layers, n, x_shape[-2], c.mem_len, c.d_model) if c.mem_len else None
    try:
        g.graphs["train"] = GraphedStep(g.members, g.opt, x_shape, mem_shape, g.device, c.grad_clip, c.amp,
                                        g.counter)
        if "score" in g.loaders:
            g.graphs["score"] = GraphedScore(g.members, tuple(g.loaders["score"].get(0)[0].shape), mem_shape,
                                             g.device, c.amp, g.counter)
    except Exception as e:  # the eager steps compute the same function
        g.graphs.clear()
        first = str(e).splitlines()[0][:120] if str(e) else ""
        return f"off: capture failed ({type(e).__name__}: {first})"
    return "on"


# ================================================================================================ loop
def loop(g: Group, st: GroupState, on: Callback, stop: Callable[[], int | None]) -> None:
    """Follow the schedule from st.pos to its end (or until every member has stopped)."""
    chunks, pending = g.schedule.chunks, []
    g.t0 = g.last_save = ts = time.perf_counter()
    while st.pos.chunk < len(chunks) and st.live():
        _at_stop_point(g, st)
        ch = chunks[st.pos.chunk]
        if ch.kind == "validate":
            validate(g, st, on)
            save_checkpoint(g, st)
        else:
            split = "train" if ch.kind == "train" else "score"
            for b in range(ch.start if st.pos.batch is None else st.pos.batch, ch.stop):
                x, y = _batch(g, st, split, b)
                if split == "train":
                    set_lr(g.opt, lr_at(st.pos.step, g.cfg, g.schedule.total))
                    pending.append(_train(g, st, x, y))
                    st.pos.step += 1
                    st.tokens += y.shape[-1] * y.shape[-2] * g.proc.world
                else:
                    _score(g, st, x, y)
                st.scored += y.shape[-1] * y.shape[-2] * g.proc.world if g.schedule.count_correct else 0
                st.pos.m_len[split] = min(g.cfg.mem_len, st.pos.m_len[split] + x.shape[-1])
                st.pos.batch = b + 1
                at_log = split == "train" and (st.pos.step % g.cfg.log_every == 0 or b + 1 == ch.stop)
                if at_log and pending:
                    log_losses(g, st, pending, on, ts)
                    pending, ts = [], time.perf_counter()
                _maybe_stop(g, st, stop, at_log)
        if ch.kind == "score":  # the paper schedule's validation batches: time outside training steps
            _sync(g.device)  # their queued GPU work is theirs, not the next training chunk's
            st.eval_s += time.perf_counter() - ts
        st.pos.chunk, st.pos.batch = st.pos.chunk + 1, None
        ts = time.perf_counter()


def _batch(g: Group, st: GroupState, split: str, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    loader = g.loaders[split]
    if g.cfg.mem_len and loader.restarts(b):  # a new epoch of the streams: memory starts empty
        g.mems[split], g.in_graph[split], st.pos.m_len[split] = None, False, 0
    x, y = loader.get(b)
    return x.to(g.device, non_blocking=True), y.to(g.device, non_blocking=True)


def _train(g: Group, st: GroupState, x, y) -> torch.Tensor:
    """One training step of every member: the captured graph when it applies, else the eager step."""
    if _steady(g, st, "train", x):
        _enter_graph(g, "train")
        return g.graphs["train"].step(x, y)
    _leave_graph(g, "train")
    losses, g.mems["train"], counted = train_step(g.members, g.opt, x, y, g.mems["train"], g.cfg.grad_clip, g.amp,
                                                  g.counter is not None)
    if counted is not None:
        g.counter += counted
    return losses


def _score(g: Group, st: GroupState, x, y) -> None:
    """One scoring step of every member (labml's validation batches): correct predictions counted."""
    if _steady(g, st, "score", x):
        _enter_graph(g, "score")
        g.graphs["score"].step(x, y)
        return
    _leave_graph(g, "score")
    counted, g.mems["score"] = score_step(g.members, x, y, g.mems["score"], g.amp)
    g.counter += counted


def _steady(g: Group, st: GroupState, split: str, x) -> bool:
    """A captured step applies: the captured shape (a short last segment has not) and memory full (or none)."""
    graph = g.graphs.get(split)
    return graph is not None and x.shape == graph.x.shape and st.pos.m_len[split] == g.cfg.mem_len


def _enter_graph(g: Group, split: str) -> None:
    if not g.in_graph[split]:
        if g.cfg.mem_len:
            g.graphs[split].load_mems(g.mems[split])
        g.in_graph[split] = True


def _leave_graph(g: Group, split: str) -> None:
    """Memory back from a captured step's static buffers into ordinary tensors (for an eager step)."""
    if g.in_graph[split]:
        if g.cfg.mem_len:
            g.mems[split] = [m.clone() for m in g.graphs[split].mems]
        g.in_graph[split] = False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def log_losses(g: Group, st: GroupState, pending: list[torch.Tensor], on: Callback, since: float) -> None:
    """Mean training loss per member since the last log, over every process (one host sync); a member whose loss
    was not finite stops there, with its record (every rank takes the same decision). The time from `since` to the
    sync is training time: on a GPU the steps only queue work, and the sync is where the host waits for it."""
    losses = torch.stack(pending).float()  # [k, n]
    if g.proc.world > 1:  # the global batch's mean loss
        losses = distributed.all_reduce_sum(losses) / g.proc.world
    losses = losses.cpu()
    st.train_s += time.perf_counter() - since
    first_step = st.pos.step - len(losses)
    for i in st.live():
        ms, col = st.members[i], losses[:, i]
        ms.last_loss = float(col.mean())
        if not torch.isfinite(col).all():
            bad = first_step + int((~torch.isfinite(col)).nonzero()[0])
            ms.status, ms.reason, ms.steps = "error", f"non-finite training loss at step {bad + 1}", st.pos.step
            g.written.append(records.write_member(g, st, i, None, on, partial=False))
    live = st.live()
    if live:
        on("step", step=st.pos.step, total=g.schedule.total, loss=sum(st.members[i].last_loss for i in live) / len(live),
           tok_s=st.tokens / max(st.train_s, 1e-9), losses=[st.members[i].last_loss for i in range(g.members.n)])


def validate(g: Group, st: GroupState, on: Callback) -> None:
    """A validation pass; each member's best weights so far are kept on the host."""
    t = time.perf_counter()
    ms_all = g.source.evaluate(g.members, "val", g.cfg, g.device, g.proc.rank, g.proc.world)
    st.eval_s += time.perf_counter() - t
    for i in st.live():
        ms, m = st.members[i], ms_all[i]
        ms.val_n = m["n"]
        ms.curves.append({"step": st.pos.step, "seconds": round(st.seconds + g.elapsed(), 3),
                          "train_loss": ms.last_loss, "val_loss": m["loss"], "val_acc": m["acc"]})
        if ms.best_val is None or m["loss"] < ms.best_val:
            ms.best_val, ms.best_state = m["loss"], g.members.member_weights(i)
    on("eval", step=st.pos.step, val=[ms_all[i] for i in st.live()])


def _stale(g: Group, st: GroupState, split: str) -> bool:
    """Whether `split`'s Transformer-XL memory will never be read again: the stream's next batch starts it over
    (a new epoch: _batch then empties the memory), or no batch of the split is left."""
    kind = "train" if split == "train" else "score"
    chunks = g.schedule.chunks[st.pos.chunk:]
    if st.pos.batch is not None and chunks and chunks[0].kind == kind:
        return False  # in the middle of the split's chunk
    nxt = next((ch for ch in chunks if ch.kind == kind), None)
    return nxt is None or g.loaders[split].restarts(nxt.start)


def _stop_point(g: Group, st: GroupState) -> bool:
    """A place where --stop-after may stop the run: before a training chunk; in a schedule that stops where memory
    restarts (the paper's: its epoch boundaries) only where no memory is carried, so that the checkpoint is
    smallest. Elsewhere the streams' restarts seldom meet a chunk's start (a stream's epoch of n_seg steps against
    eval_every), so any chunk's start is one and the checkpoint carries the memory, as a Ctrl-C's does."""
    chunks = g.schedule.chunks
    if st.pos.batch is not None or st.pos.chunk >= len(chunks) or chunks[st.pos.chunk].kind != "train":
        return False
    if not g.cfg.mem_len or not g.schedule.stops_where_memory_restarts:
        return True
    return all(_stale(g, st, s) for s in g.loaders if s in g.mems)


def _at_stop_point(g: Group, st: GroupState) -> None:
    """--stop-after: at a stop point, stop (checkpoint, _Stop(STOP_AFTER)) when the next stretch, taken to last
    STRETCH_MARGIN times the longest one seen this session, would end past the deadline. The first stretch of a
    session always runs (nothing is measured before it), so every session makes progress; a later group of the
    same command stops at once where the deadline has passed."""
    if g.deadline is None or not _stop_point(g, st):
        return
    now = time.perf_counter()
    if g.point_t is not None:
        g.stretch_s = max(g.stretch_s, now - g.point_t)
    g.point_t = now
    next_too_long = g.stretch_s > 0 and now + STRETCH_MARGIN * g.stretch_s > g.deadline
    late = next_too_long or (g.after_others and now >= g.deadline)
    if g.proc.world > 1:  # the ranks' clocks differ a little: all stop if any would
        late = bool(distributed.all_reduce_max(torch.tensor([float(late)], device=g.device)).item())
    if late:
        save_checkpoint(g, st)
        raise _Stop(STOP_AFTER)


def _maybe_stop(g: Group, st: GroupState, stop: Callable[[], int | None], at_log: bool) -> None:
    """At a batch boundary: a stop request saves the checkpoint and raises _Stop (under torchrun the ranks agree
    at the log steps, so that all stop at the same step); else a checkpoint when the last is old."""
    signum = stop()
    if g.proc.world > 1:
        if not at_log:
            return
        flag = torch.tensor([float(signum or 0)], device=g.device)
        signum = int(distributed.all_reduce_max(flag).item()) or None
    if signum:
        save_checkpoint(g, st)
        raise _Stop(signum)
    if time.perf_counter() - g.last_save > CKPT_EVERY_S:
        save_checkpoint(g, st)


# ================================================================================================ checkpoints
def save_checkpoint(g: Group, st: GroupState) -> None:
    g.last_save = time.perf_counter()
    if not g.proc.is_main:
        return
    for split in g.mems:
        _leave_graph(g, split)
    state = {k: v for k, v in asdict(st).items() if k not in ("pos", "members")}
    state["seconds"] = st.seconds + g.elapsed()
    # a memory that will never be read again is not saved (at an epoch boundary of the paper schedule the
    # checkpoint is then a quarter smaller, small enough to travel between machines); _batch empties it anyway
    stale = {s for s in g.mems if _stale(g, st, s)}
    mems = {s: None if m is None or s in stale else [t.cpu() for t in m] for s, m in g.mems.items()}
    pos = asdict(st.pos)
    pos["m_len"] = {s: 0 if s in stale else n for s, n in pos["m_len"].items()}
    checkpoints.atomic_save({
        "kind": checkpoints.KIND, "attn": g.attn, "seeds": [m.seed for m in st.members], "cfg": asdict(g.cfg),
        "world_size": g.proc.world, "vocab": g.source.chars, "members": g.members.state_dict(),
        "opt": g.opt.state_dict(), "states": [asdict(m) for m in st.members], "pos": pos,
        "group": state, "counters": {} if g.counter is None else {"correct": g.counter.cpu()},
        "mems": mems}, g.ckpt_path)


def _load(g: Group, st: GroupState, ck: dict[str, Any]) -> None:
    g.members.load_state_dict(ck["members"])
    lr = g.opt.param_groups[0]["lr"]
    g.opt.load_state_dict(ck["opt"])
    for pg in g.opt.param_groups:
        pg["lr"] = lr  # keep the tensor the captured steps read
    known = {f.name for f in fields(MemberState)}
    st.members = [MemberState(**{k: v for k, v in m.items() if k in known}) for m in ck["states"]]
    st.pos = Position(**ck["pos"])
    for k, v in ck["group"].items():
        setattr(st, k, v)
    if g.counter is not None:
        g.counter.copy_(ck["counters"]["correct"])
    g.mems = {s: None if m is None else [t.to(g.device) for t in m] for s, m in ck["mems"].items()}


# ================================================================================================ finish
def finish(g: Group, st: GroupState, sample: int) -> list[dict[str, Any]]:
    """The test pass of every member still training, once (best-validation weights, or the final ones); then, with
    --eval-ctx, the same split at each extrapolation length; a sample. Returns the test metrics per member."""
    live = st.live()
    if g.schedule.select_best:
        g.members.load_member_weights([m.best_state or g.members.member_weights(i)
                                       for i, m in enumerate(st.members)])
    t = time.perf_counter()
    tests = g.source.evaluate(g.members, "test", g.cfg, g.device, g.proc.rank, g.proc.world)
    out: list[dict[str, Any]] = [{} for _ in st.members]
    for i in live:
        ms = st.members[i]
        best = min(ms.curves, key=lambda r: r["val_loss"]) if ms.curves else None
        out[i] = {"test_eval_s": time.perf_counter() - t, **g.source.test_metrics(tests[i], best, ms.best_val,
                                                                                 ms.val_n)}
        if best is not None:
            out[i].update(best_step=best["step"], val_acc_best=best["val_acc"])
    if g.cfg.eval_lengths:
        t = time.perf_counter()
        cells = extrapolation(g.members, g.source.corpus.test, g.cfg, g.cfg.eval_lengths, g.device, g.proc.rank,
                              g.proc.world)
        for i in live:
            out[i].update(eval_ctx=cells[i], eval_ctx_s=time.perf_counter() - t)
    if sample and g.proc.is_main:
        for i in live:
            out[i]["sample"] = generate(g.members.member_model(i), g.source.corpus, sample, g.device, g.cfg,
                                        st.members[i].seed)
    return out


# ================================================================================================ one group
def train_group(attn: str, seeds: list[int], source, c: TrainConfig, *, record_path: Path, ckpt_path: Path,
                command: str, on: Callback = _quiet, sample: int = 0, resume: dict | None = None,
                proc: distributed.Proc = distributed.SINGLE, stacked: bool = False,
                note: str | None = None, auto: dict | None = None, causality=None,
                deadline: float | None = None, after_others: bool = False,
                sessions: list[str] | None = None) -> list[dict[str, Any]]:
    """Train the group (attention `attn`, `seeds` alone or stacked), evaluate it, write one record per member;
    returns the records (also for members stopped by a non-finite loss: status "error").

    A stop request (Ctrl-C or SIGTERM, taken at the next batch boundary) or a peer process failing: the checkpoint
    is brought up to date and partial records written (status "interrupted"); then Interrupted (130, 143 for
    SIGTERM) or RunFailed says how to continue (run_plan adds the command). `deadline` (--stop-after, a
    time.perf_counter() value): the same at the last stop point before it (_at_stop_point), exit 75. `command` is the
    run's own command; `sessions`, for a resumed run, every session's command in order (config["sessions"])."""
    kernels.STACKED_FALLBACKS.clear()
    g, st = start(attn, seeds, source, c, ckpt_path=ckpt_path, resume=resume, proc=proc, stacked=stacked)
    g.config["ensemble_note"] = note
    if sessions:
        g.config["sessions"] = sessions
    g.deadline, g.after_others = deadline, after_others
    if causality is not None:
        g.config["causality"] = causality.summary()  # the check this session ran before training (causality.py)
    if auto is not None:
        g.config["ensemble_auto"] = auto  # --ensemble auto's measurement (stacking_pays)
    g.record_path, g.command = record_path, command
    on("start", attn=attn, seeds=seeds, total=g.schedule.total, step=st.pos.step, params=g.members.n_params)
    sampler = records.nvml_sampler(g.device)
    tests, stopped = None, None
    with sampler if sampler is not None else contextlib.nullcontext():
        try:
            with stop_requests() as stop:
                loop(g, st, on, stop)
                save_checkpoint(g, st)
                tests = finish(g, st, sample)
        except _Stop as s:
            stopped = (s.signum, f"stopped by --stop-after at step {st.pos.step}, where the next stretch would not "
                                 f"end in time" if s.signum == STOP_AFTER else f"interrupted at step {st.pos.step}")
        except KeyboardInterrupt:  # a second Ctrl-C, or one outside the loop's boundaries
            stopped = (signal.SIGINT, _where_stopped(g, st))
        except Exception as e:
            if not (proc.world > 1 and distributed.is_collective_failure(e)):
                raise
            stopped = (None, f"another process failed ({type(e).__name__}) at step {st.pos.step}")
    nv = sampler.result() if sampler is not None else None
    recs = g.written
    for i, ms in enumerate(st.members):
        if ms.recorded:
            continue
        if stopped and ms.status == "ok":
            ms.status, ms.reason = "interrupted", stopped[1]
        recs.append(records.write_member(g, st, i, tests[i] if tests else None, on, partial=bool(stopped), nvml=nv))
    if stopped:
        signum, why = stopped
        code = {signal.SIGTERM: EXIT_TERMINATED, STOP_AFTER: EXIT_STOPPED}.get(signum)
        seeds_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]}"
        text = f"{attn} ({seeds_text}): {why}; checkpoint and partial records saved"
        raise (RunFailed(text) if signum is None else Interrupted(text, *([code] if code else [])))
    return recs


def _where_stopped(g: Group, st: GroupState) -> str:
    if st.pos.chunk < len(g.schedule.chunks):
        return f"interrupted at step {st.pos.step}"
    return "interrupted during the test pass"


@contextlib.contextmanager
def stop_requests():
    """The first SIGINT or SIGTERM asks the loop to stop at the next batch boundary (stop() returns the signal);
    a second one raises KeyboardInterrupt at once. Outside the main thread nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    got: list[int] = []

    def handler(signum, frame):
        if got:
            raise KeyboardInterrupt
        got.append(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: got[0] if got else None
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# ================================================================================================ a plan
def run_plan(plan: Plan, data, *, command: str, on: Callback = _quiet,
             proc: distributed.Proc = distributed.SINGLE, deadline: float | None = None) -> list[dict[str, Any]]:
    """Every group of the plan in order: finished runs of earlier sessions are kept as they are, an interrupted
    group continues from its checkpoint, the others start. A group out of memory splits in two (each half then
    continues from the group's checkpoint, or starts); a crash becomes error records and the others go on (one
    process); a stop request ends here with the command that continues."""
    from attnbench.training.sources import as_source

    source = as_source(data, plan.cfg)
    device = resolve_device(plan.cfg.device)
    done = records.finished(plan)
    size, auto = _group_size(plan, device, proc)
    out = [done[k] for k in sorted(done, key=lambda k: (k[1], plan.attns.index(k[0])))]
    for rec in out:
        carried = rec.pop("_carried", False)  # from the run folder alone: this session's record file gets it too
        written = results.append_or_fallback(plan.record_path, rec) if carried and proc.is_main else None
        on("done", record=rec, written=written, earlier=True)
    queue = [(a, s, None) for a, s in plan.groups(size, set(done))]
    measured: dict[str, dict] = {}  # auto on a GPU: per attention, whether stacking pays (stacking_pays)
    trained = False  # a group of this command has trained (--stop-after: a later one may stop before its first step)
    while queue:
        attn, seeds, note = queue.pop(0)
        release(device)
        ckpt = plan.checkpoint(attn, seeds)
        if auto and len(seeds) > 1 and device.type == "cuda" and not ckpt.is_file():
            if attn not in measured:
                measured[attn] = stacking_pays(attn, seeds, source, plan.cfg, Path(plan.run_dir) / "auto.pt")
                on("note", text=_choice_text(attn, measured[attn]))
            if not measured[attn]["stacked"]:
                queue[:0] = [(attn, [s], note) for s in seeds]
                continue
        split = None
        try:
            resume = checkpoints.load(ckpt) if ckpt.is_file() else None
            out += train_group(attn, seeds, source, plan.cfg, record_path=plan.record_path, ckpt_path=ckpt,
                               command=command, on=on, sample=plan.job.sample, resume=resume, proc=proc,
                               stacked=len(seeds) > 1, note=note, auto=measured.get(attn),
                               causality=plan.causality.get(attn), deadline=deadline,
                               after_others=trained, sessions=plan.commands if len(plan.commands) > 1 else None)
            trained = True
        except Interrupted as e:
            raise Interrupted(f"{e}; continue with: {plan.resume_command(proc.world)}", e.exit_code) from None
        except RunFailed as e:
            raise RunFailed(f"{e}; continue with: {plan.resume_command(proc.world)}") from None
        except KeyboardInterrupt:
            raise Interrupted(f"{attn} (seeds {seeds}): interrupted before its first step; finished runs are in "
                              f"{plan.record_path}; continue with: {plan.resume_command(proc.world)}") from None
        except CannotStack as e:
            if not auto:
                raise AttnbenchError(f"--ensemble {plan.job.ensemble}: {attn} cannot train stacked ({e}); use "
                                     f"--ensemble off") from None
            split = [(attn, [s], f"trained alone: cannot train stacked ({e})") for s in seeds]
        except AttnbenchError:
            raise
        except Exception as e:
            if proc.world > 1:
                raise
            if classify(e)[0] == "oom" and len(seeds) > 1:
                split = _split(plan, attn, seeds, ckpt)
            else:
                for s in seeds:
                    rec, written = records.crash(attn, s, plan.cfg, e, plan.record_path, command)
                    on("done", record=rec, written=written)
                    out.append(rec)
        if split:
            on("note", text=split[0][2])
            queue[:0] = split
    return out


def release(device: torch.device) -> None:
    """Free what earlier groups of this process left in reference cycles (a group's objects refer to each other, and a
    lazy import's traceback can hold the first one's frames), and on a GPU the allocator's cached blocks, before the
    next group starts: its allocator peak and NVML figures (NVML sees cached blocks too) are then its own. Without
    the collection an H200 command of 27 MQAR runs read 2.3 GB more NVML for every attention before. The cuBLAS
    workspaces PyTorch keeps per (handle, stream) until the process ends (pytorch/pytorch#95668; empty_cache leaves
    them) are freed too, so that a group's peak counts its own: with the collection alone each run still read 65 MiB
    more allocator peak than the one before (likely those workspaces; tests/test_memory_cuda.py checks on a GPU)."""
    gc.collect()
    if device.type == "cuda":
        clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)  # private, in torch since 2.0
        if clear is not None:
            clear()
        torch.cuda.empty_cache()


def step_ms(g: Group, steps: int = 20, blocks: int = 3) -> float:
    """The group's training step in its steady state (memory full), ms: the median over `blocks` blocks of `steps`
    steps on real batches; replays of the captured step timed with CUDA events on a GPU, eager steps and the host
    clock elsewhere. The weights move (it trains): time a throwaway group."""
    c, graph = g.cfg, g.graphs.get("train")
    batches = [tuple(t.to(g.device) for t in g.loaders["train"].get(b)) for b in range(steps + 8)]
    batches = [b for b in batches if b[0].shape[-1] == c.ctx][:steps]
    mems = None if not c.mem_len else [torch.zeros(g.members.n, batches[0][0].shape[-2], c.mem_len, c.d_model,
                                                   device=g.device) for _ in range(c.n_layers)]
    if graph is not None and mems is not None:
        graph.load_mems(mems)

    def block() -> None:
        nonlocal mems
        for x, y in batches:
            if graph is not None:
                graph.step(x, y)
            else:
                _, mems, _ = train_step(g.members, g.opt, x, y, mems, c.grad_clip, g.amp, False)

    block()  # warm-up
    times = []
    for _ in range(blocks):
        if g.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            block()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / len(batches))
        else:
            t = time.perf_counter()
            block()
            times.append(1e3 * (time.perf_counter() - t) / len(batches))
    return sorted(times)[len(times) // 2]


def stacking_pays(attn: str, seeds: list[int], source, c: TrainConfig, tmp: Path) -> dict[str, Any]:
    """--ensemble auto on a GPU: the captured step of the first seed alone and of every seed stacked, timed on
    throwaway groups; stacking pays when a run's share of the stacked step is the shorter. Returns the two times
    and the choice (a group too large to build counts as paying: the run splits it when it runs out of memory)."""
    out: dict[str, Any] = {"members": len(seeds)}
    for key, group in (("solo_ms_per_step", seeds[:1]), ("stacked_ms_per_step", seeds)):
        try:
            g, _ = start(attn, group, source, c, ckpt_path=tmp, resume=None, proc=distributed.SINGLE,
                         stacked=len(group) > 1)
            out[key] = step_ms(g)
        except CannotStack as e:
            return {**out, "stacked": False, "cannot_stack": str(e)}
        except Exception as e:
            if classify(e)[0] != "oom":
                raise
            out[key] = None
        g = None
        release(torch.device("cuda"))
    solo, stacked = out["solo_ms_per_step"], out["stacked_ms_per_step"]
    out["stacked"] = stacked is None or (solo is not None and stacked / len(seeds) < solo)
    return out


def _choice_text(attn: str, m: dict[str, Any]) -> str:
    def ms(v):
        return "out of memory" if v is None else f"{v:.3f} ms"

    if "cannot_stack" in m:
        return f"{attn}: trained one by one: cannot train stacked ({m['cannot_stack']})"
    verdict = "trained as one model" if m["stacked"] else "trained one by one (stacking does not pay here)"
    return (f"{attn}: one seed {ms(m['solo_ms_per_step'])} a step, {m['members']} stacked "
            f"{ms(m['stacked_ms_per_step'])}: {verdict}")


def _group_size(plan: Plan, device: torch.device, proc: distributed.Proc) -> tuple[int, bool]:
    """(seeds per group, chosen automatically): --ensemble N or off as given; auto stacks every seed of an
    attention on a GPU in one process without torch.compile, and trains each alone elsewhere (on a CPU a stacked
    group is no faster: docs/design.md)."""
    size = ensemble_size(plan.job.ensemble, plan.job.seeds)
    if size is None:
        stack = device.type == "cuda" and proc.world == 1 and not plan.cfg.compile
        return (plan.job.seeds if stack else 1), True
    if size > 1 and (proc.world > 1 or plan.cfg.compile):
        raise AttnbenchError(f"--ensemble {plan.job.ensemble}: stacked seeds train in one process without "
                             f"--compile; use --ensemble off")
    return size, False


def _split(plan: Plan, attn: str, seeds: list[int], ckpt: Path) -> list[tuple[str, list[int], str]]:
    """Two halves of a group that ran out of memory; each continues from the group's checkpoint when it has one."""
    k = len(seeds) // 2
    halves = [seeds[:k], seeds[k:]]
    if ckpt.is_file():
        for part, half in zip(checkpoints.split(checkpoints.load(ckpt), k), halves):
            checkpoints.atomic_save(part, plan.checkpoint(attn, half))
        ckpt.unlink()
    why = f"{attn}: out of memory as one model of {len(seeds)} seeds; split into {k} + {len(seeds) - k}"
    return [(attn, h, why) for h in halves]
