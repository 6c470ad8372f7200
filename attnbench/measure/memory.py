"""Memory at three levels, never mixed up (../shared/docs/benchmarking.md, "Memory"):

1. allocator: activations retained after the forward, and the peak of forward+backward, both above the allocation
   before the call (inputs and weights reported apart);
2. allocator reserved (max_memory_reserved), what the driver sees of this process;
3. device-wide NVML used memory, sampled by a thread (measure/nvml.py).
On CPU: peak resident memory of a fresh process per configuration (`cpu_peak_rss`), so that one measurement does
not inherit another's high-water mark.

Also the analytic estimate of the activations an attention keeps for backward, which each attention declares itself
(its `activation_estimate` member; `estimate_fields` turns it into MiB).
Units: MiB = 2**20 bytes.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

MIB = 2**20
ESTIMATE_NOTE_RATIO = 2.0  # measured vs estimate beyond this factor either way earns a note


def estimate_fields(parts: dict[str, int] | None) -> dict[str, Any]:
    """An estimate of the activations a forward keeps for backward, given as bytes by tensor group (an attention's
    `activation_estimate` member, docs/contract.md): the total in MiB and the groups as its formula. None (n/a)
    when the attention declares no estimate."""
    if parts is None:
        return {"estimate_mib": None, "estimate_formula": "n/a: the attention declares no activation_estimate"}
    return {"estimate_mib": sum(parts.values()) / MIB, "estimate_formula": " + ".join(parts)}


def tensor_mib(tensors) -> float:
    return sum(t.numel() * t.element_size() for t in tensors) / MIB


def cuda_memory(forward, leaves, params, inputs, device, backward: bool = True, nvml_min_s: float = 0.2
                ) -> dict[str, Any]:
    """Allocator figures of one call on CUDA, after one warm-up call, with NVML sampling around repeated calls."""
    import time

    import torch

    from attnbench.measure.nvml import NvmlSampler
    from attnbench.watchdog import check

    def zero():
        for t in leaves:
            t.grad = None

    def run():
        out = forward()
        if backward:
            out.backward(torch.ones_like(out))
        return out

    dev = torch.device(device)
    zero()
    run()  # warm-up: kernels chosen, workspaces allocated
    zero()
    gc.collect()
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    before = torch.cuda.memory_allocated(dev)
    out = forward()
    torch.cuda.synchronize(dev)
    retained = torch.cuda.memory_allocated(dev) - before
    peak_fwd = torch.cuda.max_memory_allocated(dev) - before
    if backward:
        out.backward(torch.ones_like(out))
        torch.cuda.synchronize(dev)
    peak = torch.cuda.max_memory_allocated(dev) - before
    reserved = torch.cuda.max_memory_reserved(dev)
    del out
    zero()
    with NvmlSampler(dev.index if dev.index is not None else torch.cuda.current_device()) as s:
        t0 = time.perf_counter()
        calls = 0
        while calls < 3 or time.perf_counter() - t0 < nvml_min_s:
            check()
            zero()
            run()
            torch.cuda.synchronize(dev)
            calls += 1
    zero()
    return {"inputs_mib": tensor_mib(inputs), "weights_mib": tensor_mib(params), "before_mib": before / MIB,
            "activations_mib": retained / MIB, "peak_fwd_mib": peak_fwd / MIB,
            "peak_alloc_mib": peak / MIB if backward else None, "reserved_mib": reserved / MIB, **s.result()}


# ----------------------------------------------------------------------------------------------- CPU, fresh process
def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    """Reset the peak-RSS high-water mark of this process (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in the fresh process: build the workload, one call, and report RSS figures."""
    import resource

    import torch

    from attnbench.workload import build_workload

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])  # the sweep's --threads (each thread keeps its own buffers)
    torch.manual_seed(0)
    w = build_workload(spec["name"], spec["impl"], spec["batch"], spec["seq_len"], spec["d_model"], spec["heads"],
                       spec["kv_heads"], "cpu", getattr(torch, spec["dtype"]), d_pos=spec.get("d_pos"))
    backward = spec.get("backward", True)

    def run():
        out = w.forward()
        if backward:
            out.backward(torch.ones_like(out))

    reset = _reset_hwm()
    if reset:  # warm up, then measure from a clean high-water mark
        run()
        for t in w.leaves:
            t.grad = None
        gc.collect()
        _reset_hwm()
    base_kib = _status_kib("VmRSS") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run()
    peak_kib = _status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"status": "ok", "cpu_peak_rss_mib": peak_kib / 1024,
            "cpu_rss_before_mib": base_kib / 1024, "cpu_peak_rss_delta_mib": max(0, peak_kib - base_kib) / 1024,
            "cpu_rss_method": "VmHWM after clear_refs" if reset else "ru_maxrss (high-water mark since start)",
            "inputs_mib": tensor_mib(w.inputs), "weights_mib": tensor_mib(w.params),
            "cpu_threads": torch.get_num_threads()}


def cpu_peak_rss(spec: dict[str, Any], timeout_s: float = 600) -> dict[str, Any]:
    """Peak resident memory of one configuration measured in a fresh Python process.

    Returns the worker's figures; status "oom" when the worker ran out of memory or was killed (OOM killer),
    "timeout" past `timeout_s` or the cell's limit (watchdog.py). The worker is killed when the cell stops (its
    limit, or Ctrl-C in the main thread): watchdog.check() runs while it is waited for."""
    import time

    from attnbench.errors import CellTimeout
    from attnbench.watchdog import check, seconds_left

    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    left = seconds_left()
    limit = min(timeout_s, left) if left is not None else timeout_s
    p = subprocess.Popen([sys.executable, "-m", "attnbench.measure.memory", json.dumps(spec)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    try:
        while True:
            try:
                out, err = p.communicate(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                check()
                if time.monotonic() - t0 > limit:
                    raise CellTimeout(f"memory worker stopped at the {limit:.3g} s limit (--timeout)") from None
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if p.returncode == 0 and lines:
        return json.loads(lines[-1])
    if p.returncode in (-9, 137):
        return {"status": "oom", "reason": "worker killed (likely the OOM killer)"}
    tail = (err.strip().splitlines() or ["no output"])[-1]
    return {"status": "error", "reason": f"memory worker failed: {tail}"}


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    try:
        res = _worker(spec)
    except (Exception, MemoryError) as e:  # reported back as one line; the parent records it and goes on
        from attnbench.errors import classify

        status, reason = classify(e)
        res = {"status": status, "reason": reason}
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the parent's to act on: it kills us
    sys.exit(main(sys.argv))
