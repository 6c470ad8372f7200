"""Thin Typer commands: parse, delegate, print. No torch import at module level, so `--help` is instant.

Errors are caught once, at the top (`_TopLevel.invoke`, under `main()` and the tests' CliRunner alike): an
AttnbenchError becomes one red line on stderr and its exit code (errors.py: 1 a run failed, 2 bad input,
130 interrupted, 143 terminated); the traceback only with ATTNBENCH_DEBUG=1. Option defaults come from the
dataclasses in config.py.
"""

from __future__ import annotations

import math
import os
import time
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from attnbench.config import (FORMAT, MEMORY_TIMEOUT_S, SPEED_TIMEOUT, AttnConfig, BenchSettings, ParamsSettings,
                              ReportSettings, TrainJob)

EXIT_CODES = "Exit codes: 0 done, 1 a run failed, 2 bad input, 130 interrupted, 143 terminated (SIGTERM)."


def _say_error(message: str) -> None:
    """One red line on stderr; under torchrun only rank 0 speaks (a peer's failure reaches it as a failed
    collective, which it reports)."""
    if os.environ.get("RANK", "0") != "0":
        return
    from rich.console import Console

    Console(stderr=True, highlight=False).print(f"[bold red]error:[/] {message}", soft_wrap=True, markup=True)


class _TopLevel(TyperGroup):
    """The one error funnel (style.md, habit 11): nothing below it catches broadly."""

    def invoke(self, ctx):
        from attnbench.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, AttnbenchError, Terminated

        try:
            return super().invoke(ctx)
        except AttnbenchError as e:
            if os.environ.get("ATTNBENCH_DEBUG"):
                raise
            _say_error(str(e))
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt as e:
            what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
            _say_error(f"{what}; every finished measurement is already on disk")
            raise typer.Exit(EXIT_TERMINATED if isinstance(e, Terminated) else EXIT_INTERRUPTED) from None


_STARTED = time.perf_counter()  # this command's start: --stop-after counts from here
PLAIN_PROGRESS_S = 60.0  # train's progress line where stderr is not a terminal, at most this often

app = typer.Typer(
    cls=_TopLevel,
    name="attnbench",
    help="What an attention mechanism costs and what it buys: parameters, memory, speed, language-model quality.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

def _version(value: bool) -> None:
    if value:
        from attnbench import __version__

        typer.echo(f"attnbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print attnbench's version and exit.")] = False) -> None:
    pass


# Shared options, declared once (style.md: Typer CLIs).
AttnOpt = Annotated[Optional[str], typer.Option("--attn", help="Attention(s), comma-separated, or 'all'.")]
DModelOpt = Annotated[int, typer.Option("--d-model", help="Model width D.")]
HeadsOpt = Annotated[int, typer.Option("--heads", help="Number of heads n.")]
KVHeadsOpt = Annotated[Optional[int], typer.Option("--kv-heads", help="K/V heads for gqa (default: the divisor "
                                                                     "1 < g < heads with group size nearest 4; 1 "
                                                                     "when there is none).")]
FormatOpt = Annotated[str, typer.Option("--format", help="Screen output: table|markdown|csv|json.")]
ResultsOpt = Annotated[str, typer.Option("--results-dir", help="Where run records (JSON Lines) are written "
                                                               "(default: the git-ignored results/scratch).")]


# --------------------------------------------------------------------------------------------------- list
@app.command("list")
def list_cmd(attn: AttnOpt = None, fmt: FormatOpt = FORMAT,
             tasks: Annotated[bool, typer.Option("--tasks", help="List the training tasks and their options "
                                                                  "instead.")] = False) -> None:
    """Every registered attention (or those of --attn, from outside too): its paper, a one-line description and the
    optional members of the contract it declares. With --tasks: the tasks `train --task` learns, and their options."""
    from attnbench.tables import render_rows

    if tasks:
        from attnbench.tasks import describe as describe_tasks

        render_rows(describe_tasks(), fmt, title="Tasks (train --task NAME --task-opt NAME=VALUE,...)")
        return
    from attnbench.attention import describe
    from attnbench.workload import BASELINE_SUMMARY

    render_rows(describe(attn), fmt, title="Attentions", notes=[
        f"baseline of speed and memory (--attn {name}), not an attention: {text}" for name, text in
        BASELINE_SUMMARY.items()] if attn is None else [])


