"""What this machine offers a run right now: its cores and their load, the CPU threads to use, the busy-machine
warning, and the memory free on a device. Library code: every function returns data (the CLI prints).

The thread policy (docs/usage.md, "CPU threads"): on the team's two-core machine, with other work on it, torch's
default of one thread per core ran up to 220 times slower than one thread (OpenMP's threads wait for each other at
every operator, and one of them waits for the core the other work holds), while on an idle machine the second
thread made larger calls 1.6-1.8 times faster; so by default torch gets the cores other work leaves idle.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

IDLE_CORE_LOAD = 0.5  # a core counts as taken once other work keeps it busy half the time or more


def cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) clock ticks of every CPU since boot, from /proc/stat (Linux)."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        ticks = [int(v) for v in first[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError, IndexError):
        return None
    idle = ticks[3] + ticks[4]
    return sum(ticks) - idle, sum(ticks)


def busy_cores(window_s: float = 0.2) -> float | None:
    """Cores busy with other work right now: the machine's busy share over `window_s` while this process sleeps,
    times the machine's cores. Unlike the load average it leaves out this process's own past work (a command run
    just before). None where /proc/stat is missing."""
    import time

    a = _cpu_ticks()
    if a is None:
        return None
    time.sleep(window_s)
    b = _cpu_ticks()
    if b is None or b[1] <= a[1]:
        return None
    return (b[0] - a[0]) / (b[1] - a[1]) * (os.cpu_count() or 1)


def default_threads(busy: float | None, n_cores: int, torch_default: int) -> int:
    """torch's CPU threads when none are asked for: torch's default (one per core, or OMP_NUM_THREADS) capped at
    the cores other work leaves idle, at least one. A core counts as taken from half a busy core on: on 2 cores,
    less than 0.5 busy keeps 2 threads, more gives 1. Unknown business: torch's default."""
    if busy is None:
        return torch_default
    idle = math.ceil(n_cores - busy - IDLE_CORE_LOAD)
    return max(1, min(torch_default, idle))


def cpu_threads(torch_default: int) -> tuple[int, float | None]:
    """(threads, busy cores) by the policy of default_threads; no sampling when torch already runs one thread."""
    if torch_default <= 1:
        return torch_default, None
    busy = busy_cores()
    return default_threads(busy, cores(), torch_default), busy


def busy_warning(load: float | None, n_cores: int, threads: int | None = None) -> str | None:
    """One line when the machine looks busy (1-minute load average above its cores): CPU timings then measure the
    contention (a tiny MHA took 38 ms with torch's default threads on a loaded two-core machine, 0.54 ms with one)."""
    if load is None or load <= n_cores:
        return None
    hint = ", or with fewer threads (--threads 1)" if threads != 1 else ""
    return (f"the machine looks busy (load average {load:.1f} on {n_cores} cores): CPU timings will be slow and "
            f"noisy; measure when it is idle{hint}")


# ------------------------------------------------------------------------------------------------ free memory
def _meminfo_available() -> int | None:
    """Linux's estimate of the memory a new program can take without swapping (MemAvailable), bytes."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_left() -> int | None:
    """What this process's cgroup (v2) still allows: memory.max minus memory.current; None without a limit."""
    try:
        own = Path("/proc/self/cgroup").read_text().splitlines()
        rel = next(line.split(":", 2)[2] for line in own if line.startswith("0::"))
        base = Path("/sys/fs/cgroup") / rel.lstrip("/")
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((base / "memory.current").read_text()))
    except (OSError, ValueError, StopIteration, IndexError):
        return None


def free_memory(device: str) -> int | None:
    """Bytes free for a new allocation on `device` ('cpu', 'cuda', 'cuda:N'): the host's available memory (and what
    its cgroup allows) for the CPU; the driver's free memory for a GPU. None when this machine does not say."""
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    found = [v for v in (_meminfo_available(), _cgroup_left()) if v is not None]
    return min(found) if found else None
