"""Records -> series: an attention with fixed settings (Series), the settings of a bench or train record, the preset
a train run matches, the latest record per sequence length or per seed, and a record's figures as its cells read
them (bad_values names those that are not numbers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from attnbench.errors import AttnbenchError
from attnbench.record_groups import (PRESET, SEED, TASK, TASK_OPTS, TRAIN_FIELDS, TRAIN_IGNORE, _freeze, _latest, _num,
                                     _ok, task_of, with_defaults)
from attnbench.report.names import BENCH_IGNORE, LR, NA, NAME, NUMERIC, SEQ_LEN, TASK_FIXED, WIDTH


@dataclass
class Series:
    """One line on a plot: an attention with fixed settings; points keyed by sequence length (or seed)."""

    attn: str
    settings: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    label: str = ""


def bench_settings(r: dict[str, Any], keep_seq: bool = False) -> tuple[str, dict[str, Any]]:
    """(attention, settings) of a speed/memory record; the SDPA baseline has attn None and config name 'sdpa'."""
    cfg = r.get("config") or {}
    drop = BENCH_IGNORE if not keep_seq else tuple(k for k in BENCH_IGNORE if k != SEQ_LEN)
    return r.get("attn") or cfg.get(NAME) or "-", {k: v for k, v in cfg.items() if k not in drop}


def train_preset(r: dict[str, Any], swept: bool = False) -> str:
    """The train.py preset a run matches (every field but TRAIN_IGNORE equal), else 'custom'; with swept, the
    preset it matches at its own WIDTH and LR (a width or learning-rate sweep of a preset; fields derived from the
    width, such as d_ff = 4 d_model, derived again)."""
    cfg = r.get("config") or {}
    if cfg.get(PRESET):
        return str(cfg[PRESET])
    fields = cfg.get(TRAIN_FIELDS)
    if not isinstance(fields, dict):
        return "custom"
    try:
        from dataclasses import asdict, replace

        from attnbench.config import PRESETS
    except ImportError:
        return "custom"
    refs = {}
    for name, preset in PRESETS.items():
        try:
            width = fields.get(WIDTH) if swept and isinstance(fields.get(WIDTH), int) else preset.d_model
            lr = fields.get(LR) if swept and isinstance(fields.get(LR), (int, float)) else preset.lr
            refs[name] = asdict(replace(preset, **{WIDTH: width, LR: lr}).resolved())
        except AttnbenchError:
            continue
    # the task is a section key of its own: a preset's model and schedule on another task is still that preset
    # (at the task's context); a preset that names the run's task as well is preferred
    fixed = TASK_FIXED if SEQ_LEN in task_of(r) else ()
    fields = with_defaults(fields)  # a field added after the record was written: its default
    for ignore in ((*TRAIN_IGNORE,), (*TRAIN_IGNORE, TASK, TASK_OPTS, *fixed)):
        for name, ref in refs.items():
            if all(fields.get(k) == v for k, v in ref.items() if k not in ignore):
                return name
    return "custom"


def _fields(r: dict[str, Any]) -> dict[str, Any]:
    fields = (r.get("config") or {}).get(TRAIN_FIELDS)
    return fields if isinstance(fields, dict) else {}


def _series(recs: Sequence[dict[str, Any]], settings_of) -> list[Series]:
    """Split records into series by attention + settings (settings_of(record)); label them by what differs."""
    by: dict[tuple, Series] = {}
    for r in recs:
        attn, settings = settings_of(r)
        by.setdefault((attn, _freeze(settings)), Series(attn, settings)).records.append(r)
    out = list(by.values())
    for s in out:  # the settings in which this attention's series differ
        varying = sorted(k for k in s.settings if len({repr(o.settings.get(k)) for o in out if o.attn == s.attn}) > 1)
        s.label = " ".join([s.attn, *(f"{k}={s.settings[k]}" for k in varying)])
    return sorted(out, key=lambda s: s.label)


def _by_seq(s: Series) -> dict[int, dict[str, Any]]:
    """The latest record per sequence length (a rerun replaces an earlier point)."""
    pts: dict[int, dict[str, Any]] = {}
    for r in _latest(s.records):
        t = (r.get("config") or {}).get(SEQ_LEN)
        if isinstance(t, int):
            pts[t] = r
    return dict(sorted(pts.items()))


def _run(r: dict[str, Any]) -> str:
    """The file a record was read from: one run of one command."""
    return (r.get("_source") or "").rsplit(":", 1)[0]


def one_per_seed(recs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The finished runs, one per seed: a seed run again (at a later commit, or a copy of a record) counts once, by
    its latest record, so that n counts independent seeds and no run is weighed twice."""
    by: dict[Any, dict[str, Any]] = {}
    for r in _latest(r for r in recs if _ok(r)):
        seed = (r.get("config") or {}).get(SEED)
        by[seed if seed is not None else id(r)] = r
    return list(by.values())


def _first_metric(r: dict[str, Any], names: Sequence[str]) -> tuple[str | None, float | None]:
    m = r.get("metrics") or {}
    for n in names:
        if _num(m.get(n)) is not None:
            return n, _num(m[n])
    return None, None


def _figure(m: dict[str, Any], key: str) -> float | int | str | None:
    """A record's figure as its cell shows it: the number, NA where the record holds something else, None where it
    holds nothing."""
    return None if m.get(key) is None else NA if _num(m[key]) is None else _num(m[key])


def bad_values(records: Iterable[dict[str, Any]]) -> list[str]:
    """One line per figure of NUMERIC that a record holds but that is not a finite number: 'file:line: ...'."""
    out = []
    for r in records:
        m = r.get("metrics") or {}
        for key in NUMERIC.get(r.get("kind"), ()):
            if m.get(key) is not None and _num(m[key]) is None:
                out.append(f"{r.get('_source', '?')}: {r['kind']} metric {key} is {m[key]!r}, not a number "
                           f"(shown as {NA})")
    return out
