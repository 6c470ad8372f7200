"""The report's cost sections: speed and memory against sequence length (one table and one log-log plot per device
group and PLOT_KEYS setting), the memory exponent fitted over T, and the parameter counts.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from attnbench.record_groups import _freeze, _latest, _num, _ok, env_key, env_label
from attnbench.report.document import _Doc
from attnbench.report.names import (MEMORY_COLUMNS, MEMORY_PEAKS, PARAMS_COLUMNS, PLOT_KEYS, SPEED_COLUMNS, SPEED_P25,
                                    SPEED_P75, SPEED_RATIO, SPEED_TIME)
from attnbench.report.plots import Plot, _plot_lines, _save, slug
from attnbench.report.series import _by_seq, _figure, _first_metric, _run, _series, bench_settings


def _plot_title(group: tuple, settings: dict[str, Any]) -> str:
    shown = " · ".join(f"{k} {settings[k]}" for k in PLOT_KEYS if settings.get(k) is not None)
    return f"{group[0]} ({group[1]}) · {shown}" if shown else f"{group[0]} ({group[1]})"


def _sweeps(recs: list[dict[str, Any]]):
    """(env group, plot settings, records) for each plot: one device group and one PLOT_KEYS combination."""
    by: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        cfg = r.get("config") or {}
        by[(env_key(r), tuple(repr(cfg.get(k)) for k in PLOT_KEYS))].append(r)
    for (group, _), rs in sorted(by.items(), key=lambda kv: repr(kv[0])):
        cfg = rs[0].get("config") or {}
        yield group, {k: cfg.get(k) for k in PLOT_KEYS}, rs


def _plot_series_settings(r: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    attn, settings = bench_settings(r)
    return attn, {k: v for k, v in settings.items() if k not in PLOT_KEYS}


def _sweep_sections(doc: _Doc, recs):
    """Per sweep (_sweeps): its heading and environment line added to the document, then (group, settings, series,
    title) for the section's tables and plot."""
    for group, settings, rs in _sweeps(recs):
        title = _plot_title(group, settings)
        doc.add(f"### {title}", f"Environment: {env_label(group)}")
        yield group, settings, _series(rs, _plot_series_settings), title


def _speed_section(doc: _Doc, recs, out: Path, plt, plots: list[Plot]) -> None:
    doc.add("## Speed", "Median time per call against sequence length T; the band is the interquartile range "
            "(p25-p75). `x MHA` is the ratio to MHA measured in the same run (same T, device and settings); "
            "it is left empty rather than divided across runs, whose medians can differ by more than the "
            "attentions do.")
    for group, settings, series, title in _sweep_sections(doc, recs):
        mha = [s for s in series if s.attn == "mha"]
        rows, lines, failed = [], [], []
        for s in series:
            base = next((b for b in mha if b.settings.get("impl") == s.settings.get("impl")), mha[0] if mha else None)
            base_pts = _by_seq(base) if base else {}
            xs, ys, lo, hi = [], [], [], []
            for t, r in _by_seq(s).items():
                m = r.get("metrics") or {}
                med = _num(m.get(SPEED_TIME))
                # only a ratio measured within one run: the producer's own, else MHA's record of the same file
                ratio = _num(m.get(SPEED_RATIO)) if med is not None else None
                b = base_pts.get(t)
                if ratio is None and med is not None and b is not None and _run(b) == _run(r) \
                        and _num((b.get("metrics") or {}).get(SPEED_TIME)):
                    ratio = med / _num(b["metrics"][SPEED_TIME])
                rows.append({"attention": s.label, "T": t, "status": r.get("status", "ok"), **{
                    c: _figure(m, c) for c in SPEED_COLUMNS}, "x MHA": ratio, "reason": r.get("reason")})
                if _ok(r) and med is not None and med > 0:
                    xs.append(t), ys.append(med)
                    lo.append(_num(m.get(SPEED_P25)) or med), hi.append(_num(m.get(SPEED_P75)) or med)
                elif not _ok(r):
                    failed.append((s.label, t, r.get("status", "error")))
            if xs:
                lines.append((s.label, xs, ys, lo, hi))
        if plt is not None and lines:
            _sweep_plot(plt, "speed", "median time per call (ms)", lines, failed, group, settings, title, out,
                        plots, doc)
        doc.table(rows, ["attention", "T", "status", *SPEED_COLUMNS, "x MHA", "reason"])