# --------------------------------------------------------------------------------------------------- params
def _param_count(attn: AttnOpt = None, d_model: DModelOpt = AttnConfig.d_model, heads: HeadsOpt = AttnConfig.n_heads,
                 kv_heads: KVHeadsOpt = None,
                 layers: Annotated[int, typer.Option("--layers", help="Number of layers.")] = ParamsSettings.layers,
                 fmt: FormatOpt = FORMAT,
                 save: Annotated[bool, typer.Option("--save", help="Also write the rows as records.")]
                 = ParamsSettings.save,
                 results_dir: ResultsOpt = ParamsSettings.results_dir) -> None:
    """Parameters of every attention (counted and closed-form), ratio to MHA, and the MHE paper's identities."""
    from attnbench.params import param_table, save_records
    from attnbench.results import check_writable_dir
    from attnbench.tables import check_format, render_params

    check_format(fmt)
    if save:
        check_writable_dir(results_dir, "--results-dir")
    table = param_table(attn, d_model=d_model, n_heads=heads, kv_heads=kv_heads, layers=layers)
    from attnbench.causality import note
    from attnbench.params import check_causality

    verdicts = check_causality(table)
    table.notes.append(note(verdicts))
    render_params(table, fmt)
    if save:
        path = save_records(table, results_dir)
        typer.echo(f"records: {path}", err=fmt in ("json", "csv"))
    failed = [f"{r['attn']}: closed form {r['closed_form']:,} against {r['total']:,} counted" for r in table.rows
              if r["matches"] is False] + [f"{i['identity']} fails" for i in table.identities if not i["holds"]]
    leaky = [v for v in verdicts if v.leak]
    if leaky:
        from attnbench.attention.contract import refuse

        raise refuse(leaky[0].name, leaky[0].problem())
    if failed:
        from attnbench.errors import RunFailed

        raise RunFailed("; ".join(failed))


app.command("param-count")(_param_count)
app.command("params", help="Alias of param-count.")(_param_count)

# --------------------------------------------------------------------------------------------------- speed / memory
# (issue 3) BEGIN speed-memory block
_Bench = BenchSettings  # the sweeps' defaults (config.py)

SeqLenOpt = Annotated[str, typer.Option("--seq-len", help="Sequence length(s), comma-separated: 512,1024,2048.")]
BatchOpt = Annotated[int, typer.Option("--batch", help="Batch size B.")]
DtypeOpt = Annotated[Optional[str], typer.Option("--dtype", help="bf16|fp16|fp32 (default bf16 on GPU, fp32 on CPU).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto|cpu|cuda|cuda:N.")]
ImplOpt = Annotated[str, typer.Option("--impl", help="fast|reference|both.")]
CompileOpt = Annotated[bool, typer.Option("--compile", help="torch.compile; compile time reported apart.")]
GraphOpt = Annotated[bool, typer.Option("--cuda-graph", help="Time replays of each call captured as a CUDA graph "
                                                              "(GPU work without launch overhead; GPU only).")]
FlushOpt = Annotated[bool, typer.Option("--flush-l2", help="Flush the L2 cache between timed calls (GPU).")]
BenchAttnOpt = Annotated[Optional[str], typer.Option("--attn", help="Attention(s), comma-separated, or 'all'; "
                                                                  "also the baselines sdpa and sdpa+proj.")]
BaselineOpt = Annotated[bool, typer.Option("--baseline/--no-baseline",
                                           help="Add the baselines sdpa (bare scaled_dot_product_attention) and "
                                                "sdpa+proj (with bare projections) unless --attn names either.")]
MaxTimeOpt = Annotated[float, typer.Option("--max-time", help="Time cap per measurement, seconds.")]
DPosOpt = Annotated[Optional[int], typer.Option("--d-pos", help="rmha/rcmha sinusoid width d_R (default: head width).")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", help="CPU: torch's threads (default: one per core, "
                                                                "less the cores other work keeps busy).")]
TimeoutOpt = Annotated[Optional[float], typer.Option(
    "--timeout", help=f"Stop a cell still running after this many seconds and record it as timeout (default: "
                      f"{SPEED_TIMEOUT[0]:g} + {SPEED_TIMEOUT[1]:g} × --max-time for speed, {MEMORY_TIMEOUT_S:g} "
                      f"for memory).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Run what the size guard refuses: an estimated peak above "
                                                        "the free memory (speed: also a cell sure to pass "
                                                        "--timeout).")]


