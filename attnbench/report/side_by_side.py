"""`attnbench report --compare A B`: two runs side by side, the change in % per row, flagged where it exceeds the
measured spread; records of A and B are matched by kind, attention, settings and metric.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from attnbench.errors import AttnbenchError
from attnbench.record_groups import _freeze, _latest, _num, _ok, env_key, train_settings
from attnbench.report.names import COMPARE_METRICS, NA, SPEED_P25, SPEED_P75
from attnbench.report.seeds import _mean_std
from attnbench.report.series import _figure, bad_values, bench_settings
from attnbench.results import read
from attnbench.tables import screen, to_markdown

MEMORY_TOLERANCE = 0.02  # memory has no sample spread: flag changes beyond 2 % (allocator block rounding)


@dataclass
class CompareResult:
    rows: list[dict[str, Any]]
    notes: list[str]
    problems: list[str]


def _compare_entries(records: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """(kind, attn, settings, metric) -> value and spread; train records are pooled over seeds."""
    pooled: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in _latest(records):
        if r["kind"] == "train":
            attn, cfg = train_settings(r)
        elif r["kind"] in ("speed", "memory"):
            attn, cfg = bench_settings(r, keep_seq=True)
        else:
            attn, cfg = r.get("attn") or "-", r.get("config") or {}
        pooled[(r["kind"], attn, _freeze(cfg))].append(r)
    out: dict[tuple, dict[str, Any]] = {}
    for (kind, attn, cfg), rs in pooled.items():
        for metric in COMPARE_METRICS.get(kind, ()):
            if kind == "train":
                ok = [r for r in rs if _ok(r)]
                mu, sd = _mean_std([_num((r.get("metrics") or {}).get(metric)) for r in ok])
                entry = {"value": mu, "spread": sd, "status": "ok" if ok else rs[-1].get("status"), "n": len(ok)}
                if mu is None and any(_figure(r.get("metrics") or {}, metric) == NA for r in ok):
                    entry["status"] = NA  # not a number in any seed: named in a note
            else:
                r = rs[-1]  # the latest measurement of this setting in the run
                m = r.get("metrics") or {}
                spread = None
                if kind == "speed" and _num(m.get(SPEED_P25)) is not None and _num(m.get(SPEED_P75)) is not None:
                    spread = _num(m[SPEED_P75]) - _num(m[SPEED_P25])
                entry = {"value": _num(m.get(metric)), "spread": spread, "status": r.get("status", "ok"), "n": 1}
                if entry["status"] == "ok" and _figure(m, metric) == NA:
                    entry["status"] = NA  # not a number: named in a note
            if entry["value"] is None and entry["status"] == "ok":
                continue  # the metric is not in this record (e.g. rss on CUDA)
            out[(kind, attn, cfg, metric)] = entry
    return out


def _settings_label(cfg: tuple, varying: set[str]) -> str:
    return " ".join(f"{k}={v.strip(chr(39))}" for k, v in cfg if k in varying)  # values are repr()s


def compare(a: Sequence[str | os.PathLike], b: Sequence[str | os.PathLike]) -> CompareResult:
    """Runs A and B side by side: change in % per row, flagged ('*') where it exceeds the measured spread.

    Spread: speed, the larger IQR (p75 - p25) of the two; train, the larger std across seeds; memory, a
    MEMORY_TOLERANCE fraction of A; params, zero (any change is flagged).
    """
    for p in (*a, *b):
        if not Path(p).exists():
            raise AttnbenchError(f"no such file or folder: {p}")
    ra, pa = read(a)
    rb, pb = read(b)
    if not ra or not rb:
        raise AttnbenchError(f"no attnbench records in {'A' if not ra else 'B'} "
                             f"({', '.join(map(str, a if not ra else b))})")
    notes = bad_values([*ra, *rb])
    da = sorted({env_key(r)[0] for r in ra})
    db = sorted({env_key(r)[0] for r in rb})
    if da != db:
        notes.append(f"A and B ran on different devices ({', '.join(da)} vs {', '.join(db)}): "
                     "the changes include the device, not only the code")
    ea, eb = _compare_entries(ra), _compare_entries(rb)
    common = [k for k in ea if k in eb]
    varying: dict[str, set[str]] = defaultdict(set)
    for kind in {k[0] for k in common}:
        cfgs = [dict(k[2]) for k in common if k[0] == kind]
        for name in {n for c in cfgs for n in c}:
            if len({c.get(name) for c in cfgs}) > 1:
                varying[kind].add(name)
    rows = []
    natural = lambda text: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]  # T=64 before T=128
    for k in sorted(common, key=lambda k: (k[0], k[1], natural(_settings_label(k[2], varying[k[0]])), k[3])):
        kind, attn, cfg, metric = k
        x, y = ea[k], eb[k]
        change = spread_pct = None
        flag = ""
        if x["value"] is not None and y["value"] is not None and x["value"] != 0:
            change = (y["value"] - x["value"]) / abs(x["value"]) * 100.0
            spreads = [s for s in (x["spread"], y["spread"]) if s is not None]
            if kind == "memory":
                spread = MEMORY_TOLERANCE * abs(x["value"])
            elif kind == "params":
                spread = 0.0
            else:
                spread = max(spreads) if spreads else None
            if spread is not None:
                spread_pct = spread / abs(x["value"]) * 100.0
                flag = "*" if abs(y["value"] - x["value"]) > spread else ""
        rows.append({"kind": kind, "attention": attn, "settings": _settings_label(cfg, varying[kind]),
                     "metric": metric,
                     "a": x["value"] if x["status"] == "ok" else x["status"],
                     "b": y["value"] if y["status"] == "ok" else y["status"],
                     "change_pct": change, "spread_pct": spread_pct, "flag": flag})
    only_a, only_b = len(set(ea) - set(eb)), len(set(eb) - set(ea))
    if only_a or only_b:
        notes.append(f"{only_a} row(s) only in A and {only_b} only in B were left out")
    if not rows:
        notes.append("A and B share no measured setting")
    notes.append("flag *: |B - A| exceeds the measured spread (speed: IQR; train: std across seeds; "
                 f"memory: {MEMORY_TOLERANCE:.0%}; params: any change)")
    return CompareResult(rows, notes, pa + pb)


COMPARE_COLUMNS = ("kind", "attention", "settings", "metric", "a", "b", "change_pct", "spread_pct", "flag")


def compare_markdown(result: CompareResult, a: Sequence[str], b: Sequence[str]) -> str:
    lines = ["# attnbench comparison", "", f"A: {', '.join(map(str, a))}", "", f"B: {', '.join(map(str, b))}", "",
             to_markdown(*screen(result.rows, COMPARE_COLUMNS)), ""]
    lines += [f"- {n}" for n in result.notes]
    lines += [f"- skipped `{p}`" for p in result.problems]
    return "\n".join(lines) + "\n"