def _sweep_plot(plt, kind: str, ylabel: str, lines, failed, group, settings, title: str, out: Path,
                plots: list[Plot], doc: "_Doc") -> None:
    """One log-log plot of a speed or memory sweep against T, saved beside the report and linked from it."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    _plot_lines(plt, ax, lines, failed)
    ax.set_xlabel("sequence length T")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{kind} · " + title.replace(") · ", ")\n", 1), fontsize=9)
    path = _save(plt, fig, out / f"{kind}-{slug(group[0])}-{slug('-'.join(map(str, settings.values())))}.png")
    plots.append(Plot(path, kind, group, title, [ln[0] for ln in lines]))
    doc.add(f"![{kind}: {title}]({path.name})")


def _memory_section(doc: _Doc, recs, out: Path, plt, plots: list[Plot]) -> None:
    doc.add("## Memory", "Peak memory of one call against sequence length T, inputs and weights excluded: the "
            "allocator peak on CUDA (`peak_alloc_mib`; `peak_fwd_mib` in mode fwd), the growth of a fresh process's "
            "resident memory on CPU (`cpu_peak_rss_delta_mib`, coarse: pages). NVML figures are device-wide (every process, the CUDA context included). The exponent is the least-squares slope of "
            "log peak against log T over the measured points (2 = grows like T^2).")
    for group, settings, series, title in _sweep_sections(doc, recs):
        rows, fits, lines, failed, ylabels = [], [], [], [], set()
        for s in series:
            xs, ys = [], []
            first_fail = None
            for t, r in _by_seq(s).items():
                m = r.get("metrics") or {}
                rows.append({"attention": s.label, "T": t, "status": r.get("status", "ok"),
                             **{c: _figure(m, c) for c in MEMORY_COLUMNS}, "reason": r.get("reason")})
                name, peak = _first_metric(r, MEMORY_PEAKS)
                if _ok(r) and peak is not None and peak > 0:  # a log axis has no 0 (pages too coarse); kept in the table
                    xs.append(t), ys.append(peak), ylabels.add(name)
                elif not _ok(r):
                    failed.append((s.label, t, r.get("status", "error")))
                    first_fail = first_fail if first_fail is not None else (t, r.get("status"))
            exp = fit_exponent(xs, ys)
            fits.append({"attention": s.label, "exponent": exp, "T from": min(xs) if xs else None,
                         "T to": max(xs) if xs else None, "points": len(xs),
                         "first failure": f"{first_fail[1]} at T={first_fail[0]}" if first_fail else None})
            if xs:
                lines.append((s.label, xs, ys, None, None))
        if plt is not None and lines:
            _sweep_plot(plt, "memory", " / ".join(sorted(ylabels)) + " (MiB)", lines, failed, group, settings, title,
                        out, plots, doc)
        doc.table(fits, ["attention", "exponent", "T from", "T to", "points", "first failure"])
        doc.table(rows, ["attention", "T", "status", *MEMORY_COLUMNS, "reason"])


def _params_section(doc: _Doc, recs) -> None:
    doc.add("## Parameters", "Counted parameters per attention at the recorded sizes (independent of the device).")
    by: dict[tuple, dict[str, Any]] = {}
    for r in _latest(recs):  # a rerun at the same sizes replaces the earlier row
        by[(r.get("attn"), _freeze(r.get("config") or {}))] = r
    rows, metric_cols, cfg_cols = [], [], []
    for r in by.values():
        cfg, m = r.get("config") or {}, r.get("metrics") or {}
        cfg_cols += [k for k in cfg if k not in cfg_cols and not isinstance(cfg[k], (dict, list))]
        metric_cols += [k for k in m if k not in metric_cols]
        rows.append({"attention": r.get("attn"), **cfg, **m})
    doc.table(rows, ["attention", *cfg_cols, *(PARAMS_COLUMNS or metric_cols)])


def fit_exponent(ts: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of log y against log T: memory ~ T^slope (2 for a materialised T x T score)."""
    pts = [(math.log(t), math.log(y)) for t, y in zip(ts, ys) if t > 0 and y and y > 0]
    if len({p[0] for p in pts}) < 2:
        return None
    mx = statistics.fmean(p[0] for p in pts)
    my = statistics.fmean(p[1] for p in pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx
