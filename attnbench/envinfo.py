"""`attnbench env`: what this machine is, as a measurement depends on it.

The record fields come from results.environment() (one definition); this module adds what only a person at the
machine needs: per-GPU memory, clocks, temperature and power through NVML, and which SDPA backends actually run
here (each one is tried on a tiny causal attention). Without an NVIDIA driver it says so and goes on.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from attnbench.results import environment

SDPA_BACKENDS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH")
NO_DRIVER = "no NVIDIA driver"


def _s(v: Any) -> Any:
    return v.decode() if isinstance(v, bytes) else v


def nvml_info() -> tuple[list[dict[str, Any]], str | None]:
    """(one dict per GPU, None) through NVML, or ([], why not) when there is no NVIDIA driver or library."""
    try:
        import pynvml
    except ImportError:
        return [], f"{NO_DRIVER} (pynvml not installed)"
    try:
        pynvml.nvmlInit()
    except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...: a machine without NVIDIA
        return [], f"{NO_DRIVER} (NVML: {e})"
    gpus: list[dict[str, Any]] = []
    try:
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            g: dict[str, Any] = {"index": i, "name": _s(pynvml.nvmlDeviceGetName(h))}

            def get(key: str, fn, *args, scale: float = 1.0):
                try:
                    v = fn(h, *args)
                    g[key] = v * scale if isinstance(v, (int, float)) else _s(v)
                except Exception:  # not supported on this GPU (e.g. MIG, power on some boards)
                    g[key] = None

            mem = None
            try:
                mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            except Exception:
                pass
            g["memory_total_mib"] = mem.total / 2**20 if mem else None
            g["memory_used_mib"] = mem.used / 2**20 if mem else None
            get("sm_clock_mhz", pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_SM)
            get("sm_clock_max_mhz", pynvml.nvmlDeviceGetMaxClockInfo, pynvml.NVML_CLOCK_SM)
            get("mem_clock_mhz", pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_MEM)
            get("mem_clock_max_mhz", pynvml.nvmlDeviceGetMaxClockInfo, pynvml.NVML_CLOCK_MEM)
            get("temperature_c", pynvml.nvmlDeviceGetTemperature, pynvml.NVML_TEMPERATURE_GPU)
            get("power_w", pynvml.nvmlDeviceGetPowerUsage, scale=1e-3)
            get("power_limit_w", pynvml.nvmlDeviceGetEnforcedPowerLimit, scale=1e-3)
            get("utilization_pct", lambda hh: pynvml.nvmlDeviceGetUtilizationRates(hh).gpu)
            get("pstate", pynvml.nvmlDeviceGetPerformanceState)
            gpus.append(g)
    finally:
        pynvml.nvmlShutdown()
    return gpus, None


def sdpa_backends(device: str) -> dict[str, str]:
    """Which scaled-dot-product-attention backends run a tiny causal call on `device`: 'yes' or 'no: why'."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    q = torch.randn(1, 2, 16, 32, device=device, dtype=dtype)  # [B, nh, T, hs]
    out: dict[str, str] = {}
    for name in SDPA_BACKENDS:
        backend = getattr(SDPBackend, name, None)
        if backend is None:
            out[name.lower()] = "no: not in this torch"
            continue
        try:
            with warnings.catch_warnings(), sdpa_kernel([backend]):
                warnings.simplefilter("ignore")
                F.scaled_dot_product_attention(q, q, q, is_causal=True)
            out[name.lower()] = "yes"
        except RuntimeError:  # "No viable backend ...": this kernel does not run on this device/dtype
            out[name.lower()] = f"no (not on {device}, {str(dtype).removeprefix('torch.')})"
    return out


def env_info() -> dict[str, Any]:
    """Everything `attnbench env` shows, as data."""
    import torch

    env = environment()
    gpus, nvml_error = nvml_info()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {"environment": env, "gpus": gpus, "nvml": nvml_error or "ok",
            "cuda_available": torch.cuda.is_available(), "sdpa_device": device, "sdpa": sdpa_backends(device),
            "interop_threads": torch.get_num_interop_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def env_rows(info: dict[str, Any]) -> list[dict[str, Any]]:
    """info as (item, value) rows for one table."""
    rows = [{"name": k, "value": v} for k, v in info["environment"].items()]
    rows.append({"name": "cuda_available", "value": info["cuda_available"]})
    rows.append({"name": "nvml", "value": info["nvml"]})
    for g in info["gpus"]:
        rows += [{"name": f"gpu{g['index']}.{k}", "value": v} for k, v in g.items() if k != "index"]
    rows += [{"name": f"sdpa.{k} ({info['sdpa_device']})", "value": v} for k, v in info["sdpa"].items()]
    rows.append({"name": "interop_threads", "value": info["interop_threads"]})
    rows.append({"name": "OMP_NUM_THREADS", "value": info["omp_num_threads"]})
    return rows
