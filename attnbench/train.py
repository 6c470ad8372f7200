"""Train one character language model per (attention, seed) of a plan, and measure it (issue 4).

One run (run_one) reads top to bottom in three parts:
    start    device, model, optimiser, data order, the step function; the state, fresh or from a checkpoint
    loop     timing and logging (and the non-finite check); evaluate and checkpoint; termination;
             forward, backward, update
    finish   the test pass on the best-validation weights, a sample, metrics, the record
Its pieces live apart so that each can be read (and replaced) alone: the data order (data.Batches), one step
(optim.train_step, graphed.GraphedStep), evaluation (evaluation.py), checkpoints (checkpoints.py), records
(results.py), the plan of a whole command (plan.py). Library code: nothing here prints; progress goes to a
callback `on(event, **data)`.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import torch

from attnbench import checkpoints, distributed, results, sources
from attnbench.config import PRESETS, TRAIN_FIELDS as FIELDS, TrainConfig, make_config  # noqa: F401 (re-exported)
from attnbench.data import Corpus
from attnbench.device import resolve_device
from attnbench.errors import AttnbenchError, Interrupted, RunFailed, classify
from attnbench.evaluation import extrapolation, generate
from attnbench.model import CharLM
from attnbench.optim import autocast, lr_at, make_optimizer, train_step
from attnbench.plan import Plan, RunSpec

Callback = Callable[..., None]


def _quiet(event: str, **data: Any) -> None:
    pass


@dataclass
class RunState:
    """What a run has done and measured so far: a checkpoint saves it, a resumed run starts from it."""

    step: int = 0  # optimiser steps done
    curves: list[dict[str, Any]] = field(default_factory=list)  # one row per validation pass
    best_val: float | None = None
    best_state: dict | None = None  # the best-validation weights, on the host
    seconds: float = 0.0  # wall time of earlier sessions of this run (resumed runs)
    train_s: float = 0.0  # time in training steps (evaluation excluded), every session
    eval_s: float = 0.0
    tokens: int = 0  # tokens trained on, every process, every session
    last_loss: float = float("nan")  # mean training loss of the last log interval
    val_n: int = 0  # predictions in a validation pass
    status: str = "ok"
    reason: str | None = None

    def evaluated(self, step: int) -> bool:
        return bool(self.curves) and self.curves[-1]["step"] == step

    def saved(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("status", "reason")}


@dataclass
class Run:
    """What start() builds for one run; fixed while the loop runs."""

    spec: RunSpec
    source: sources.CorpusSource | sources.TaskSource  # what it learns from and is scored on
    device: torch.device
    model: CharLM  # unwrapped (state_dict, evaluation); the step function may wrap it
    opt: torch.optim.Optimizer
    step_fn: Callable  # (x, y, mems, lr) -> (loss on the device, new mems)
    batches: Any  # data.Batches or sources.TaskBatches: get(step), new_epoch(step), steps_per_epoch
    total: int  # optimiser steps of the whole run
    ckpt_path: Path
    proc: distributed.Proc
    config: dict[str, Any]  # the record's config
    setup_s: float  # building the step (CUDA graph capture and its warm-up steps)
    t0: float = 0.0  # when this session's loop began

    @property
    def cfg(self) -> TrainConfig:
        return self.spec.cfg

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


# ================================================================================================ start
def total_steps(c: TrainConfig, batches) -> int:
    if c.epochs > 0:
        return max(1, round(c.epochs * batches.steps_per_epoch))
    return c.steps


def step_function(model: CharLM, opt, c: TrainConfig, device: torch.device, world: int) -> tuple[Callable, str]:
    """The training step and how it runs: replays of a captured CUDA graph when possible (GPU, no memory, one
    process, no torch.compile), else eager (under DDP when several processes run; torch.compile'd on request)."""
    note = "off"
    if c.cuda_graph and device.type == "cuda" and c.mem_len == 0 and world == 1 and not c.compile:
        from attnbench.graphed import GraphedStep

        try:
            graphed = GraphedStep(model, opt, (c.batch, c.ctx), device, c.grad_clip, c.amp)
            return (lambda x, y, mems, lr: (graphed.step(x, y, lr), None)), "on"
        except Exception as e:  # the eager step computes the same function
            first = str(e).splitlines()[0][:120] if str(e) else ""
            note = f"off: capture failed ({type(e).__name__}: {first})"
    net = distributed.wrap(model, device)  # DDP under torchrun
    fwd = torch.compile(net) if (c.compile and device.type == "cuda") else net
    amp = autocast(device, c.amp)
    return (lambda x, y, mems, lr: train_step(fwd, opt, x, y, mems, lr, c.grad_clip, amp)), note


def start(spec: RunSpec, source, ckpt_path: Path, resume: dict | None,
          proc: distributed.Proc) -> tuple[Run, RunState]:
    """Build everything one run needs; from `resume` (a checkpoint) when given."""
    c = spec.cfg
    device = resolve_device(c.device)
    if proc.world > 1 and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())  # LOCAL_RANK (distributed.init_from_env)
    torch.manual_seed(spec.seed)
    model = CharLM(c.model_config(spec.attn, source.vocab_size)).to(device)
    graph_possible = c.cuda_graph and device.type == "cuda" and c.mem_len == 0 and proc.world == 1 and not c.compile
    opt = make_optimizer(model, c, device, capturable=graph_possible)
    state = RunState()
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["opt"])
        known = {f.name for f in fields(RunState)}
        state = RunState(**{k: v for k, v in resume["state"].items() if k in known})
    batches = source.batches(c, spec.seed, proc.rank, proc.world)
    if device.type == "cuda":
        # before the capture: its eager warm-up steps are what the allocator sees of a step, since replays reuse the
        # graph's private pool without allocating
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    step_fn, graph_note = step_function(model, opt, c, device, proc.world)
    setup_s = time.perf_counter() - t
    total = total_steps(c, batches)
    config = {"preset_fields": asdict(c), "attn": spec.attn, "seed": spec.seed, "total_steps": total,
              **source.config(), "attn_config": asdict(c.attn_config()), "device": str(device), "amp": "bf16" if (c.amp and device.type == "cuda") else "fp32",
              "resumed_from_step": state.step if resume is not None else None,
              "resumed_world_size": resume.get("world_size", 1) if resume is not None else None,
              "world_size": proc.world, "global_batch": c.batch, "per_rank_batch": c.batch // proc.world,
              "cuda_graph": graph_note}
    run = Run(spec, source, device, model, opt, step_fn, batches, total, ckpt_path, proc, config, setup_s)
    return run, state