def _sweep(kind: str, settings: BenchSettings, fmt: str) -> None:
    """Run the sweep and print its rows, also those measured before Ctrl-C or SIGTERM; then one line and exit 1
    for failed cells (error, timeout), 130 or 143 when stopped."""
    from attnbench.bench import run
    from attnbench.tables import SweepProgress, check_format, render_rows
    from attnbench.watchdog import sigterm_as_interrupt

    check_format(fmt)
    with sigterm_as_interrupt(), SweepProgress() as progress:  # on stderr, and only when it is a terminal
        res = run(kind, settings, on=progress.on)
    title = f"{'Speed' if kind == 'speed' else 'Memory'} ({settings.mode}, B={settings.batch}, " \
            f"heads={settings.heads}, d_model={settings.d_model})"
    render_rows(res.rows, fmt, title=title, columns=res.columns, notes=res.notes)
    _sweep_outcome(res)


def _sweep_outcome(res) -> None:
    """One line and the exit code of a sweep that did not end well: interrupted (130), terminated (143), a cell
    failed (1: error or timeout; oom and n/a are results, exit 0)."""
    from attnbench.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, Interrupted, RunFailed

    kept = f"{len(res.records)} of {res.total} cells measured" + (f", kept in {res.path}" if res.records else "")
    if res.stopped == "terminated":
        raise Interrupted(f"terminated (SIGTERM): {kept}", EXIT_TERMINATED)
    if res.stopped == "interrupted":
        raise Interrupted(f"interrupted: {kept}", EXIT_INTERRUPTED)
    if res.failed:
        cells = "; ".join(f"{r['config']['name']} ({r['config']['impl']}) T={r['config']['seq_len']}: "
                          f"{r['status']}" for r in res.failed)
        stuck = "; the sweep stopped there" if res.stopped == "stuck" else ""
        raise RunFailed(f"{len(res.failed)} of {res.total} cells failed ({cells}){stuck}; {kept}")


def _profile_speed(attn: BenchAttnOpt = None, seq_len: SeqLenOpt = str(_Bench.seq_lens[0]),
                   batch: BatchOpt = _Bench.batch, heads: HeadsOpt = _Bench.heads,
                   d_model: DModelOpt = _Bench.d_model, kv_heads: KVHeadsOpt = None, d_pos: DPosOpt = None,
                   dtype: DtypeOpt = None, device: DeviceOpt = _Bench.device,
                   mode: Annotated[str, typer.Option("--mode", help="fwd|bwd|fwd+bwd|step.")] = _Bench.mode,
                   impl: ImplOpt = _Bench.impl, compile: CompileOpt = _Bench.compile,
                   cuda_graph: GraphOpt = _Bench.cuda_graph,
                   flush_l2: FlushOpt = _Bench.flush_l2, baseline: BaselineOpt = _Bench.baseline,
                   max_time: MaxTimeOpt = _Bench.max_time_s, timeout: TimeoutOpt = _Bench.timeout_s,
                   force: ForceOpt = _Bench.force, threads: ThreadsOpt = _Bench.threads,
                   fmt: FormatOpt = FORMAT, results_dir: ResultsOpt = _Bench.results_dir) -> None:
    """Time every attention: median and IQR, tokens/s, TFLOP/s, ratio to MHA and to a measured matmul ceiling."""
    from attnbench.bench import parse_seq_lens

    _sweep("speed", BenchSettings(attn=attn, seq_lens=parse_seq_lens(seq_len), batch=batch, heads=heads,
                                  d_model=d_model, kv_heads=kv_heads, d_pos=d_pos, dtype=dtype, device=device,
                                  mode=mode, impl=impl, compile=compile, cuda_graph=cuda_graph, flush_l2=flush_l2,
                                  baseline=baseline, max_time_s=max_time, timeout_s=timeout, force=force,
                                  threads=threads, results_dir=results_dir), fmt)


def _profile_memory(attn: BenchAttnOpt = None, seq_len: SeqLenOpt = str(_Bench.seq_lens[0]),
                    batch: BatchOpt = _Bench.batch, heads: HeadsOpt = _Bench.heads,
                    d_model: DModelOpt = _Bench.d_model, kv_heads: KVHeadsOpt = None, d_pos: DPosOpt = None,
                    dtype: DtypeOpt = None, device: DeviceOpt = _Bench.device,
                    mode: Annotated[str, typer.Option("--mode", help="fwd|fwd+bwd.")] = _Bench.mode,
                    impl: ImplOpt = _Bench.impl, baseline: BaselineOpt = _Bench.baseline,
                    timeout: TimeoutOpt = _Bench.timeout_s, force: ForceOpt = _Bench.force,
                    threads: ThreadsOpt = _Bench.threads, fmt: FormatOpt = FORMAT,
                    results_dir: ResultsOpt = _Bench.results_dir) -> None:
    """Memory of every attention: allocator (activations, peak, reserved), NVML device-wide, CPU peak RSS, estimate."""
    from attnbench.bench import parse_seq_lens

    _sweep("memory", BenchSettings(attn=attn, seq_lens=parse_seq_lens(seq_len), batch=batch, heads=heads,
                                   d_model=d_model, kv_heads=kv_heads, d_pos=d_pos, dtype=dtype, device=device,
                                   mode=mode, impl=impl, baseline=baseline, timeout_s=timeout, force=force,
                                   threads=threads, results_dir=results_dir), fmt)


