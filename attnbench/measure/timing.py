"""Timing by the rules of ../shared/docs/benchmarking.md, section "Time".

- GPU: CUDA events around each call; CPU: time.perf_counter (thread count goes in the record's env).
- Warm-up until three consecutive calls agree within 10 % (at least `min_warmup` calls, at most a time cap).
- Adaptive repeats (in the spirit of torch.utils.benchmark's adaptive_autorange): blocks of calls until the median
  moves less than `rel_tol` between blocks, or a time cap. Every sample is kept.
- Modes: "fwd", "bwd" (on a retained graph, gradients set to None before each call), "fwd+bwd", and "step"
  (fwd+bwd plus an optimizer step: benchmarking.md makes the training step its own mode).
- Optional L2 flush between calls, sized from L2_cache_size.
- Under a cell's time limit (watchdog.run_limited), the limit is checked before every call.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

MODES = ("fwd", "bwd", "fwd+bwd", "step")
NOISY_IQR = 0.10  # benchmarking.md: warn when IQR/median exceeds 10 %
CPU_NOISE_FLOOR_MS = 0.05  # on CPU an IQR below this is timer and scheduler jitter, not worth a warning


@dataclass
class TimingPolicy:
    """How long and how often to call; the one place these defaults live."""

    min_warmup: int = 3
    min_warmup_s: float = 0.25  # warm up at least this long: GPU clocks ramp up under load (run-to-run spread)
    warmup_cap_s: float = 1.0
    min_samples: int = 10
    max_samples: int = 10_000
    block: int = 5  # calls between two stability checks
    min_time_s: float = 0.5  # time at least this much in timed calls (0.1 s gave a 3.7 % run-to-run spread)
    max_time_s: float = 2.0  # time cap for the timed calls
    rel_tol: float = 0.01  # median stable when a block moves it by less than this


@dataclass
class Timing:
    """Every sample (ms) and its summary."""

    samples_ms: list[float]
    warmup_calls: int
    first_call_ms: float  # the first call alone (includes compilation with torch.compile)
    timer: str  # "cuda-events" | "perf_counter"
    flush_l2: bool
    stable: bool  # median stable before the time cap
    summary: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.summary:
            self.summary = summarize(self.samples_ms)

    @property
    def median_ms(self) -> float:
        return self.summary["median_ms"]

    @property
    def noisy(self) -> bool:
        return noisy(self.summary, self.timer)

    def to_dict(self) -> dict:
        return asdict(self)


def _quantile(sorted_x: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if len(sorted_x) == 1:
        return float(sorted_x[0])
    pos = q * (len(sorted_x) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_x) - 1)
    return float(sorted_x[lo] + (sorted_x[hi] - sorted_x[lo]) * (pos - lo))


def summarize(samples_ms: Sequence[float]) -> dict[str, float]:
    """Median, p25, p75, IQR, IQR/median, min, mean, max and count of the samples."""
    if not samples_ms:
        raise ValueError("no samples")
    s = sorted(samples_ms)
    med = _quantile(s, 0.5)
    p25, p75 = _quantile(s, 0.25), _quantile(s, 0.75)
    return {"median_ms": med, "p25_ms": p25, "p75_ms": p75, "iqr_ms": p75 - p25,
            "iqr_rel": (p75 - p25) / med if med > 0 else 0.0, "min_ms": s[0], "max_ms": s[-1],
            "mean_ms": statistics.fmean(s), "n": float(len(s))}


def noisy(summary: dict[str, float], timer: str) -> bool:
    """A spread worth a warning: IQR/median above NOISY_IQR as the warning prints it (in whole percent, so never
    "10 % > 10 %") and, timed by perf_counter (CPU), an IQR of at least CPU_NOISE_FLOOR_MS: below that the spread
    of a short call is the operating system's jitter, which more repeats do not change."""
    pct = round(100 * summary["iqr_rel"])
    return pct > round(100 * NOISY_IQR) and (timer != "perf_counter" or summary["iqr_ms"] >= CPU_NOISE_FLOOR_MS)


def make_call(forward: Callable, leaves: Sequence, mode: str, params: Sequence = ()) -> tuple[Callable, Callable]:
    """(setup, call) for one mode. `forward()` returns a tensor; `leaves` are the tensors whose .grad is reset
    (inputs and parameters). setup runs untimed before each call."""
    import torch

    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    leaves = list(leaves)

    def zero() -> None:
        for t in leaves:
            t.grad = None

    if mode == "fwd":
        return zero, forward
    if mode == "bwd":
        out = forward()  # one graph, kept for every call
        grad = torch.randn_like(out)
        return zero, lambda: out.backward(grad, retain_graph=True)

    grad_holder: list = []

    def fwd_bwd() -> None:
        out = forward()
        if not grad_holder:
            grad_holder.append(torch.randn_like(out))
        out.backward(grad_holder[0])

    if mode == "fwd+bwd":
        return zero, fwd_bwd
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4) if params else None

    def step() -> None:
        fwd_bwd()
        if opt is not None:
            opt.step()

    return zero, step