# ================================================================================================ loop
def log_losses(run: Run, st: RunState, pending: list[torch.Tensor], on: Callback) -> bool:
    """Mean training loss since the last log, over every process (one host sync); False, with the state's status
    set, when a loss was not finite: every rank takes the same decision."""
    losses = torch.stack(pending).float()
    if run.proc.world > 1:  # the global batch's mean loss
        losses = distributed.all_reduce_sum(losses) / run.proc.world
    losses = losses.cpu()
    st.last_loss = float(losses.mean())
    if not torch.isfinite(losses).all():
        bad = st.step - len(losses) + int((~torch.isfinite(losses)).nonzero()[0])
        st.status, st.reason = "error", f"non-finite training loss at step {bad + 1}"
        return False
    on("step", step=st.step, total=run.total, loss=st.last_loss, tok_s=st.tokens / max(st.train_s, 1e-9))
    return True


def validate(run: Run, st: RunState, on: Callback) -> None:
    """A validation pass; the best weights so far are kept on the host."""
    t = time.perf_counter()
    m = run.source.evaluate(run.model, "val", run.cfg, run.device, run.proc.rank, run.proc.world)
    st.eval_s += time.perf_counter() - t
    st.val_n = m["n"]
    st.curves.append({"step": st.step, "seconds": round(st.seconds + run.elapsed(), 3), "train_loss": st.last_loss,
                      "val_loss": m["loss"], "val_acc": m["acc"]})
    if st.best_val is None or m["loss"] < st.best_val:
        st.best_val, st.best_state = m["loss"], checkpoints.cpu_state(run.model)
    on("eval", step=st.step, val=m)


def save_checkpoint(run: Run, st: RunState) -> None:
    if not run.proc.is_main:
        return
    state = st.saved()
    state["seconds"] = st.seconds + run.elapsed()
    checkpoints.save(run.ckpt_path, attn=run.spec.attn, seed=run.spec.seed, cfg=asdict(run.cfg),
                     world=run.proc.world, model=run.model, opt=run.opt, state=state, vocab=run.source.chars)


def loop(run: Run, st: RunState, on: Callback) -> None:
    """Train from st.step to run.total. Returns early, with st.status 'error', on a non-finite loss."""
    c, pending, mems = run.cfg, [], None
    run.t0 = ts = time.perf_counter()
    while True:
        at_eval = st.step > 0 and (st.step % c.eval_every == 0 or st.step == run.total)

        # timing and logging: every log_every steps and before an evaluation; the non-finite check
        if pending and (at_eval or st.step % c.log_every == 0):
            st.train_s += time.perf_counter() - ts
            if not log_losses(run, st, pending, on):
                return
            pending, ts = [], time.perf_counter()

        # evaluate and checkpoint
        if at_eval and not st.evaluated(st.step):
            validate(run, st, on)
            save_checkpoint(run, st)
            ts = time.perf_counter()

        # termination
        if st.step >= run.total:
            return

        # forward, backward, update
        if run.batches.new_epoch(st.step):
            mems = None
        x, y = (t.to(run.device, non_blocking=True) for t in run.batches.get(st.step))
        loss, mems = run.step_fn(x, y, mems, lr_at(st.step, c, run.total))
        pending.append(loss)
        st.step += 1
        st.tokens += x.numel() * run.proc.world