app.command("profile-speed")(_profile_speed)
app.command("speed", help="Alias of profile-speed.")(_profile_speed)
app.command("profile-memory")(_profile_memory)
app.command("memory", help="Alias of profile-memory.")(_profile_memory)
# (issue 3) END speed-memory block

# --------------------------------------------------------------------------------------------------- train
# --------------------------------------------------------------------------------------------------- train
_T = Annotated  # the train overrides: None means "the preset's value" (defaults live in config.TrainConfig)
_J = TrainJob  # the train command's own defaults (config.TrainJob)


def _o(flag: str, text: str):
    return typer.Option(flag, help=text, rich_help_panel="Overrides (default: the preset's value)")


@app.command("train")
def _train(
    context: typer.Context,
    attn: _T[str, typer.Option("--attn", help="Attention(s), comma-separated, or 'all'.")] = _J.attn,
    preset: _T[str, typer.Option("--preset", help="default | paper | mqar | tiny.")] = _J.preset,
    seeds: _T[int, typer.Option("--seeds", help="Seeds per attention (mean ± std when > 1).")] = _J.seeds,
    sample: _T[int, typer.Option("--sample", help="Print N generated characters after training.")] = _J.sample,
    ensemble: _T[str, typer.Option("--ensemble", help="Seeds of an attention trained as one stacked model: auto "
                                                      "(all at once on a GPU, split when out of memory), off, or "
                                                      "N per model.")] = _J.ensemble,
    data: _T[Optional[str], typer.Option("--data", help="Corpus file (any UTF-8 text; no checksum check).")] = _J.data,
    resume: _T[Optional[str], typer.Option("--resume", help="Continue an interrupted run: its checkpoint folder "
                                                            "(or a .pt in it), as printed when it stopped.")] = None,
    results_dir: ResultsOpt = _J.results_dir,
    checkpoints_dir: _T[str, typer.Option("--checkpoints-dir", help="Where checkpoints go.")] = _J.checkpoints_dir,
    threads: ThreadsOpt = _J.threads,
    force: ForceOpt = _J.force,
    stop_after: _T[Optional[float], typer.Option(
        "--stop-after", help="A time budget in seconds from this command's start: stop (checkpoint, partial records, "
                             "exit 75) where the next stretch of training would not end in time, at an epoch "
                             "boundary for runs with memory (a checkpoint without it); continue with --resume.")]
    = _J.stop_after,
    fmt: FormatOpt = FORMAT,
    n_layers: _T[Optional[int], _o("--layers", "Decoder blocks.")] = None,
    d_model: _T[Optional[int], _o("--d-model", "Model width D.")] = None,
    n_heads: _T[Optional[int], _o("--heads", "Heads n.")] = None,
    kv_heads: _T[Optional[int], _o("--kv-heads", "K/V heads (gqa).")] = None,
    d_ff: _T[Optional[int], _o("--d-ff", "FFN width (0: 4·D).")] = None,
    act: _T[Optional[str], _o("--act", "FFN activation, the same for every attention: gelu|relu|relu2.")] = None,
    dropout: _T[Optional[float], _o("--dropout", "Dropout.")] = None,
    ctx: _T[Optional[int], _o("--ctx", "Context / segment length.")] = None,
    mem_len: _T[Optional[int], _o("--mem-len", "Transformer-XL memory (0: off).")] = None,
    attn_impl: _T[Optional[str], _o("--impl", "Attention path: fast|reference.")] = None,
    pos: _T[Optional[str], _o("--pos", "Relative positions (attentions that have them): sinusoid|learned.")] = None,
    max_rel: _T[Optional[int], _o("--max-rel", "Learned relative tables: 2·max-rel distances (at least ctx + mem-len).")]
    = None,
    flavour: _T[Optional[str], _o("--flavour", "attnbench | labml: the layer as the RCMHA authors' code builds it.")]
    = None,
    batch: _T[Optional[int], _o("--batch", "Batch size.")] = None,
    steps: _T[Optional[int], _o("--steps", "Optimiser steps.")] = None,
    epochs: _T[Optional[float], _o("--epochs", "Epochs (> 0 overrides --steps).")] = None,
    lr: _T[Optional[float], _o("--lr", "Peak learning rate.")] = None,
    min_lr: _T[Optional[float], _o("--min-lr", "Cosine floor.")] = None,
    schedule: _T[Optional[str], _o("--schedule", "cosine|noam.")] = None,
    warmup: _T[Optional[int], _o("--warmup", "Warm-up steps.")] = None,
    weight_decay: _T[Optional[float], _o("--weight-decay", "AdamW weight decay.")] = None,
    beta1: _T[Optional[float], _o("--beta1", "AdamW β1.")] = None,
    beta2: _T[Optional[float], _o("--beta2", "AdamW β2.")] = None,
    grad_clip: _T[Optional[float], _o("--grad-clip", "Gradient-norm clipping (0: off).")] = None,
    task: _T[Optional[str], _o("--task", "What is learned: shakespeare (the corpus) | mqar | selective-copying.")]
    = None,
    task_opts: _T[Optional[str], _o("--task-opt", "A synthetic task's options, NAME=VALUE,... (attnbench list "
                                                  "--tasks shows them).")] = None,
    eval_ctx: _T[Optional[str], _o("--eval-ctx", "Also score the test split at these contexts, e.g. 256,512,1024 "
                                                 "(length extrapolation).")] = None,
    eval_every: _T[Optional[int], _o("--eval-every", "Steps between validation passes.")] = None,
    eval_stride: _T[Optional[int], _o("--eval-stride", "Sliding-window stride (0: ctx/2).")] = None,
    eval_batch: _T[Optional[int], _o("--eval-batch", "Windows/streams per evaluation batch.")] = None,
    log_every: _T[Optional[int], _o("--log-every", "Steps between progress updates (and NaN checks).")] = None,
    seed: _T[Optional[int], _o("--seed", "First seed.")] = None,
    device: _T[Optional[str], _o("--device", "auto|cpu|cuda|cuda:N.")] = None,
    amp: _T[Optional[bool], _o("--amp/--no-amp", "bf16 autocast on GPU.")] = None,
    compile: _T[Optional[bool], _o("--compile/--no-compile", "torch.compile the model (GPU).")] = None,
    cuda_graph: _T[Optional[bool], _o("--cuda-graph/--no-cuda-graph",
                                      "Replay the training step as a CUDA graph (GPU, one process).")] = None,
) -> None:
    """Train language models, one per attention, on Tiny Shakespeare or a synthetic recall task, and compare them."""
    job = TrainJob(attn=attn, preset=preset, seeds=seeds, sample=sample, ensemble=ensemble, data=data,
                   results_dir=results_dir,
                   checkpoints_dir=checkpoints_dir, threads=threads, force=force, stop_after=stop_after)
    overrides = dict(n_layers=n_layers, d_model=d_model, n_heads=n_heads, kv_heads=kv_heads, d_ff=d_ff, act=act,
                     dropout=dropout, ctx=ctx, mem_len=mem_len, attn_impl=attn_impl, pos=pos, max_rel=max_rel,
                     flavour=flavour, batch=batch, steps=steps, epochs=epochs, lr=lr, min_lr=min_lr,
                     schedule=schedule, warmup=warmup, weight_decay=weight_decay, beta1=beta1, beta2=beta2,
                     grad_clip=grad_clip, task=task, task_opts=task_opts, eval_ctx=eval_ctx, eval_every=eval_every,
                     eval_stride=eval_stride, eval_batch=eval_batch, log_every=log_every, seed=seed, device=device,
                     amp=amp, compile=compile, cuda_graph=cuda_graph)
    _train_command(job, overrides, resume, fmt, _typed(context))


