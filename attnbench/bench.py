"""The speed and memory sweeps behind `attnbench speed` / `attnbench memory` (../shared/docs/benchmarking.md).

For each sequence length × attention × implementation: check the fast path against its reference at a small size,
then measure; out of memory or an unsupported setting becomes a recorded cell and the sweep goes on. Every finished
measurement is appended to results/<kind>-<stamp>.jsonl at once. A bare `scaled_dot_product_attention(is_causal=True)`
row ("sdpa", attn=None) is timed by the same code as the baseline MHA is compared with.
"""

from __future__ import annotations

import gc
from dataclasses import asdict, dataclass
from typing import Any, Callable

from attnbench import results
from attnbench.config import AttnConfig, BenchSettings, check_finite
from attnbench.errors import FAILED_STATUSES, AttnbenchError, RunFailed, Terminated, classify
from attnbench.host import busy_warning, cores, cpu_threads, free_memory, load_average
from attnbench.watchdog import Stuck, run_limited
from attnbench.workload import BASELINES, Workload, build_workload

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
IMPL_CHOICES = ("fast", "reference", "both")
SPEED_MODES = ("fwd", "bwd", "fwd+bwd", "step")
MEMORY_MODES = ("fwd", "fwd+bwd")
CAUSALITY_MIN_LIMIT_S = 60.0  # the causality check's time limit: the cell's, but never less (a tiny --timeout is the
# cells' business; a check of a few milliseconds must not fail on a busy machine)
CHECK_TOL = {"float32": 1e-3, "bfloat16": 3e-2, "float16": 5e-3}  # max |fast-ref| / max |ref|


def parse_seq_lens(spec: str) -> tuple[int, ...]:
    """'512,1024' -> (512, 1024); every length a positive integer."""
    out = []
    for part in str(spec).split(","):
        part = part.strip()
        try:
            v = int(part)
        except ValueError:
            raise AttnbenchError(f"--seq-len takes positive integers separated by commas, got {part!r}", 2) from None
        if v <= 0:
            raise AttnbenchError(f"--seq-len must be positive, got {v}", 2)
        out.append(v)
    if not out:
        raise AttnbenchError("--seq-len is empty", 2)
    return tuple(dict.fromkeys(out))


def resolve_dtype(dtype: str | None, device: str):
    import torch

    if dtype is None:
        dtype = "bf16" if device == "cuda" else "fp32"
    if dtype not in DTYPES:
        raise AttnbenchError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}", 2)
    return getattr(torch, DTYPES[dtype])


def validate(s: BenchSettings, kind: str) -> None:
    """Every user-caused problem before anything is measured."""
    modes = SPEED_MODES if kind == "speed" else MEMORY_MODES
    if s.mode not in modes:
        raise AttnbenchError(f"unknown mode {s.mode!r}; valid: {', '.join(modes)}", 2)
    if s.impl not in IMPL_CHOICES:
        raise AttnbenchError(f"unknown impl {s.impl!r}; valid: {', '.join(IMPL_CHOICES)}", 2)
    if s.batch <= 0:
        raise AttnbenchError(f"--batch must be positive, got {s.batch}", 2)
    check_finite(s)
    if s.max_time_s <= 0:
        raise AttnbenchError(f"--max-time must be positive, got {s.max_time_s}", 2)
    if s.timeout_s is not None and s.timeout_s <= 0:
        raise AttnbenchError(f"--timeout must be positive, got {s.timeout_s}", 2)
    if s.threads is not None and s.threads <= 0:
        raise AttnbenchError(f"--threads must be positive, got {s.threads}", 2)
    if not s.seq_lens or any(t <= 0 for t in s.seq_lens):
        raise AttnbenchError("--seq-len must be positive", 2)
    if s.cuda_graph and kind == "speed":
        if s.mode == "step":
            raise AttnbenchError("--cuda-graph times fwd, bwd or fwd+bwd; the step mode's AdamW is not capturable", 2)
        if s.compile:
            raise AttnbenchError("--cuda-graph and --compile: choose one (torch.compile has its own "
                                 "mode='reduce-overhead' for graphs)", 2)
    sweep_names(s.attn, s.baseline)
    AttnConfig(d_model=s.d_model, n_heads=s.heads, kv_heads=s.kv_heads, d_pos=s.d_pos)  # shape errors, one line