def capture(setup: Callable, call: Callable, device, warmup: int = 3) -> Callable:
    """`call` (after `setup`) captured once as a CUDA graph; returns the replay. Timing replays measures the GPU's
    work without the host's share (Python, autograd, kernel launches), which dominates small calls: on an H100
    (results/h100/sweep-1561c63) a fwd+bwd `mha` call at B=4, T=1024 took 1.19 ms end to end with an IQR of 25 % of
    it, while its SDPA kernel alone took 0.225 ms. Warm-up calls run first on a
    side stream, as the capture needs (PyTorch's CUDA semantics notes, "CUDA Graphs"); the gradients the captured
    backward writes live in the graph's pool and are overwritten by every replay, as `setup` would reset them."""
    import torch

    from attnbench.device import side_stream

    side = side_stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            setup()
            call()
    torch.cuda.current_stream(device).wait_stream(side)
    setup()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    return graph.replay


class _Timer:
    """CUDA events on GPU, perf_counter on CPU; `elapsed()` resolves all pending pairs."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.pending: list = []

    def start(self):
        if self.cuda:
            import torch

            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def stop(self, start) -> None:
        if self.cuda:
            import torch

            e = torch.cuda.Event(enable_timing=True)
            e.record()
            self.pending.append((start, e))
        else:
            self.pending.append((start, time.perf_counter()))

    def elapsed(self) -> list[float]:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            out = [s.elapsed_time(e) for s, e in self.pending]
        else:
            out = [(e - s) * 1e3 for s, e in self.pending]
        self.pending = []
        return out


def l2_flusher(device) -> Callable[[], None] | None:
    """A function that evicts the L2 cache by writing a buffer twice its size; None on CPU."""
    import torch

    if torch.device(device).type != "cuda":
        return None
    size = int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or 0) or 64 * 2**20
    buf = torch.empty(2 * size // 4, dtype=torch.int32, device=device)
    return lambda: buf.zero_()


def benchmark(call: Callable, device="cpu", setup: Callable | None = None, flush_l2: bool = False,
              policy: TimingPolicy | None = None) -> Timing:
    """Warm up until stable, then time `call` adaptively. Returns every sample and their summary."""
    import torch

    from attnbench.watchdog import check

    policy = policy or TimingPolicy()
    cuda = torch.device(device).type == "cuda"
    flush = l2_flusher(device) if flush_l2 else None
    timer = _Timer(cuda)

    def once() -> None:
        check()  # the cell's time limit, or Ctrl-C in the main thread
        if setup is not None:
            setup()
        if flush is not None:
            flush()
        s = timer.start()
        call()
        timer.stop(s)

    once()
    first = timer.elapsed()[0]
    # warm-up: until three consecutive calls agree within 10 % (and at least min_warmup calls and min_warmup_s)
    t0, warm = time.perf_counter(), []
    while True:
        once()
        warm += timer.elapsed()
        last = warm[-3:]
        if (len(warm) >= policy.min_warmup and len(last) == 3 and max(last) <= 1.1 * min(last)
                and time.perf_counter() - t0 >= policy.min_warmup_s):
            break
        if time.perf_counter() - t0 > policy.warmup_cap_s:
            break
    # timed calls, in blocks, until the median is stable or the cap is reached
    samples: list[float] = []
    t0, prev, stable = time.perf_counter(), None, False
    while True:
        for _ in range(policy.block):
            once()
        samples += timer.elapsed()
        med = statistics.median(samples)
        spent = time.perf_counter() - t0  # wall time, for the caps
        timed = sum(samples) / 1e3  # time inside the timed calls, for the minimum (gaps between calls excluded)
        if (len(samples) >= policy.min_samples and timed >= policy.min_time_s and prev is not None
                and abs(med - prev) <= policy.rel_tol * prev):
            stable = True
            break
        enough = len(samples) >= policy.min_samples or spent >= 5 * policy.max_time_s  # a few IQR-worthy samples
        if (spent >= policy.max_time_s and enough) or len(samples) >= policy.max_samples:
            break
        prev = med
    return Timing(samples_ms=samples, warmup_calls=1 + len(warm), first_call_ms=first,
                  timer="cuda-events" if cuda else "perf_counter", flush_l2=flush is not None, stable=stable)