def _typed(context: typer.Context) -> dict:
    """The options typed on the command line (not defaults): parameter name -> value. (By the source's name: typer
    may carry its own copy of click's ParameterSource.)"""
    return {k: v for k, v in context.params.items()
            if getattr(context.get_parameter_source(k), "name", None) == "COMMANDLINE"}


def _train_command(job: TrainJob, overrides: dict, resume: Optional[str], fmt: str, typed: dict) -> None:
    """Under torchrun every process runs this; only rank 0 shows progress and writes files."""
    import torch

    from attnbench import results
    from attnbench.data import load_corpus
    from attnbench.device import resolve_device
    from attnbench.errors import AttnbenchError
    from attnbench.tables import check_format
    from attnbench.training import distributed, engine
    from attnbench.training.plan import new_plan, resume_plan
    from attnbench.training.sources import TEXT, make_source

    check_format(fmt)
    plan = resume_plan(resume, typed) if resume else new_plan(job, overrides)
    source = make_source(plan.cfg, load_corpus(plan.job.data) if plan.cfg.task == TEXT else None)
    sha = source.config().get("data_sha256", "")
    if plan.data_sha256 and sha != plan.data_sha256:
        raise AttnbenchError("the corpus differs from the one this run was trained on; pass the same --data")
    threads = torch.get_num_threads()
    try:  # this command's CPU threads (_host_checks) end with it
        _host_checks(job, plan, source.vocab_size)
        from attnbench import causality

        plan.causality = causality.for_training(plan.attns, plan.cfg)  # before anything trains: a refusal exits 2
        with distributed.session(resolve_device(plan.cfg.device).type) as proc:
            if proc.is_main:
                plan.start(sha, results.command_line())
            plan.run_dir, plan.records, plan.commands = distributed.broadcast((plan.run_dir, plan.records,
                                                                               plan.commands))
            with _TrainProgress(proc, plan.record_path) as progress:
                recs = engine.run_plan(plan, source, command=plan.commands[0], on=progress, proc=proc,
                                       deadline=None if job.stop_after is None else _STARTED + job.stop_after)
    finally:
        torch.set_num_threads(threads)
    if proc.is_main:
        _show_train(recs, plan, source, fmt, proc.world, progress.written)


