"""Statistics over a series' seeds, shared by the training, extrapolation and compare parts: mean and standard
deviation, an interval as its cell reads, a series' values per seed (the attention parameters of old records
counted), and the BASELINE series a retention ratio divides by. Intervals, tests and ratios come from stats.py.
"""

from __future__ import annotations

import statistics
from typing import Any, Sequence

from attnbench.record_groups import _freeze, _num, attn_config, with_defaults
from attnbench.report.names import ATTN_PARAMS, BASELINE
from attnbench.report.series import Series, _fields, one_per_seed
from attnbench.tables import cell


def _mean_std(vals: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the values that are not None (the std None for one value). Exactly
    rounded (statistics.fmean, stdev), not stats.summary's numpy figures: compare prints these means unrounded
    (--format json, csv), and numpy's differ from them in the last digit for some seed sets."""
    vals = [v for v in vals if v is not None]
    if not vals:
        return None, None
    mean = statistics.fmean(vals)
    if all(isinstance(v, int) for v in vals) and mean.is_integer():
        mean = int(mean)  # e.g. a parameter count, equal over seeds
    return mean, (statistics.stdev(vals) if len(vals) > 1 else None)


def _ci(lo: float | None, hi: float | None) -> str | None:
    return None if lo is None or hi is None else f"[{cell(lo)}, {cell(hi)}]"


def _baseline(s: Series, series: Sequence[Series]) -> Series | None:
    """The BASELINE series a series is divided by: the one whose settings differ from its own in fewest keys."""
    def distance(b: Series) -> int:
        return sum(repr(b.settings.get(k)) != repr(s.settings.get(k)) for k in {*b.settings, *s.settings})

    return min((b for b in series if b.attn == BASELINE), key=lambda b: (distance(b), b.label), default=None)


def _seed_values(s: Series, metric: str) -> list[float]:
    get = attn_params if metric == ATTN_PARAMS else (lambda r: (r.get("metrics") or {}).get(metric))
    vals = [_num(get(r)) for r in one_per_seed(s.records)]
    return [v for v in vals if v is not None]


_ATTN_PARAMS_CACHE: dict[tuple, int | None] = {}


def attn_params(r: dict[str, Any]) -> int | None:
    """The attention parameters of a train run, every layer: its metrics.attn_params, else (records written before
    train recorded it) counted on the registered attention built with the run's settings (attn_config: kv_heads by
    the rule of the version that wrote it). None for an attention that is not registered: a report never imports
    a file a record names."""
    got = (r.get("metrics") or {}).get(ATTN_PARAMS)
    if got is not None:
        return got
    from attnbench.attention import build, names
    from attnbench.config import TrainConfig

    fields, acfg, attn = with_defaults(_fields(r)), attn_config(r), r.get("attn")
    if attn not in names() or not fields or not acfg:
        return None
    known = {k: v for k, v in fields.items() if k in TrainConfig.__dataclass_fields__}
    key = (attn, _freeze(known), acfg.get("kv_heads"))
    if key not in _ATTN_PARAMS_CACHE:
        try:
            cfg = TrainConfig(**known).resolved().attn_config()
            cfg.kv_heads = acfg.get("kv_heads", cfg.kv_heads)
            layer = build(attn, cfg=cfg)
            _ATTN_PARAMS_CACHE[key] = known["n_layers"] * sum(p.numel() for p in layer.parameters())
        except Exception:  # a setting this version cannot build: no count rather than a wrong one
            _ATTN_PARAMS_CACHE[key] = None
    return _ATTN_PARAMS_CACHE[key]