def check_fast(name: str, s: BenchSettings, device: str, dtype) -> dict[str, Any]:
    """Fast path (run dtype) against the reference (fp32) at a small size: output and input gradient.
    Returns {'ok', 'max_rel_err', 'tol', 'seq_len'}, ok None for an attention without a reference (n/a);
    raises what building raises."""
    import torch

    from attnbench.attention import get

    if name not in BASELINES and not getattr(get(name), "has_reference", False):
        return {"ok": None, "reason": "n/a: no reference implementation"}
    T = min(s.check_seq_len, max(s.seq_lens))
    B = min(2, s.batch)
    torch.manual_seed(0)
    if name in BASELINES:  # the same kernel: checked bare
        d = s.d_model // s.heads
        q, k, v = (torch.randn(B, s.heads, T, d, device=device) for _ in range(3))
        mask = torch.ones(T, T, dtype=torch.bool, device=device).tril()
        att = (q @ k.transpose(-2, -1) / d**0.5).masked_fill(~mask, float("-inf")).softmax(-1)
        ref = att @ v
        fast = torch.nn.functional.scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype),
                                                                is_causal=True).float()
        errs = [((fast - ref).abs().max() / ref.abs().max()).item()]
    else:
        from attnbench.attention import build

        kw = dict(d_model=s.d_model, n_heads=s.heads, kv_heads=s.kv_heads, d_pos=s.d_pos)
        ref_m = build(name, impl="reference", **kw).to(device)
        fast_m = build(name, impl="fast", **kw).to(device)
        fast_m.load_state_dict(ref_m.state_dict())
        fast_m = fast_m.to(dtype)
        x = torch.randn(B, T, s.d_model, device=device)
        xr = x.clone().requires_grad_(True)
        xf = x.to(dtype).requires_grad_(True)
        yr, yf = ref_m(xr), fast_m(xf)
        g = torch.randn_like(yr)
        yr.backward(g)
        yf.backward(g.to(dtype))
        errs = [((yf.float() - yr).abs().max() / yr.abs().max().clamp_min(1e-12)).item(),
                ((xf.grad.float() - xr.grad).abs().max() / xr.grad.abs().max().clamp_min(1e-12)).item()]
    tol = CHECK_TOL[str(dtype).replace("torch.", "")]
    err = max(errs)
    return {"ok": bool(err <= tol), "max_rel_err": err, "tol": tol, "seq_len": T}


def _free(device: str) -> None:
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def sweep_names(spec: str | None, baseline: bool) -> list[str]:
    """The rows of a sweep. --attn names attentions (attention.parse_names: 'all' is every one) and may name the
    SDPA baselines: those named are measured where named, and the others are not added. Else, with `baseline`,
    both come right after mha (first when mha is absent), so that ratios exist."""
    from attnbench.attention import parse_names

    parts = [p.strip() for p in (spec or "").split(",") if p.strip()]
    if any(p in BASELINES for p in parts):
        return list(dict.fromkeys(n for p in parts for n in ([p] if p in BASELINES else parse_names(p))))
    names = parse_names(spec)
    if not baseline:
        return names
    if "mha" in names:
        i = names.index("mha") + 1
        return names[:i] + list(BASELINES) + names[i:]
    return [*BASELINES, *names]


@dataclass
class SweepResult:
    path: Any
    records: list[dict]
    rows: list[dict]
    notes: list[str]
    columns: list[str]
    total: int = 0  # cells planned
    stopped: str | None = None  # "interrupted" (Ctrl-C), "terminated" (SIGTERM), "stuck" (a call past its limit)

    @property
    def failed(self) -> list[dict]:
        """The records that make the command exit 1 (errors.FAILED_STATUSES: error, timeout)."""
        return [r for r in self.records if r["status"] in FAILED_STATUSES]


def _quiet(event: str, **data: Any) -> None:
    pass