def _host_checks(job: TrainJob, plan, vocab: int) -> None:
    """Before training (this session's --threads and --force, also on --resume): torch's CPU threads (--threads,
    else the cores other work leaves idle: host.cpu_threads), the busy-machine warning (rank 0, stderr), the size
    guard (guard.check_training; --force skips it). Under torchrun each process runs this."""
    import torch

    from attnbench import guard, host
    from attnbench.device import resolve_device
    from attnbench.errors import AttnbenchError

    device = resolve_device(plan.cfg.device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if job.stop_after is not None and not job.stop_after > 0:
        raise AttnbenchError(f"--stop-after must be a positive number of seconds, got {job.stop_after}")
    if job.threads is not None and job.threads <= 0:
        raise AttnbenchError(f"--threads must be positive, got {job.threads}")
    if job.threads is not None and device.type != "cpu":
        raise AttnbenchError(f"--threads sets torch's CPU threads (device is {device.type}); add --device cpu")
    if not job.force:
        where = str(device)  # cpu, cuda:N; plain cuda: this process's GPU (torchrun pins LOCAL_RANK later)
        if where == "cuda":
            where = f"cuda:{int(os.environ['LOCAL_RANK']) if world > 1 else torch.cuda.current_device()}"
        # one run: what must fit at the least (runs trained at once only add to it)
        per_device = int(os.environ.get("LOCAL_WORLD_SIZE", world)) if device.type == "cpu" else 1
        guard.check_training(plan.cfg, plan.attns, vocab, where, world, per_device)
    if device.type == "cpu":
        torch.set_num_threads(job.threads or host.cpu_threads(torch.get_num_threads())[0])
        busy = host.busy_warning(host.load_average(), host.cores(), torch.get_num_threads())
        if busy and os.environ.get("RANK", "0") == "0":
            from rich.console import Console

            Console(stderr=True, highlight=False).print(f"[yellow]warning:[/] {busy}", soft_wrap=True)


class _TrainProgress:
    """The progress bar of `train` (rank 0, on stderr): the `on` callback of train.run_plan."""

    def __init__(self, proc, record_path):
        self.proc, self.record_path, self.bar, self.task = proc, record_path, None, None
        self.written: set = set()  # where records went (a fallback folder when record_path failed)
        self.last_line = -math.inf  # when the last plain progress line was printed (not a terminal)
        self.said: set[str] = set()  # the notes printed under the bar: a group's members share theirs, said once

    def __enter__(self):
        if self.proc.is_main:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            cols = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[tok_s]} tok/s"),
                    TimeElapsedColumn(), TimeRemainingColumn())
            self.bar = Progress(*cols, console=Console(stderr=True, highlight=False))
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def __call__(self, event: str, **d) -> None:
        if self.bar is not None:
            getattr(self, f"_{event}")(**d)

    def _start(self, attn, seeds, total, step, params) -> None:
        who = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]}"
        self.task = self.bar.add_task(f"{attn} {who}", total=total, completed=step, loss="-", tok_s="-")
        ranks = f", {self.proc.world} processes" if self.proc.world > 1 else ""
        stacked = f", {len(seeds)} seeds trained as one model" if len(seeds) > 1 else ""
        self.bar.console.print(f"{attn} ({who}): {params:,} parameters, {total} steps{ranks}{stacked}")

    def _step(self, step, total, loss, tok_s, losses) -> None:
        self.bar.update(self.task, completed=step, loss=f"{loss:.3f}", tok_s=f"{tok_s:,.0f}")
        # not a terminal (a log file, a batch job): the bar is drawn only at the end, so a plain line at the first
        # update and then at most once a minute (the paper schedule has no validation lines to show progress)
        now = time.perf_counter()
        if not self.bar.console.is_terminal and now - self.last_line >= PLAIN_PROGRESS_S:
            self.last_line = now
            self.bar.console.print(f"  step {step}/{total}: loss {loss:.4f}, {tok_s:,.0f} tok/s", soft_wrap=True)

    def _eval(self, step, val) -> None:
        """One line per validation pass: the metric, or its mean and range over the members of a group."""
        def fig(key: str, fmt: str) -> str:
            vals = [v[key] for v in val]
            if len(vals) == 1:
                return format(vals[0], fmt)
            return f"{format(sum(vals) / len(vals), fmt)} ({format(min(vals), fmt)}-{format(max(vals), fmt)})"

        if not val:
            return
        bpc = f"  bpc {fig('bpc', '.4f')}" if "bpc" in val[0] else ""
        self.bar.console.print(f"  step {step}: val loss {fig('loss', '.4f')}{bpc}  acc {fig('acc', '.4f')}")

    def _note(self, text) -> None:
        self.bar.console.print(f"  [yellow]{text}[/]", markup=True)

    def _done(self, record, written, earlier=False) -> None:
        if earlier:
            self.bar.console.print(f"{record['attn']} (seed {record['config'].get('seed')}): finished earlier, "
                                   f"kept as it was")
            return
        if written is not None:
            self.written.add(written)
            if written != self.record_path:
                self._once(f"  [yellow]could not write {self.record_path}; the record went to {written}[/]")
        if record["status"] != "ok":
            self._once(f"  [red]{record['attn']}: {record['reason']}[/] (measured so far kept in "
                       f"{written or self.record_path})")

    def _once(self, line: str) -> None:
        """A line printed once per command: the members of a stacked group stop for one reason, and say it once."""
        if line not in self.said:
            self.said.add(line)
            self.bar.console.print(line, markup=True)


