"""Which records may be set side by side: their environment group, their train settings, and the small readers the
report package (attnbench/report/) shares; ../shared/docs/benchmarking.md, "Records".

Records of different environments are never mixed in one table, plot or ratio; train runs group by the settings that
change what is learned (not by seed or runtime knobs).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any, Iterable

# Config keys (train.py) that say which run or where it ran, not which series it is in.
DEVICE_KEY, SEED, PRESET = "device", "seed", "preset"
TRAIN_FIELDS = "preset_fields"  # train config: every TrainConfig field of the run
# Train settings that do not change what is learned: a run with other values still matches its preset.
TRAIN_IGNORE = (SEED, DEVICE_KEY, "amp", "compile", "eval_batch", "log_every", "eval_every", "eval_ctx")
# The task a run learned: config["task"] = {"task": name, **options} (tasks.SyntheticTask.config); the preset fields
# hold the same as the command line gave it (TASK, TASK_OPTS). A record without either predates tasks (issue 13), when
# the character corpus was the only task.
TASK, TASK_OPTS, TASK_BEFORE_TASKS = "task", "task_opts", "shakespeare"
ATTN_CONFIG = "attn_config"  # train config: the resolved AttnConfig of the run (records since issue 13)
KV_HEADS = "kv_heads"


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
    """(attention, settings) of a train record: its TrainConfig fields and data, without seed and runtime knobs; the
    task as task_label() names it (old records: Shakespeare); kv_heads resolved (attn_config) for an attention that
    declares it among its settings, so that a run at the default g is told from one at another."""
    cfg = r.get("config") or {}
    fields = cfg.get(TRAIN_FIELDS) if isinstance(cfg.get(TRAIN_FIELDS), dict) else {}
    fields = with_defaults(fields)
    settings = {k: v for k, v in fields.items() if k not in TRAIN_IGNORE and k != TASK_OPTS}
    # one of the two sets the length (config.TrainConfig.epochs): epochs when > 0, else steps; the other is unused
    settings.pop("steps" if _num(fields.get("epochs")) else "epochs", None)
    settings.update({k: v for k, v in cfg.items() if k in (PRESET, "data_sha256")})
    if not fields:  # a record without preset_fields: its flat config
        settings.update({k: v for k, v in cfg.items()
                         if k not in (SEED, DEVICE_KEY, "attn", TASK, ATTN_CONFIG) and k not in TRAIN_IGNORE})
    attn = r.get("attn") or cfg.get("attn") or "-"
    settings[TASK] = task_label(r)
    acfg = attn_config(r)
    if acfg and KV_HEADS in _declared_settings(attn):
        settings[KV_HEADS] = acfg.get(KV_HEADS)
    return attn, settings


def with_defaults(fields: dict[str, Any]) -> dict[str, Any]:
    """A record's TrainConfig fields, those it lacks filled with today's defaults: a field added after a record was
    written ran with its default's behaviour (fields are only added with a default that keeps the former one).
    An empty dict (no preset_fields) stays empty."""
    if not fields:
        return fields
    from attnbench.config import TrainConfig

    return {**asdict(TrainConfig()), **fields}


def task_of(r: dict[str, Any]) -> dict[str, Any]:
    """{"task": name, **options} of a train record (options only where the record has them)."""
    cfg = r.get("config") or {}
    if isinstance(cfg.get(TASK), dict) and cfg[TASK].get(TASK):
        return dict(cfg[TASK])
    fields = cfg.get(TRAIN_FIELDS) if isinstance(cfg.get(TRAIN_FIELDS), dict) else {}
    name = fields.get(TASK) or (cfg.get(TASK) if isinstance(cfg.get(TASK), str) else None) or TASK_BEFORE_TASKS
    opts = dict(item.split("=", 1) for item in str(fields.get(TASK_OPTS) or "").split(",") if "=" in item)
    return {TASK: name, **{k.strip(): v.strip() for k, v in opts.items()}}


def task_label(r: dict[str, Any]) -> str:
    """The task's name and, compactly, its options that differ from the task's defaults ("mqar (num_kv_pairs=8,
    seq_len=128)"); the data seed is left out, as the run's seed is."""
    t = task_of(r)
    name = str(t.pop(TASK))
    defaults = _task_defaults(name)
    shown = [f"{k}={v}" for k, v in sorted(t.items())
             if k != SEED and (k not in defaults or str(defaults[k]) != str(v))]
    return f"{name} ({', '.join(shown)})" if shown else name


def _task_defaults(name: str) -> dict[str, Any]:
    """The default options of a synthetic task (tasks.py); {} for the corpus and for a task this version lacks."""
    try:
        from attnbench.tasks import TASKS
    except ImportError:
        return {}
    entry = TASKS.get(name)
    return asdict(entry[1]()) if entry else {}


def attn_config(r: dict[str, Any]) -> dict[str, Any] | None:
    """The resolved AttnConfig of a train run as a dict: config.attn_config, else rebuilt from the preset fields.
    Records written before attn_config existed ran at kv_heads = max(1, n_heads // 4) when kv_heads was unset (the
    default of config.AttnConfig up to issue 13, e.g. at commit 1561c63: 6 heads -> 1, i.e. MQA); that rule is
    applied here to them, and to nothing else."""
    cfg = r.get("config") or {}
    if isinstance(cfg.get(ATTN_CONFIG), dict):
        return cfg[ATTN_CONFIG]
    fields = cfg.get(TRAIN_FIELDS) if isinstance(cfg.get(TRAIN_FIELDS), dict) else {}
    n = fields.get("n_heads")
    if not isinstance(n, int) or n <= 0:
        return None
    g = fields.get(KV_HEADS)
    return {"d_model": fields.get("d_model"), "n_heads": n, KV_HEADS: g if g is not None else max(1, n // 4)}


def _declared_settings(attn: str) -> tuple[str, ...]:
    """The AttnConfig settings a registered attention declares it reads (its class's `settings`), () otherwise: a
    report never imports a file a record names."""
    from attnbench.attention import get, names

    return tuple(getattr(get(attn), "settings", ()) or ()) if attn in names() else ()


def _num(v: Any) -> float | int | None:
    """A finite number (ints stay ints, so that counts print exactly), else None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return v


def _latest(recs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Oldest first: by time, then file, then line number (results.read's `_source` is "file:line")."""
    def key(r: dict[str, Any]) -> tuple:
        path, _, line = (r.get("_source") or "").rpartition(":")
        return (r.get("time_utc") or "", path, int(line) if line.isdigit() else -1)

    return sorted(recs, key=key)


def _freeze(d: dict[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in d.items()))


def _ok(r: dict[str, Any]) -> bool:
    return r.get("status", "ok") == "ok"


def failed_seeds(recs: Iterable[dict[str, Any]]) -> int:
    """Seeds without a finished run (a crash, a non-finite loss, a stop never resumed); a seed interrupted in one
    session and finished by --resume in a later one has both records and is not counted."""
    recs = list(recs)
    done = {(r.get("config") or {}).get(SEED) for r in recs if _ok(r)}
    return len({s if (s := (r.get("config") or {}).get(SEED)) is not None else id(r)
                for r in recs if not _ok(r)} - done)