# ----------------------------------------------------------------------------------------------- the cells
def measure_speed(w: Workload, s: BenchSettings, device: str, seq_len: int) -> dict[str, Any]:
    """Time one workload; metrics and the samples."""
    from attnbench.measure import flops
    from attnbench.measure.timing import TimingPolicy, benchmark, make_call

    setup, call = make_call(w.forward, w.leaves, s.mode, w.params)
    if s.cuda_graph:
        from attnbench.measure.timing import capture

        call, setup = capture(setup, call, device), None
    policy = TimingPolicy(max_time_s=s.max_time_s, warmup_cap_s=max(0.05, s.max_time_s / 2),
                          min_warmup_s=min(0.25, s.max_time_s / 4), min_time_s=min(0.5, s.max_time_s / 2))
    t = benchmark(call, device=device, setup=setup, flush_l2=s.flush_l2, policy=policy)
    sec = t.median_ms * 1e-3
    core = module_flops = None  # n/a: the attention declares no core_heads
    if w.core_heads is not None:
        core = flops.core_flops(s.batch, w.core_heads, seq_len, w.head_dim, s.mode)
        lin = w.linear_fwd_flops if w.linear_fwd_flops is not None else flops.linear_flops_fwd(w.module, w.forward)
        module_flops = core + lin * flops.LINEAR_FACTOR[s.mode]
    m = {k: v for k, v in t.summary.items() if k != "n"}
    m.update(samples_n=len(t.samples_ms), tokens_per_s=s.batch * seq_len / sec, core_flops=core,
             module_flops=module_flops, core_tflops=None if core is None else core / sec / 1e12,
             module_tflops=None if module_flops is None else module_flops / sec / 1e12,
             first_call_ms=t.first_call_ms, warmup_calls=t.warmup_calls)
    if s.compile:
        m["compile_s"] = max(0.0, t.first_call_ms - t.median_ms) / 1e3
    timing = {"timer": t.timer, "flush_l2": t.flush_l2, "stable": t.stable, "noisy": t.noisy}
    if device == "cpu":
        timing["load_avg_1m"] = load_average()  # what else ran: compare with env.threads and the cores
    return {"metrics": m, "samples_ms": t.samples_ms, "timing": timing}


def measure_memory(w: Workload, s: BenchSettings, device: str, seq_len: int, dtype) -> dict[str, Any]:
    """Memory of one workload: allocator + NVML on CUDA, peak RSS of a fresh process on CPU; plus the estimate."""
    import torch

    from attnbench.measure import memory

    backward = s.mode != "fwd"
    if device == "cuda":
        m = memory.cuda_memory(w.forward, w.leaves, w.params, w.inputs, device, backward=backward)
    else:
        spec = {"name": w.name, "impl": w.impl, "batch": s.batch, "seq_len": seq_len, "d_model": s.d_model,
                "heads": s.heads, "kv_heads": s.kv_heads, "d_pos": s.d_pos, "dtype": str(dtype).replace("torch.", ""),
                "backward": backward, "threads": torch.get_num_threads()}  # the sweep's (--threads or the policy)
        m = memory.cpu_peak_rss(spec)
        status = m.pop("status", "ok")
        if status != "ok":
            return {"status": status, "reason": m.get("reason"), "metrics": {}}
    est = memory.estimate_fields(w.activations)
    m["estimate_mib"] = est["estimate_mib"]
    return {"metrics": m, "estimate_formula": est["estimate_formula"]}


# ----------------------------------------------------------------------------------------------- the sweep
def run(kind: str, s: BenchSettings, on: Callable[..., None] = _quiet) -> SweepResult:
    """The sweep for kind 'speed' or 'memory'. Each record is appended to disk as soon as it exists.

    Progress goes to `on(event, **data)` (library code prints nothing): 'check' (what: the causality check of an
    attention at a length, before anything is measured), 'start' (total cells), 'warning' (text, before any CPU
    timing), 'measure' (what is measured now, done, total) and 'done' (record, done, total) per cell.
    `s.threads`: torch's CPU threads while the sweep runs (restored after), in the records' env.threads; unset, the
    host's policy (host.cpu_threads). Ctrl-C or SIGTERM (errors.Terminated) during the cells ends the sweep with
    what was measured (`stopped` says why)."""
    import torch

    from attnbench.device import select

    validate(s, kind)
    device = select(s.device)
    for flag, given in (("--cuda-graph", kind == "speed" and s.cuda_graph), ("--flush-l2", s.flush_l2),
                        ("--compile", s.compile)):
        if given and device != "cuda":
            raise AttnbenchError(f"{flag} needs a CUDA GPU (device is {device})")
    if s.threads is not None and device != "cpu":
        raise AttnbenchError(f"--threads sets the threads of CPU measurements (device is {device}); "
                             f"add --device cpu")
    before = torch.get_num_threads()
    threads, notes = s.threads, []
    if threads is None and device == "cpu":
        threads, busy = cpu_threads(before)
        if threads < before:
            notes.append(f"CPU threads: {threads} of {before}, other work keeps {busy:.1f} cores busy "
                         f"(--threads N sets them)")
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _sweep(kind, s, device, on, notes)
    finally:
        torch.set_num_threads(before)