# The train table's columns, in order (headers: tables.HEADERS); a metric's std over seeds beside it (summary.py).
_TRAIN_COLUMNS = ("attn", "runs_ok", "runs", "paper_acc", "test_acc", "test_exact", "heldout_acc", "test_bpc",
                  "val_loss_best", "params", "tokens_per_s", "wall_s", "run_share_s", "alloc_peak_mib",
                  "nvml_avg_mib", "nvml_peak_mib", "cpu_peak_rss_mib", "status")


def _show_train(recs: list[dict], plan, source, fmt: str, world: int, written: set) -> None:
    """The summary table and samples; then one line (exit 1) for runs that failed or records that went elsewhere."""
    from rich.console import Console

    from attnbench.errors import RunFailed
    from attnbench.tables import STD, render_rows
    from attnbench.training.summary import extrapolation_rows, summarize

    rows, notes = summarize(recs)
    # a metric column only when some row has a value (paper_acc: the paper preset; test_exact: a synthetic task)
    columns = [c for k in _TRAIN_COLUMNS for c in (k, f"{k}{STD}") if any(r.get(c) is not None for r in rows)]
    if world > 1:
        b = plan.cfg.batch
        notes.append(f"{world} processes (DistributedDataParallel): global batch {b} = {world} × {b // world}; "
                     f"tokens/s counts every process")
    where = ", ".join(sorted(map(str, written))) or str(plan.record_path)
    if plan.causality:
        from attnbench.causality import note

        notes.append(note(list(plan.causality.values())))
    render_rows(rows, fmt, title=source.title,
                columns=columns, notes=[*notes, f"records: {where}"])
    extrapolation = extrapolation_rows(recs)
    if extrapolation:
        render_rows(extrapolation, fmt, title=f"Length extrapolation: test loss (nats) / accuracy at each context "
                                              f"(trained at {plan.cfg.ctx})")
    err = Console(stderr=True, highlight=False)
    for r in recs:
        if r.get("sample"):
            err.print(f"\n[bold]sample from {r['attn']} (seed {r['config']['seed']}):[/]", markup=True)
            print(r["sample"])
    failed = [f"{r['attn']}: {r['reason']}" for r in recs if r["status"] != "ok"]
    moved = sorted(str(w) for w in written if w != plan.record_path)
    if moved:
        failed.append(f"{plan.record_path} could not be written; the records are in {', '.join(moved)}")
    if failed:
        raise RunFailed("; ".join(failed) + f" (records kept in {where})")


