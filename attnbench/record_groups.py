"""Which records may be set side by side: their environment group, their train settings, and the small readers the
report layer (report.py, report_paper.py) shares; ../shared/docs/benchmarking.md, "Records".

Records of different environments are never mixed in one table, plot or ratio; train runs group by the settings that
change what is learned (not by seed or runtime knobs).
"""

from __future__ import annotations

import math
from typing import Any

# Config keys (train.py) that say which run or where it ran, not which series it is in.
DEVICE_KEY, SEED, PRESET = "device", "seed", "preset"
TRAIN_FIELDS = "preset_fields"  # train config: every TrainConfig field of the run
# Train settings that do not change what is learned: a run with other values still matches its preset.
TRAIN_IGNORE = (SEED, DEVICE_KEY, "amp", "compile", "eval_batch", "log_every", "eval_every")


def env_key(rec: dict[str, Any]) -> tuple:
    """The device and environment a record was measured in; records of different keys are never mixed."""
    e = rec.get("env") or {}
    return (e.get("device_name") or "unknown device", e.get("device") or "?", e.get("driver"), e.get("cuda"),
            e.get("torch"))


def env_label(key: tuple) -> str:
    name, dev, driver, cuda, torch = key
    parts = [f"{name} ({dev})"]
    if driver:
        parts.append(f"driver {driver}")
    parts.append(f"CUDA {cuda}" if cuda else "no CUDA")
    parts.append(f"torch {torch}")
    return " · ".join(parts)


def train_settings(r: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(attention, settings) of a train record: its TrainConfig fields and data, without seed and runtime knobs."""
    cfg = r.get("config") or {}
    fields = cfg.get(TRAIN_FIELDS) if isinstance(cfg.get(TRAIN_FIELDS), dict) else {}
    settings = {k: v for k, v in fields.items() if k not in TRAIN_IGNORE}
    settings.update({k: v for k, v in cfg.items() if k in (PRESET, "data_sha256")})
    if not fields:  # a record without preset_fields: its flat config
        settings.update({k: v for k, v in cfg.items() if k not in (SEED, DEVICE_KEY, "attn")})
    return r.get("attn") or cfg.get("attn") or "-", settings


def _num(v: Any) -> float | int | None:
    """A finite number (ints stay ints, so that counts print exactly), else None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return v


def _freeze(d: dict[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in d.items()))


def _ok(r: dict[str, Any]) -> bool:
    return r.get("status", "ok") == "ok"