# ================================================================================================ finish
def test_pass(run: Run, st: RunState) -> dict[str, Any]:
    """The test split, scored once on the best-validation weights (the source says which metrics it gives); then,
    with --eval-ctx, the same split at each extrapolation length (Shakespeare)."""
    run.model.load_state_dict(st.best_state)
    t = time.perf_counter()
    test = run.source.evaluate(run.model, "test", run.cfg, run.device, run.proc.rank, run.proc.world)
    best = min(st.curves, key=lambda r: r["val_loss"])
    out = {"test_eval_s": time.perf_counter() - t, "best_step": best["step"], "val_acc_best": best["val_acc"],
           **run.source.test_metrics(test, best, st.best_val, st.val_n)}
    if run.cfg.eval_lengths:
        t = time.perf_counter()
        out["eval_ctx"] = extrapolation(run.model, run.source.corpus.test, run.cfg, run.cfg.eval_lengths, run.device,
                                        run.proc.rank, run.proc.world)
        out["eval_ctx_s"] = time.perf_counter() - t
    return out


def cpu_peak_rss_mib() -> float:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if os.uname().sysname == "Darwin" else r / 2**10


def nvml_sampler(device: torch.device):
    """attnbench.measure.nvml's background sampler on a GPU; else None (n/a)."""
    if device.type != "cuda":
        return None
    from attnbench.measure.nvml import NvmlSampler

    return NvmlSampler(device.index or 0, interval_s=0.05)


def metrics_of(run: Run, st: RunState, test: dict[str, Any] | None, nv: dict[str, Any] | None) -> dict[str, Any]:
    m: dict[str, Any] = {"params": run.model.n_params(), "attn_params": run.model.attn_params(), "steps": st.step,
                         "tokens": st.tokens, "wall_s": st.seconds + run.setup_s + run.elapsed(), "setup_s": run.setup_s,
                         "train_s": st.train_s, "eval_s": st.eval_s,
                         "tokens_per_s": st.tokens / st.train_s if st.train_s > 0 else None,
                         "train_loss": st.last_loss if math.isfinite(st.last_loss) else None,
                         "val_loss_best": st.best_val, **(test or {})}
    if run.device.type == "cuda":
        m["alloc_peak_mib"] = torch.cuda.max_memory_allocated(run.device) / 2**20
        m["reserved_peak_mib"] = torch.cuda.max_memory_reserved(run.device) / 2**20
    else:
        m["alloc_peak_mib"] = None
    nv = nv or {"nvml_peak_mib": None, "nvml_avg_mib": None, "nvml_note": "n/a: no GPU"}
    m.update({k: v for k, v in nv.items() if k.startswith("nvml_") and k != "nvml_scope"})
    m["cpu_peak_rss_mib"] = cpu_peak_rss_mib()
    return m


def write_record(run: Run, st: RunState, record_path: Path, metrics: dict, sample: str | None, nvml_scope,
                 partial: bool, command: str) -> tuple[dict[str, Any], Path | None]:
    """The run's record, appended to `record_path` by rank 0 (or to the fallback folder when that write fails):
    returns the record and where it went."""
    rec = results.make_record("train", run.spec.attn, command, run.config, metrics,
                              results.environment(str(run.device)), status=st.status, reason=st.reason,
                              curves=st.curves, sample=sample, checkpoint=str(run.ckpt_path), nvml_scope=nvml_scope,
                              **({"partial": True} if partial else {}))
    written = results.append_or_fallback(record_path, rec) if run.proc.is_main else None
    return rec, written