# --------------------------------------------------------------------------------------------------- report / env
# --------------------------------------------------------------------------------------------------- report / env
@app.command("report")
def _report(
    paths: Annotated[Optional[list[str]], typer.Argument(help="Record files or folders (default: results/).")] = None,
    out: Annotated[str, typer.Option("--out", help="Folder for report.md and the PNG plots (default: the git-ignored "
                                                   "results/scratch/report; the committed results/report only when "
                                                   "named here).")] = ReportSettings.out,
    compare: Annotated[Optional[tuple[str, str]], typer.Option(
        "--compare", help="Two runs (files or folders) side by side: change in % per row, flagged beyond the spread.",
        metavar="A B")] = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Draw PNG plots (needs matplotlib).")]
    = ReportSettings.plots,
    fmt: FormatOpt = FORMAT,
) -> None:
    """Markdown report with tables and PNG plots from run records; or --compare A B."""
    from attnbench.errors import AttnbenchError
    from attnbench.results import check_writable_dir
    from attnbench.tables import check_format

    check_format(fmt)
    if compare is not None and paths:
        raise AttnbenchError("give either PATHS or --compare A B, not both")
    check_writable_dir(out, "--out")
    if compare is not None:
        _compare(compare, out, fmt)
    else:
        _build_report(paths or [ReportSettings.records], out, plots, fmt)


def _problems(problems: list[str], notes: list[str] = ()) -> None:
    from rich.console import Console

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    for p in problems:
        err.print(f"[yellow]skipped[/] {p}", markup=True)
    for n in notes:
        err.print(f"[yellow]note:[/] {n}", markup=True)


def _compare(compare: tuple[str, str], out: str, fmt: str) -> None:
    from pathlib import Path

    from attnbench import report
    from attnbench.tables import render_rows

    a, b = [compare[0]], [compare[1]]
    res = report.compare(a, b)
    _problems(res.problems)
    Path(out).mkdir(parents=True, exist_ok=True)
    md = Path(out) / "compare.md"
    md.write_text(report.compare_markdown(res, a, b), encoding="utf-8")
    render_rows(res.rows, fmt, title=f"A: {a[0]}  vs  B: {b[0]}", columns=report.COMPARE_COLUMNS,
                notes=[*res.notes, f"written: {md}"])


def _build_report(paths: list[str], out: str, plots: bool, fmt: str) -> None:
    from attnbench import report
    from attnbench.tables import render_rows

    res = report.build_report(paths, out, plots=plots)
    _problems(res.problems, res.notes)
    rows = [{"name": "report", "kind": "markdown", "path": str(res.markdown)}]
    rows += [{"name": p.title, "kind": p.kind, "path": str(p.path)} for p in res.plots]
    render_rows(rows, fmt, title=f"Report of {res.records} records", columns=["kind", "path", "name"])


@app.command("env")
def _env(fmt: FormatOpt = FORMAT) -> None:
    """This machine: device, driver, CUDA and torch versions, GPU memory, clocks, temperature, SDPA backends."""
    from attnbench.envinfo import env_info, env_rows
    from attnbench.tables import check_format, render_rows

    check_format(fmt)
    info = env_info()
    if fmt == "json":
        import json

        print(json.dumps(info, indent=2, default=str))
        return
    render_rows(env_rows(info), fmt, title="attnbench env", columns=["name", "value"])


def main() -> None:
    """The command line. A measurement given up inside a torch call (Ctrl-C, SIGTERM, a cell stuck past its limit)
    still runs on its thread: the process then ends at once with the command's exit code (os._exit, after flushing
    the output), as finalising the interpreter under it can abort inside torch."""
    from attnbench import watchdog

    try:
        app()
    except SystemExit as e:
        if watchdog.left_running():
            import sys

            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(e.code if isinstance(e.code, int) else int(e.code is not None))
        raise


if __name__ == "__main__":
    main()