def _cells(s: BenchSettings) -> list[tuple[int, str, str]]:
    """(seq_len, name, impl) in the sweep's order: seq_len, then attention, then implementation."""
    names = sweep_names(s.attn, s.baseline)
    impls = ["fast", "reference"] if s.impl == "both" else [s.impl]
    return [(T, name, impl) for T in s.seq_lens for name in names
            for impl in (["fast"] if name in BASELINES else impls)]


def _refuse_too_big(cells: list[tuple[int, str, str]], s: BenchSettings, device: str, dtype) -> None:
    """The size guard (guard.py), before anything runs: one line naming the first cell whose estimated peak exceeds
    the device's free memory (the host's on CPU) and how many more do; --force skips it."""
    from attnbench.guard import cell_bytes, refusal, too_big

    if s.force:
        return
    free = free_memory(device)
    estimates = [(T, name, impl, cell_bytes(name, impl, s, T, dtype.itemsize)) for T, name, impl in cells]
    refused = [e for e in estimates if too_big(e[3], free)]
    if not refused:
        return
    T, name, impl, parts = refused[0]
    more = f" ({len(refused) - 1} more of the {len(cells)} cells are too big as well)" if len(refused) > 1 else ""
    where = "the host" if device == "cpu" else f"the GPU ({device})"
    raise AttnbenchError(refusal(f"{name} ({impl}) at T={T:,}, batch {s.batch}, {s.mode}", parts, free, where,
                                 "lower --seq-len or --batch", more))


def _sweep(kind: str, s: BenchSettings, device: str, on: Callable[..., None], notes: list[str]) -> SweepResult:
    """Every cell in order, each record appended as it is made; Ctrl-C, SIGTERM or a cell stuck in one call past
    its limit end the sweep with the records made so far."""
    dtype = resolve_dtype(s.dtype, device)
    cells = _cells(s)
    _refuse_too_big(cells, s, device, dtype)
    env = results.environment(device)
    command = results.command_line()
    results.check_writable_dir(s.results_dir, "--results-dir")
    on("start", kind=kind, total=len(cells), device=device)
    ceiling, opening, busy = _opening(kind, s, device, dtype, len(cells), on)
    notes += opening
    causal = _check_causality(kind, cells, s, device, dtype, ceiling, on)
    path = results.new_run_path(kind, s.results_dir)  # after the check: a refused sweep leaves no file
    if causal:
        from attnbench.causality import note

        notes.append(note(list(causal.values())))
    checks: dict[str, dict] = {}
    records: list[dict] = []
    mha_ms: dict[tuple, float] = {}
    stopped = None
    try:
        for T, name, impl in cells:
            config = _cell_config(kind, s, name, impl, T, dtype, device)
            on("measure", what=f"{name} ({impl}) T={T}", done=len(records), total=len(cells))
            verdict = causal.get((name, impl, T))
            if verdict is not None:
                config["causality"] = verdict.summary()
            try:
                if verdict is not None and verdict.failed:  # the check ran out of memory (or failed) at this size
                    status, reason, extra, metrics = verdict.failed[0], f"causality check: {verdict.failed[1]}", {}, {}
                else:
                    status, reason, extra, metrics = _limited_cell(kind, s, name, impl, T, device, dtype, config,
                                                                   checks, ceiling)
            except Stuck as e:
                status, reason, extra, metrics = "timeout", f"{e}; the sweep stops here", {}, {}
                stopped = "stuck"
            if kind == "speed" and status == "ok":
                _compare(metrics, name, impl, T, mha_ms, ceiling)
            rec = results.make_record(kind, None if name in BASELINES else name, command, config, metrics,
                                      env, status=status, reason=reason, **extra)
            results.append(path, rec)
            records.append(rec)
            on("done", record=rec, done=len(records), total=len(cells))
            if stopped:
                break
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM as Terminated: what was measured is kept and shown
        stopped = "terminated" if isinstance(e, Terminated) else "interrupted"
    res = _finish(kind, records, device, path, notes, busy)
    res.total, res.stopped = len(cells), stopped
    return res