# ================================================================================================ one run
def run_one(spec: RunSpec, data: "Corpus | sources.CorpusSource | sources.TaskSource", *, record_path: Path,
            ckpt_path: Path, command: str, on: Callback = _quiet, sample: int = 0, resume: dict | None = None,
            proc: distributed.Proc = distributed.SINGLE) -> dict[str, Any]:
    """Train one model, evaluate it, write its record; returns the record (also on NaN: status "error").

    `data`: the run's source, or the corpus (sources.as_source). Ctrl-C or a peer process failing, at any point of
    the loop or the test pass: the checkpoint is brought up to date and a partial record written (its key "partial"
    set); run_plan then says how to continue."""
    # start
    run, st = start(spec, sources.as_source(data, spec.cfg), ckpt_path, resume, proc)
    on("start", attn=spec.attn, seed=spec.seed, total=run.total, step=st.step, params=run.model.n_params())
    sampler, test, text, partial = nvml_sampler(run.device), None, None, False
    with sampler if sampler is not None else contextlib.nullcontext():
        try:
            # loop
            loop(run, st, on)
            # finish
            if st.status == "ok" and st.best_state is not None:
                test = test_pass(run, st)
                if sample and proc.is_main:
                    text = generate(run.model, run.source.corpus, sample, run.device, run.cfg, spec.seed)
        except KeyboardInterrupt:
            partial = True
            st.status, st.reason = "error", _where_stopped("interrupted", run, st, test)
        except Exception as e:
            if not (proc.world > 1 and distributed.is_collective_failure(e)):
                raise
            partial = True
            st.status, st.reason = "error", _where_stopped(f"another process failed ({type(e).__name__})", run, st,
                                                           test)
        if partial and not st.evaluated(st.step):
            save_checkpoint(run, st)
    nv = sampler.result() if sampler is not None else None
    rec, written = write_record(run, st, record_path, metrics_of(run, st, test, nv), text,
                                nv and nv.get("nvml_scope"), partial, command)
    on("done", record=rec, written=written)
    return rec


def _where_stopped(what: str, run: Run, st: RunState, test) -> str:
    if st.step < run.total or not st.evaluated(st.step):
        return f"{what} at step {st.step}"
    return f"{what} during the {'sample' if test else 'test pass'}"


# ================================================================================================ a plan
def finished_records(plan: Plan) -> dict[tuple[str, int], dict[str, Any]]:
    """The complete records (not partial) of earlier sessions of this plan, by (attention, seed)."""
    recs, _ = results.read([p for p in plan.records if Path(p).is_file()])
    return {(r["attn"], r["config"].get("seed")): r for r in recs if r["kind"] == "train" and not r.get("partial")}


def crash_record(spec: RunSpec, e: Exception, record_path: Path, command: str) -> tuple[dict[str, Any], Path]:
    """A run that raised (a bug in one attention, or out of memory): an error record with its traceback."""
    import traceback

    status, reason = classify(e)
    rec = results.make_record("train", spec.attn, command, {"preset_fields": asdict(spec.cfg), "attn": spec.attn,
                                                           "seed": spec.seed}, {},
                              results.environment(str(resolve_device(spec.cfg.device))), status=status,
                              reason=f"crashed: {reason}" if status == "error" else reason,
                              traceback=traceback.format_exc())
    return rec, results.append_or_fallback(record_path, rec)


def run_plan(plan: Plan, data: "Corpus | sources.CorpusSource | sources.TaskSource | None", *, command: str,
             on: Callback = _quiet, proc: distributed.Proc = distributed.SINGLE) -> list[dict[str, Any]]:
    """Every (attention, seed) of the plan in order: finished runs of earlier sessions are kept as they are, an
    interrupted one continues from its checkpoint, the others start. A run that crashes is recorded and the others
    go on (one process); Ctrl-C or a failed peer stops here with the command that continues. `data`: the corpus
    (None for a synthetic task) or a source."""
    done, out, source = finished_records(plan), [], sources.as_source(data, plan.cfg)
    for spec in plan.specs():
        if (spec.attn, spec.seed) in done:
            out.append(done[(spec.attn, spec.seed)])
            on("done", record=out[-1], written=None, earlier=True)
            continue
        ckpt = plan.checkpoint(spec)
        try:
            resume = checkpoints.load(ckpt) if ckpt.is_file() else None
            rec = run_one(spec, source, record_path=plan.record_path, ckpt_path=ckpt, command=command, on=on,
                          sample=plan.job.sample, resume=resume, proc=proc)
        except KeyboardInterrupt:
            raise Interrupted(f"{spec.attn} (seed {spec.seed}): interrupted before its first step; finished runs "
                              f"are in {plan.record_path}; continue with: {plan.resume_command(proc.world)}") from None
        except AttnbenchError:
            raise
        except Exception as e:
            if proc.world > 1:
                raise
            rec, written = crash_record(spec, e, plan.record_path, command)
            on("done", record=rec, written=written)
        out.append(rec)
        if rec.get("partial"):
            stop = Interrupted if rec["reason"].startswith("interrupted") else RunFailed
            raise stop(f"{spec.attn} (seed {spec.seed}): {rec['reason']}; checkpoint and partial record saved; "
                       f"continue with: {plan.resume_command(proc.world)}")
    return out