def _check_causality(kind: str, cells: list[tuple[int, str, str]], s: BenchSettings, device: str, dtype,
                     ceiling: dict[str, Any], on: Callable[..., None]) -> dict[tuple[str, str, int], Any]:
    """Every attention and implementation of the sweep at each of its lengths (causality.py), before any cell is
    measured: a leak refuses the whole command (exit 2; nothing leaky is ever in a table). Rows of a pass: at most
    the sweep's batch, so the check needs about what the cell needs; under the cell's time limit (at least
    CAUSALITY_MIN_LIMIT_S). A check out of
    memory or past the limit makes its cells oom or timeout; a cell that will not be started (its FLOPs alone pass
    the limit) is not checked."""
    from attnbench import causality
    from attnbench.guard import cell_min_seconds

    out = {}
    limit = s.cell_timeout_s(kind)
    check_limit = max(limit, CAUSALITY_MIN_LIMIT_S)
    for T, name, impl in cells:
        if name in BASELINES or (name, impl, T) in out:
            continue
        least = None if kind != "speed" or s.force else cell_min_seconds(name, s, T, ceiling.get("ceiling_tflops"))
        if least is not None and least > limit:
            continue
        on("check", what=f"causality {name} ({impl}) T={T}")
        cfg = AttnConfig.from_kwargs(d_model=s.d_model, n_heads=s.heads, kv_heads=s.kv_heads, impl=impl,
                                     d_pos=s.d_pos)
        try:
            out[(name, impl, T)] = run_limited(lambda: causality.require(name, cfg, T, device=device, dtype=dtype,
                                                                         rows=s.batch), check_limit)
        except Stuck as e:
            raise RunFailed(f"the causality check of {name} ({impl}) at T={T}: {e}; nothing was measured (lower "
                            f"--seq-len or --batch, or raise --timeout)") from None
    return out


def _limited_cell(kind: str, s: BenchSettings, name: str, impl: str, T: int, device: str, dtype,
                  config: dict[str, Any], checks: dict[str, dict],
                  ceiling: dict[str, Any]) -> tuple[str, Any, dict, dict]:
    """_measure_cell under the cell's time limit (watchdog.py), on a worker thread so that Ctrl-C acts at once; a
    speed cell whose FLOPs alone would pass the limit (guard.cell_min_seconds) is not started (--force starts it)."""
    import torch

    from attnbench.guard import cell_min_seconds

    limit = s.cell_timeout_s(kind)
    least = None if kind != "speed" or s.force else cell_min_seconds(name, s, T, ceiling.get("ceiling_tflops"))
    if least is not None and least > limit:
        return "timeout", (f"not run: it needs at least {least:.3g} s (its FLOPs at twice the measured matmul rate) "
                           f"and the limit is {limit:.3g} s (--timeout; --force runs it)"), {}, {}
    gpu = torch.cuda.current_device() if device == "cuda" else None

    def cell():
        if gpu is not None:  # the current GPU is the thread's own
            torch.cuda.set_device(gpu)
        return _measure_cell(kind, s, name, impl, T, device, dtype, config, checks)

    return run_limited(cell, limit)


def _opening(kind: str, s: BenchSettings, device: str, dtype, total: int,
             on: Callable[..., None]) -> tuple[dict[str, Any], list[str], bool]:
    """Before the cells: the busy-machine warning and, for speed, the matmul ceiling; (ceiling, notes, busy)."""
    import torch

    notes: list[str] = []
    busy = busy_warning(load_average(), cores(), torch.get_num_threads()) if kind == "speed" and device == "cpu" \
        else None
    if busy:
        on("warning", text=busy)
        notes.append(f"warning: {busy}")
    ceiling: dict[str, Any] = {}
    if kind == "speed":
        from attnbench.measure.flops import CONVENTION, matmul_ceiling

        on("measure", what="matmul ceiling", done=0, total=total)
        try:
            from attnbench.measure.timing import TimingPolicy

            ceiling = matmul_ceiling(device, torch.bfloat16 if device == "cuda" else dtype,
                                     policy=TimingPolicy(max_time_s=min(1.0, s.max_time_s),
                                                         warmup_cap_s=min(0.5, s.max_time_s)))
            notes.append(f"ceiling: {ceiling['ceiling_dtype']} {ceiling['ceiling_size']}^3 matrix product, "
                         f"{ceiling['ceiling_tflops']:.3g} TFLOP/s measured in this run")
        except Exception as e:  # the sweep does not depend on it
            notes.append(f"ceiling n/a: {classify(e)[1]}")
        notes.append(CONVENTION)
        if s.cuda_graph:
            notes.append("timed as replays of each call captured as a CUDA graph: the GPU's work, without the "
                         "host's (Python, autograd, kernel launches)")
    return ceiling, notes, busy is not None


def _cell_config(kind: str, s: BenchSettings, name: str, impl: str, T: int, dtype, device: str) -> dict[str, Any]:
    """The record's config for one cell (attn_config is added once the workload exists)."""
    config = {"name": name, "impl": impl, "seq_len": T, "batch": s.batch, "heads": s.heads,
              "d_model": s.d_model, "kv_heads": s.kv_heads, "dtype": str(dtype).replace("torch.", ""),
              "device": device, "mode": s.mode, "compile": s.compile, "flush_l2": s.flush_l2, "causal": True}
    if kind == "speed" and s.cuda_graph:
        config["cuda_graph"] = True
    if s.threads is not None:
        config["threads"] = s.threads
    return config


def _measure_cell(kind: str, s: BenchSettings, name: str, impl: str, T: int, device: str, dtype,
                  config: dict[str, Any], checks: dict[str, dict]) -> tuple[str, Any, dict, dict]:
    """Check (fast path, once per attention), build and measure one cell; (status, reason, extra, metrics).

    A failure becomes the cell's status; only an unknown attention stops the sweep."""
    import torch

    status, reason, extra, metrics = "ok", None, {}, {}
    w = None
    try:
        if impl == "fast" and name not in checks:
            checks[name] = check_fast(name, s, device, dtype)
        if impl == "fast":
            extra["check"] = checks[name]
            if checks[name]["ok"] is False:
                raise RuntimeError(f"fast path differs from reference (max rel err "
                                   f"{checks[name]['max_rel_err']:.2g} > {checks[name]['tol']:.0e})")
        torch.manual_seed(0)
        w = build_workload(name, impl, s.batch, T, s.d_model, s.heads, s.kv_heads, device, dtype,
                           compile=s.compile, d_pos=s.d_pos)
        config["attn_config"] = w.config
        out = measure_speed(w, s, device, T) if kind == "speed" else measure_memory(w, s, device, T, dtype)
        metrics = out.pop("metrics")
        status = out.pop("status", "ok")
        reason = out.pop("reason", None)
        extra.update(out)
    except (Exception, MemoryError) as e:
        status, reason = classify(e)
        if isinstance(e, AttnbenchError) and "unknown attention" in str(e):
            raise
    finally:
        del w
        _free(device)
    return status, reason, extra, metrics


def _compare(metrics: dict[str, Any], name: str, impl: str, T: int, mha_ms: dict[tuple, float],
             ceiling: dict[str, Any]) -> None:
    """Add a speed cell's ratio to MHA (same T and impl, else MHA fast) and its share of the matmul ceiling."""
    if name == "mha":
        mha_ms[(T, impl)] = metrics["median_ms"]
    ref = mha_ms.get((T, impl), mha_ms.get((T, "fast")))
    metrics["ratio_to_mha"] = metrics["median_ms"] / ref if ref else None
    if ceiling and metrics["module_tflops"] is not None:
        metrics["ceiling_tflops"] = ceiling["ceiling_tflops"]
        metrics["pct_of_ceiling"] = 100 * metrics["module_tflops"] / ceiling["ceiling_tflops"]


def _finish(kind: str, records: list[dict], device: str, path: Any, notes: list[str], busy: bool) -> SweepResult:
    """The table rows and the closing notes."""
    rows, columns, more = speed_rows(records, device, busy) if kind == "speed" else memory_rows(records, device)
    notes += more
    if kind == "memory":
        notes.append("MiB = 2^20 bytes; allocator figures exclude inputs and weights (shown apart)")
    notes.append(f"records: {path} (compare runs only on the same device)")
    return SweepResult(path, records, rows, notes, columns)


ROW_KEYS = ["attn", "impl", "seq_len"]  # which cell a row of a sweep is


def _row(r: dict, figures: list[str]) -> dict[str, Any]:
    """A sweep's row: which cell, how it ended, and its figures under the records' own names (None where a failed
    cell has none; tables.py shows the failure in their place)."""
    c, m = r["config"], r["metrics"]
    return {"attn": c["name"], "impl": c["impl"], "seq_len": c["seq_len"], "status": r["status"],
            "reason": r.get("reason"), **{k: m.get(k) for k in figures}}


def speed_rows(records: list[dict], device: str, busy: bool = False) -> tuple[list[dict], list[str], list[str]]:
    """Rows of a speed sweep (the records' metric names; None where the attention declares no core_heads or no MHA
    ran), the table's columns, and the IQR warnings (timing.noisy): one per noisy row, or, on a machine the busy
    warning named, one line for them all."""
    from attnbench.measure.timing import noisy

    rows, notes, spread = [], [], []
    compiled = any(r["config"].get("compile") for r in records)
    figures = ["median_ms", "p25_ms", "p75_ms", "tokens_per_s", "core_tflops", "module_tflops", "ratio_to_mha",
               "pct_of_ceiling"] + (["compile_s"] if compiled else [])
    for r in records:
        c, m = r["config"], r["metrics"]
        rows.append(_row(r, figures))
        if r["status"] == "ok" and noisy(m, r.get("timing", {}).get("timer", "perf_counter")):
            spread.append(f"{c['name']} ({c['impl']}) T={c['seq_len']}: IQR/median {100 * m['iqr_rel']:.0f} %")
    if busy and spread:
        notes.append(f"warning: {len(spread)} of {len(records)} rows noisy (IQR/median > 10 %), as expected on a "
                     f"busy machine: {'; '.join(spread)}")
    else:
        notes += [f"warning: {w} > 10 %, noisy" for w in spread]
    return rows, ROW_KEYS + figures, notes


def memory_rows(records: list[dict], device: str) -> tuple[list[dict], list[str], list[str]]:
    """Rows of a memory sweep (the records' metric names), the table's columns, and notes where measurement and
    estimate disagree."""
    from attnbench.measure.memory import ESTIMATE_NOTE_RATIO

    rows, notes = [], []
    cuda = device == "cuda"
    backward = any(r["config"].get("mode") != "fwd" for r in records)
    if cuda:  # the allocator peak of the measured call: of fwd+bwd, or of the forward alone in mode fwd
        figures = ["inputs_mib", "weights_mib", "activations_mib", "estimate_mib",
                   "peak_alloc_mib" if backward else "peak_fwd_mib", "reserved_mib", "nvml_peak_mib", "nvml_avg_mib"]
    else:
        figures = ["inputs_mib", "weights_mib", "estimate_mib", "cpu_peak_rss_mib", "cpu_peak_rss_delta_mib"]
    for r in records:
        c, m = r["config"], r["metrics"]
        rows.append(_row(r, figures))
        if r["status"] == "ok" and cuda:
            if m.get("nvml_note") and m["nvml_note"] not in notes:
                notes.append(m["nvml_note"])
            meas, est = m.get("activations_mib"), m.get("estimate_mib")
            if meas and est and not (1 / ESTIMATE_NOTE_RATIO <= meas / est <= ESTIMATE_NOTE_RATIO):
                notes.append(f"note: {c['name']} ({c['impl']}) T={c['seq_len']}: activations {meas:.4g} MiB "
                             f"vs estimate {est:.4g} MiB")
    if cuda:
        notes.append("activations: allocated after forward; peak: allocator peak of the call; both above the "
                     "pre-call allocation. NVML: device-wide (all processes, CUDA context included)")
    else:
        notes.append("CPU: peak resident memory of a fresh process per row (whole process, and its growth during "
                     "the measured call); allocator and NVML figures are GPU-only")
    return rows, ROW_KEYS + figures, notes


def settings_dict(s: BenchSettings) -> dict[str, Any]:
    return asdict(s)
