"""The report layer: run records (results.py) -> a Markdown report (tabulate) with PNG plots beside it, and the
side-by-side comparison of two runs (`--compare A B`).

Rules held here (../shared/docs/benchmarking.md, "Records"):
- records are grouped by device and environment (device name, device type, driver, CUDA, torch); a plot, a table
  and a ratio only ever hold records of one group;
- a failed measurement (OOM, n/a) is a result: it stays in the tables and is marked on the plots;
- matplotlib is optional (`.[plot]`): without it the report has tables only and says so;
- multi-seed train results get their statistics from stats.py (confidence intervals, Welch t-tests with Holm's
  correction, the retention ratio to MHA with its confidence intervals);
- runs of the RCMHA paper's preset get a section of their own (report_paper.py): the paper's table, its claims
  tested, and the convolution x relative scoring x activation ablation.

Every metric name the report reads is declared in the block below, and nowhere else.
"""

from __future__ import annotations

import math
import os
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

from attnbench import __version__, report_paper, stats
from attnbench.config import ReportSettings
from attnbench.errors import AttnbenchError
from attnbench.record_groups import (DEVICE_KEY, PRESET, SEED, TASK, TASK_OPTS, TRAIN_FIELDS, TRAIN_IGNORE, _freeze,
                                     _num, _ok, attn_config, env_key, env_label, task_of, train_settings, with_defaults)
from attnbench.results import read, utc_now
from attnbench.tables import cell, screen, to_markdown

DEFAULT_RESULTS = ReportSettings.records  # where `report` reads records by default (config.py)
DEFAULT_OUT = ReportSettings.out  # where it writes report.md and the plots

# ---------------------------------------------------------------------------------------------- metric names
# The producers' names (bench.py: speed/memory, train.py: train, params.py: params), in one place.
SPEED_TIME, SPEED_P25, SPEED_P75 = "median_ms", "p25_ms", "p75_ms"
SPEED_COLUMNS = ("median_ms", "p25_ms", "p75_ms", "min_ms", "mean_ms", "tokens_per_s", "core_tflops",
                 "module_tflops", "pct_of_ceiling")
SPEED_RATIO = "ratio_to_mha"  # the producer's own ratio, measured within its run
# The plotted peak, first present: allocator peak of fwd+bwd (CUDA), of the forward alone (mode fwd), growth of the
# resident memory of a fresh process (CPU). All exclude inputs and weights (benchmarking.md, "Memory").
MEMORY_PEAKS = ("peak_alloc_mib", "peak_fwd_mib", "cpu_peak_rss_delta_mib")
MEMORY_COLUMNS = ("peak_alloc_mib", "peak_fwd_mib", "activations_mib", "reserved_mib", "nvml_peak_mib",
                  "nvml_avg_mib", "cpu_peak_rss_mib", "cpu_peak_rss_delta_mib", "estimate_mib", "inputs_mib",
                  "weights_mib")
TRAIN_COLUMNS = ("test_acc", "heldout_acc", "test_exact", "test_loss", "test_bpc", "val_loss_best", "val_acc_best",
                 "params", "steps", "tokens_per_s", "wall_s", "alloc_peak_mib", "nvml_avg_mib")
TRAIN_ACC = "test_acc"
CURVES = "curves"  # extra key of a train record: [{step, seconds, train_loss, val_loss, val_acc}, ...]
CURVE_X = (("step", "step"), ("seconds", "wall-clock seconds"))
CURVE_Y = (("val_loss", "validation loss"), ("val_acc", "validation accuracy"))
PARAMS_COLUMNS = None  # params records: every metric they carry is shown
# Seed statistics (stats.py) of multi-seed train runs: metric and whether higher is better.
STATS_METRICS = (("test_acc", True), ("test_exact", True), ("test_bpc", False))
ATTN_PARAMS = "attn_params"  # attention-only parameter count, shown beside the retention ratio where records carry it
BASELINE = "mha"  # retention ratios are an attention's score over this one's (MHE paper)
RATIO = f"x {BASELINE.upper()}"
RATIO_BOOT, RATIO_DELTA = f"{RATIO} CI (bootstrap)", f"{RATIO} CI (delta)"
# Length extrapolation (train --eval-ctx): metrics[EVAL_CTX] = [{ctx, loss, bpc, acc, n} | {ctx, status, reason}]
EVAL_CTX, EVAL_CTX_ACC, EVAL_CTX_LOSS = "eval_ctx", "acc", "loss"
REASON_CHARS = 48  # an n/a cell keeps the reason's first clause, about this long
WIDTH = "d_model"  # a width sweep (Zoology, arXiv 2312.04927, Figure 2): series differing in this setting only,
TASK_FIXED = ("ctx", "eval_stride")  # a synthetic task's sequence length is both (sources.py)
WIDTH_DERIVED = {"d_ff": 4}  # and in these when derived from it (TrainConfig.resolved: d_ff 0 -> 4 d_model)

# The figures the report reads as numbers, per record kind. One that holds anything else (a string such as "high",
# NaN, inf) reads NA in its cell, its column stays, and a note names it by file:line (bad_values).
NA = "n/a"
NUMERIC = {"speed": (*SPEED_COLUMNS, SPEED_RATIO), "memory": MEMORY_COLUMNS,
           "train": (*TRAIN_COLUMNS, "nvml_peak_mib", ATTN_PARAMS, report_paper.PAPER_ACC)}

# Config keys (bench.py, train.py) that place a record on an axis or say where it ran, not which series it is in.
# DEVICE_KEY, SEED, PRESET, TRAIN_FIELDS and TRAIN_IGNORE (train records) live in record_groups.py.
SEQ_LEN, NAME = "seq_len", "name"
PLOT_KEYS = ("mode", "dtype", "batch", "d_model", "heads")  # one plot per device group and these settings
# attn_config is absent from failed cells; causality is the check's own record (its seconds), not a setting
BENCH_IGNORE = (SEQ_LEN, DEVICE_KEY, NAME, "attn_config", "causal", "causality")

# The RCMHA paper's (Sugiharto et al. 2023, arXiv 2308.03429) Tiny Shakespeare accuracies are each attention's
# `paper_figures["acc"]` (docs/contract.md); attention.md, "RCMHA". report_paper.py sets them beside our runs of
# the paper's preset, with the paper's own metric.
PAPER_FIGURE = "acc"

# --compare: a change is flagged when it exceeds the measured spread.
COMPARE_METRICS = {"speed": (SPEED_TIME,), "memory": MEMORY_PEAKS,
                   "train": ("test_acc", "test_loss"), "params": ("total",)}  # params.py: qkv + out + other
MEMORY_TOLERANCE = 0.02  # memory has no sample spread: flag changes beyond 2 % (allocator block rounding)


# ---------------------------------------------------------------------------------------------- grouping
def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", str(text)).strip("-").lower() or "x"


def _latest(recs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Oldest first: by time, then file, then line number (results.read's `_source` is "file:line")."""
    def key(r: dict[str, Any]) -> tuple:
        path, _, line = (r.get("_source") or "").rpartition(":")
        return (r.get("time_utc") or "", path, int(line) if line.isdigit() else -1)

    return sorted(recs, key=key)


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


def train_preset(r: dict[str, Any], any_width: bool = False) -> str:
    """The train.py preset a run matches (every field but TRAIN_IGNORE equal), else 'custom'; with any_width, the
    preset it matches at its own WIDTH (fields derived from the width, such as d_ff = 4 d_model, derived again)."""
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
            width = fields.get(WIDTH) if any_width and isinstance(fields.get(WIDTH), int) else preset.d_model
            refs[name] = asdict(replace(preset, **{WIDTH: width}).resolved())
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


def fit_exponent(ts: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of log y against log T: memory ~ T^slope (2 for a materialised T x T score)."""
    pts = [(math.log(t), math.log(y)) for t, y in zip(ts, ys) if t > 0 and y and y > 0]
    if len({p[0] for p in pts}) < 2:
        return None
    mx = statistics.fmean(p[0] for p in pts)
    my = statistics.fmean(p[1] for p in pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx


# ---------------------------------------------------------------------------------------------- plotting
def load_pyplot():
    """matplotlib.pyplot with the Agg backend, or None when matplotlib is not installed (it is optional)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _style(plt, label: str) -> dict:
    """One colour per attention in every plot (tab20, registry order, baselines last), dashed for a reference path:
    the default 10-colour cycle repeats once a sweep has more than ten rows."""
    from attnbench.attention import names

    order = [*names(), "sdpa", "sdpa+proj"]
    name = label.split()[0]
    idx = order.index(name) if name in order else len(order) + sum(map(ord, name))
    return {"color": plt.get_cmap("tab20")(idx % 20), "linestyle": "--" if "reference" in label else "-"}


def _plot_lines(plt, ax, lines, failed, logx=True, logy=True):
    """lines: (label, xs, ys, lo|None, hi|None); failed: (label, x, status) drawn as crosses at the top."""
    colors = {}
    for label, xs, ys, lo, hi in lines:
        (ln,) = ax.plot(xs, ys, marker="o", ms=3, label=label, **_style(plt, label))
        colors[label] = ln.get_color()
        if lo is not None and hi is not None:
            ax.fill_between(xs, lo, hi, alpha=0.2, color=ln.get_color(), linewidth=0)
    if failed:
        top = max((y for _, _, ys, _, hi in lines for y in (hi or ys) if y is not None), default=1.0)
        for label, x, status in failed:
            ax.plot([x], [top], marker="x", ms=8, mew=2, color=colors.get(label, "red"), linestyle="none")
            ax.annotate(status.upper(), (x, top), textcoords="offset points", xytext=(3, 4), fontsize=7,
                        color=colors.get(label, "red"))
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    if len(lines) > 8:  # many rows: the legend beside the axes, not over the lines
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    elif lines:
        ax.legend(fontsize=7)


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------- the report
@dataclass
class Plot:
    path: Path
    kind: str
    group: tuple  # env_key: exactly one device/environment per plot
    title: str
    series: list[str]


@dataclass
class ReportResult:
    markdown: Path
    plots: list[Plot]
    problems: list[str]  # skipped lines, "file:line: why"
    notes: list[str]
    records: int


class _Doc:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)
        self.lines.append("")

    def table(self, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
        columns = [c for c in columns if any(r.get(c) is not None for r in rows)]
        self.add(to_markdown(rows, columns))


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


def _speed_section(doc: _Doc, recs, out: Path, plt, plots: list[Plot]) -> None:
    doc.add("## Speed", "Median time per call against sequence length T; the band is the interquartile range "
            "(p25-p75). `x MHA` is the ratio to MHA measured in the same run (same T, device and settings); "
            "it is left empty rather than divided across runs, whose medians can differ by more than the "
            "attentions do.")
    for group, settings, rs in _sweeps(recs):
        series = _series(rs, _plot_series_settings)
        title = _plot_title(group, settings)
        doc.add(f"### {title}", f"Environment: {env_label(group)}")
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
    for group, settings, rs in _sweeps(recs):
        series = _series(rs, _plot_series_settings)
        title = _plot_title(group, settings)
        doc.add(f"### {title}", f"Environment: {env_label(group)}")
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


def _curve(rec: dict[str, Any], x: str, y: str) -> dict[Any, tuple[float, float]]:
    """step -> (x, y) from a record's curves (a list of points, or a dict of equal-length lists)."""
    c = rec.get(CURVES) or []
    if isinstance(c, dict):
        c = [dict(zip(c, vals)) for vals in zip(*c.values())]
    out = {}
    for p in c:
        s, xv, yv = p.get("step"), p.get(x), p.get(y)
        if _num(xv) is not None and _num(yv) is not None:
            out[s] = (_num(xv), _num(yv))
    return out


def _mean_std(vals: Sequence[float]) -> tuple[float | None, float | None]:
    vals = [v for v in vals if v is not None]
    if not vals:
        return None, None
    mean = statistics.fmean(vals)
    if all(isinstance(v, int) for v in vals) and mean.is_integer():
        mean = int(mean)  # e.g. a parameter count, equal over seeds
    return mean, (statistics.stdev(vals) if len(vals) > 1 else None)


def _seed_band(recs: Sequence[dict[str, Any]], x: str, y: str):
    """Mean and std over seeds at the steps every seed recorded; x is the mean of the seeds' x at that step."""
    curves = [_curve(r, x, y) for r in recs]
    curves = [c for c in curves if c]
    if not curves:
        return None
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    xs = [statistics.fmean(c[s][0] for c in curves) for s in steps]
    ys, lo, hi = [], [], []
    for s in steps:
        mu, sd = _mean_std([c[s][1] for c in curves])
        ys.append(mu), lo.append(mu - (sd or 0.0)), hi.append(mu + (sd or 0.0))
    return xs, ys, (lo if len(curves) > 1 else None), (hi if len(curves) > 1 else None)


def _train_section(doc: _Doc, recs, out: Path, plt, plots: list[Plot]) -> None:
    doc.add("## Training", "Validation loss and accuracy against step and wall-clock seconds; mean over seeds, the "
            "band is ± one standard deviation across seeds. Final figures are on the held-out test split. One "
            "section per device, preset and task: runs of different tasks are never set side by side.")
    by: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in recs:  # a width sweep of a preset is one section (its widths in the heading)
        by[(env_key(r), train_preset(r, any_width=True), train_settings(r)[1][TASK])].append(r)
    for (group, preset, task), rs in sorted(by.items(), key=lambda kv: repr(kv[0])):
        widths = sorted({w for r in rs if isinstance(w := (_fields(r)).get(WIDTH), int)})
        at = f" · {WIDTH} {', '.join(map(str, widths))}" if widths and preset != train_preset(rs[0]) else ""
        title = f"{group[0]} ({group[1]}) · preset {preset}{at} · task {task}"
        doc.add(f"### {title}", f"Environment: {env_label(group)}")
        series = _series(rs, train_settings)
        for s in series:
            note = degenerate_note(s.attn, attn_config(s.records[0]))
            s.label += f" ({note})" if note else ""
        name = f"{slug(group[0])}-{slug(preset)}-{slug(task)}"
        if plt is not None:
            _curves_plot(plt, series, title, out / f"train-{name}.png", group, plots, doc)
        rows = []
        for s in series:
            ok = one_per_seed(s.records)
            row: dict[str, Any] = {"attention": s.label, "seeds": len(ok),
                                   "failed": sum(not _ok(r) for r in s.records)}
            for c in TRAIN_COLUMNS:
                figs = [_figure(r.get("metrics") or {}, c) for r in ok]
                mu, sd = _mean_std([v for v in figs if v != NA])
                row[c] = mu if not sd else f"{cell(mu)} ± {cell(sd)}"  # mean ± std across seeds
                if NA in figs:  # named in a note; the seeds with a number, or n/a
                    row[c] = NA if mu is None else f"{cell(row[c])} (n={len(figs) - figs.count(NA)})"
            rows.append(row)
        doc.table(rows, ["attention", "seeds", "failed", *TRAIN_COLUMNS])
        doc.add("Cells with two seeds or more read mean ± standard deviation across seeds.")
        _seed_stats(doc, series)
        _width_sweep(doc, series, plt, out / f"width-{name}.png", group, title, plots)
        _extrapolation(doc, series, plt, out / f"extrapolation-{name}.png", group, title, plots)


def _curves_plot(plt, series: Sequence[Series], title: str, path: Path, group: tuple, plots: list[Plot],
                 doc: _Doc) -> None:
    """Validation loss and accuracy against step and seconds (2 x 2), mean over seeds with a ± std band."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    drawn = False
    for i, (y, ylab) in enumerate(CURVE_Y):
        for j, (x, xlab) in enumerate(CURVE_X):
            lines = []
            for s in series:
                band = _seed_band(one_per_seed(s.records), x, y)
                if band and band[0]:
                    lines.append((s.label, *band))
            _plot_lines(plt, axes[i][j], lines, [], logx=False, logy=False)
            axes[i][j].set_xlabel(xlab)
            axes[i][j].set_ylabel(ylab)
            drawn = drawn or bool(lines)
    if not drawn:
        plt.close(fig)
        return
    fig.suptitle(f"training · {title}", fontsize=9)
    _save(plt, fig, path)
    plots.append(Plot(path, "train", group, title, [s.label for s in series]))
    doc.add(f"![training: {title}]({path.name})")


def degenerate_note(attn: str, acfg: dict[str, Any] | None) -> str | None:
    """"1 K/V head: MQA" where the attention's own `degenerate` check says that this run's setting makes it another
    attention (GQA, attnbench/attention/gqa.py: g = 1 is MQA, g = n is MHA), so that nobody reads such a series as
    what its name says; None otherwise. Old records get their kv_heads from record_groups.attn_config."""
    from attnbench.attention import get, names
    from attnbench.config import AttnConfig

    check = getattr(get(attn), "degenerate", None) if attn in names() else None
    if check is None or not acfg or acfg.get("kv_heads") is None:
        return None
    known = {f.name for f in fields(AttnConfig)}
    try:
        why = check(AttnConfig(**{k: v for k, v in acfg.items() if k in known and v is not None}))
    except (AttnbenchError, TypeError):
        return None
    if not why:
        return None
    g = acfg["kv_heads"]
    other = re.search(r" is (\w+)", why)  # degenerate's lines read "... is MQA[: why]"
    return f"{g} K/V head{'' if g == 1 else 's'}: {other.group(1) if other else why}"


def _ci(lo: float | None, hi: float | None) -> str | None:
    return None if lo is None or hi is None else f"[{cell(lo)}, {cell(hi)}]"


def _baseline(s: Series, series: Sequence[Series]) -> Series | None:
    """The BASELINE series a series is divided by: the one whose settings differ from its own in fewest keys."""
    def distance(b: Series) -> int:
        return sum(repr(b.settings.get(k)) != repr(s.settings.get(k)) for k in {*b.settings, *s.settings})

    return min((b for b in series if b.attn == BASELINE), key=lambda b: (distance(b), b.label), default=None)


def one_per_seed(recs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The finished runs, one per seed: a seed run again (at a later commit, or a copy of a record) counts once, by
    its latest record, so that n counts independent seeds and no run is weighed twice."""
    by: dict[Any, dict[str, Any]] = {}
    for r in _latest(r for r in recs if _ok(r)):
        seed = (r.get("config") or {}).get(SEED)
        by[seed if seed is not None else id(r)] = r
    return list(by.values())


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


def _summary_rows(series: Sequence[Series], groups: dict[str, list[float]], metric: str, higher: bool):
    """Per series: mean ± std, the CI of the mean, the attention-parameter count and the retention ratio to
    BASELINE (inverted where lower is better: stats.retention_ratio)."""
    rows = []
    for s in series:
        if s.label not in groups:
            continue
        sm = stats.summary(groups[s.label])
        row: dict[str, Any] = {"attention": s.label, "n": sm["n"],
                               metric: sm["mean"] if sm["std"] is None else f"{cell(sm['mean'])} ± {cell(sm['std'])}",
                               "95% CI": _ci(sm["ci_low"], sm["ci_high"]),
                               ATTN_PARAMS: _mean_std(_seed_values(s, ATTN_PARAMS))[0]}
        base = _baseline(s, series)
        if base is s:
            row[RATIO], row[RATIO_BOOT] = 1.0, "baseline"
        elif base is not None and base.label in groups:
            rr = stats.retention_ratio(groups[s.label], groups[base.label], higher_is_better=higher)
            row.update({RATIO: rr["ratio"], RATIO_BOOT: _ci(rr["ci_low"], rr["ci_high"]),
                        RATIO_DELTA: _ci(rr["delta_low"], rr["delta_high"])})
        rows.append(row)
    return rows


def _seed_stats(doc: _Doc, series: Sequence[Series]) -> None:
    """Per STATS_METRICS metric, when some series has two seeds or more: the summary rows, then Welch t-tests of
    every pair with Holm's correction over that metric's pairs (stats.pairwise)."""
    for metric, higher in STATS_METRICS:
        groups = {s.label: _seed_values(s, metric) for s in series if _seed_values(s, metric)}
        if not any(len(v) > 1 for v in groups.values()):
            continue
        inverted = "" if higher else f" (inverted, {BASELINE.upper()}'s over ours, so that below 1 is worse)"
        doc.add(f"#### {metric} across seeds ({'higher' if higher else 'lower'} is better)",
                f"Mean ± standard deviation and the {stats.CONFIDENCE:.0%} confidence interval of the mean (Student "
                f"t). `{RATIO}` is the retention ratio (Xue & Aletras 2023), mean {metric} over "
                f"{BASELINE.upper()}'s{inverted}, with {stats.CONFIDENCE:.0%} intervals from a percentile bootstrap "
                "over seeds and from the delta method (Student t). At a handful of seeds the bootstrap interval runs "
                "narrow (it sees no more spread than the seeds show): trust the delta interval and the p-values.")
        doc.table(_summary_rows(series, groups, metric, higher),
                  ["attention", "n", metric, "95% CI", ATTN_PARAMS, RATIO, RATIO_BOOT, RATIO_DELTA])
        tested = {k: v for k, v in groups.items() if len(v) > 1}
        pairs = [{"A": p["a"], "B": p["b"], "A - B": p["diff"], "95% CI of A - B": _ci(p["ci_low"], p["ci_high"]),
                  "p (Welch)": p["p"], "p_holm": p["p_holm"], "verdict": p["verdict"]}
                 for p in stats.pairwise(tested, higher_is_better=higher)]
        few = [k for k in groups if k not in tested]
        if pairs:
            doc.add(f"Every pair: Welch's t-test (unequal variances); p_holm is Holm-adjusted over this table's pairs; "
                    f"a pair is told apart when p_holm < {stats.ALPHA:.2g}."
                    + (f" Not tested ({stats.TOO_FEW}: one seed): {', '.join(few)}." if few else ""))
            doc.table(pairs, ["A", "B", "A - B", "95% CI of A - B", "p (Welch)", "p_holm", "verdict"])


def _label_without(s: Series, key: str) -> str:
    """A series' label with its `key=value` part removed (a line of a plot whose x axis is that key)."""
    return " ".join(t for t in s.label.split(" ") if not t.startswith(f"{key}="))


def _width_sweep(doc: _Doc, series: Sequence[Series], plt, path: Path, group: tuple, title: str,
                 plots: list[Plot]) -> None:
    """Accuracy against model width (Zoology, Arora et al. 2023, arXiv 2312.04927, Figure 2): a line per attention
    over the series that differ from another series of that attention in WIDTH only; mean over seeds ± std."""
    lines_of: dict[tuple, dict[int, Series]] = defaultdict(dict)
    for s in series:
        w = s.settings.get(WIDTH)
        if isinstance(w, int):
            rest = {k: v for k, v in s.settings.items() if k != WIDTH and k not in WIDTH_DERIVED}
            lines_of[(s.attn, _freeze(rest))][w] = s

    def one_line(by_w: dict[int, Series]) -> bool:  # each derived setting: fixed, or derived at every width
        return all(len({repr(s.settings.get(k)) for s in by_w.values()}) == 1
                   or all(s.settings.get(k) == f * w for w, s in by_w.items()) for k, f in WIDTH_DERIVED.items())

    lines_of = {k: dict(sorted(v.items())) for k, v in lines_of.items() if len(v) > 1 and one_line(v)}
    if not lines_of:
        return
    widths = sorted({w for by_w in lines_of.values() for w in by_w})
    rows, lines = [], []
    for by_w in sorted(lines_of.values(), key=lambda v: _label_without(next(iter(v.values())), WIDTH)):
        label = _label_without(next(iter(by_w.values())), WIDTH)
        row: dict[str, Any] = {"attention": label}
        xs, ys, lo, hi = [], [], [], []
        for w, s in by_w.items():
            vals = _seed_values(s, TRAIN_ACC)
            mu, sd = _mean_std(vals)
            if mu is None:
                continue
            row[f"{WIDTH} {w}"] = f"{cell(mu)} ± {cell(sd or 0.0)} ({len(vals)})"
            xs.append(w), ys.append(mu), lo.append(mu - (sd or 0.0)), hi.append(mu + (sd or 0.0))
        rows.append(row)
        if xs:
            lines.append((label, xs, ys, lo, hi))
    doc.add(f"#### {TRAIN_ACC} against model width",
            f"Series that differ in `{WIDTH}` only, as the Zoology paper (Arora et al. 2023, arXiv 2312.04927, "
            f"Figure 2) plots recall accuracy against width. Cells: mean ± standard deviation across seeds (seeds). "
            f"The retention ratios above divide by {BASELINE.upper()} at the same width.")
    if plt is not None and lines:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        _plot_lines(plt, ax, lines, [], logx=True, logy=False)
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.set_xlabel(f"model width ({WIDTH})")
        ax.set_ylabel(f"{TRAIN_ACC} (mean over seeds ± std)")
        ax.set_title(f"width · {title}", fontsize=9)
        _save(plt, fig, path)
        plots.append(Plot(path, "width", group, title, [ln[0] for ln in lines]))
        doc.add(f"![accuracy against width: {title}]({path.name})")
    doc.table(rows, ["attention", *(f"{WIDTH} {w}" for w in widths)])


def _ctx_entries(s: Series) -> dict[int, list[dict[str, Any]]]:
    """Evaluated length -> the metrics.eval_ctx entries of the series' successful seeds at that length."""
    by: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in one_per_seed(s.records):
        for e in (r.get("metrics") or {}).get(EVAL_CTX) or []:
            if isinstance(e, dict) and isinstance(e.get("ctx"), int):
                by[e["ctx"]].append(e)
    return dict(sorted(by.items()))


def _ctx_values(entries: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [v for v in (_num(e.get(key)) for e in entries if _ok(e)) if v is not None]


def _trained_ctx(r: dict[str, Any]) -> int | None:
    """The context length the model was trained at: a synthetic task's sequence length, else the preset's ctx."""
    t = task_of(r).get(SEQ_LEN)
    if str(t).isdigit():
        return int(t)
    ctx = ((r.get("config") or {}).get(TRAIN_FIELDS) or {}).get("ctx")
    return ctx if isinstance(ctx, int) else None


def _short_reason(entries: Sequence[dict[str, Any]]) -> str:
    """'n/a: learned absolute positions' from "learned absolute positions: a table of 256 rows": the reason's
    first clause, cut at a word near REASON_CHARS."""
    why = next((str(e.get("reason")) for e in entries if e.get("reason")), "")
    why = why.split(":", 1)[0].strip()
    if len(why) > REASON_CHARS:
        why = why[:REASON_CHARS].rsplit(" ", 1)[0] + " …"
    return f"{entries[0].get('status') or 'n/a'}" + (f": {why}" if why else "")


def _extrapolation(doc: _Doc, series: Sequence[Series], plt, path: Path, group: tuple, title: str,
                   plots: list[Plot]) -> None:
    """Length extrapolation (train --eval-ctx): test accuracy at each evaluated context, mean ± std over seeds,
    the retention ratio to BASELINE at each length (stats.retention_ratio, delta-method interval), and test loss
    against context on a plot."""
    pts = {s.label: _ctx_entries(s) for s in series}
    have = [s for s in series if pts[s.label]]
    if not have:
        return
    lengths = sorted({c for s in have for c in pts[s.label]})
    acc_rows, ratio_rows, lines, failed, trained = [], [], [], [], set()
    for s in have:
        t = _trained_ctx(s.records[0])
        trained.add(t)
        acc_row: dict[str, Any] = {"attention": s.label, "trained ctx": t}
        ratio_row: dict[str, Any] = {"attention": s.label, ATTN_PARAMS: _mean_std(_seed_values(s, ATTN_PARAMS))[0]}
        base = _baseline(s, have)
        xs, ys, lo, hi = [], [], [], []
        for c in lengths:
            entries = pts[s.label].get(c, [])
            acc = _ctx_values(entries, EVAL_CTX_ACC)
            mu, sd = _mean_std(acc)
            if acc:
                n = f" (n={len(acc)})" if len(acc) < len(entries) else ""
                acc_row[f"acc @{c}"] = (cell(mu) if sd is None else f"{cell(mu)} ± {cell(sd)}") + n
            elif entries:
                acc_row[f"acc @{c}"] = _short_reason(entries)
                failed.append((s.label, c, entries[0].get("status") or "n/a"))
            base_acc = _ctx_values(pts[base.label].get(c, []), EVAL_CTX_ACC) if base is not None else []
            if base is s and acc:
                ratio_row[f"{RATIO} @{c}"] = "baseline"
            elif acc and base_acc:
                rr = stats.retention_ratio(acc, base_acc, higher_is_better=True)
                ci = _ci(rr["delta_low"], rr["delta_high"])
                ratio_row[f"{RATIO} @{c}"] = cell(rr["ratio"]) + (f" {ci}" if ci else "")
            elif entries:
                ratio_row[f"{RATIO} @{c}"] = "n/a"
            loss = _ctx_values(entries, EVAL_CTX_LOSS)
            if loss:
                lmu, lsd = _mean_std(loss)
                xs.append(c), ys.append(lmu), lo.append(lmu - (lsd or 0.0)), hi.append(lmu + (lsd or 0.0))
        acc_rows.append(acc_row)
        ratio_rows.append(ratio_row)
        if xs:
            lines.append((s.label, xs, ys, lo, hi))
    doc.add("#### Length extrapolation",
            "The trained model's test split scored at each context length (`train --eval-ctx`; a full pass, each "
            "position once). Cells: test accuracy, mean ± standard deviation across seeds ((n=k): only k seeds had "
            "a value); n/a where the attention cannot run at that length, with the reason.")
    if plt is not None and lines:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        _plot_lines(plt, ax, lines, failed, logx=True, logy=False)
        for t in sorted(x for x in trained if x is not None):
            ax.axvline(t, color="grey", linestyle=":", linewidth=1)
            ax.annotate(f"trained ctx {t}", (t, 0.02), xycoords=("data", "axes fraction"), fontsize=7, rotation=90,
                        color="grey", xytext=(2, 0), textcoords="offset points")
        ax.set_xticks(lengths, [str(c) for c in lengths])
        ax.set_xlabel("evaluated context length")
        ax.set_ylabel("test loss (nats), mean over seeds ± std")
        ax.set_title(f"length extrapolation · {title}", fontsize=9)
        _save(plt, fig, path)
        plots.append(Plot(path, "extrapolation", group, title, [ln[0] for ln in lines]))
        doc.add(f"![length extrapolation: {title}]({path.name})")
    doc.table(acc_rows, ["attention", "trained ctx", *(f"acc @{c}" for c in lengths)])
    doc.add(f"Retention ratio at each length: mean accuracy over {BASELINE.upper()}'s at the same length "
            f"(Xue & Aletras 2023), with its {stats.CONFIDENCE:.0%} delta-method interval; n/a where either has no "
            "value there.")
    doc.table(ratio_rows, ["attention", ATTN_PARAMS, *(f"{RATIO} @{c}" for c in lengths)])


def paper_figure(attn: str) -> float | None:
    """The accuracy the RCMHA paper reports for `attn` (its class's paper_figures), None for an attention that
    declares none. Only registered attentions are looked up: a report never imports a file a record names."""
    from attnbench.attention import get, names

    if attn not in names():
        return None
    return (getattr(get(attn), "paper_figures", None) or {}).get(PAPER_FIGURE)


def _env_section(doc: _Doc, records) -> None:
    by: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by[env_key(r)].append(r)
    rows = []
    for key, rs in sorted(by.items(), key=lambda kv: repr(kv[0])):
        envs = [r.get("env") or {} for r in rs]

        def vals(name: str, short: bool = False) -> str | None:
            v = sorted({re.sub(r"^([0-9a-f]{10})[0-9a-f]+", r"\1", str(e.get(name))) if short else str(e.get(name))
                        for e in envs if e.get(name) is not None})
            return ", ".join(v) if v else None

        rows.append({"device": key[0], "type": key[1], "driver": key[2], "CUDA": key[3], "torch": key[4],
                     "records": len(rs), "kinds": ", ".join(sorted({r["kind"] for r in rs})),
                     "attnbench": vals("attnbench"), "commit": vals("git_commit", short=True),
                     "threads": vals("threads"),
                     "TF32 matmul": vals("tf32_matmul"), "SDPA flash": vals("sdpa_flash"),
                     "SDPA mem-efficient": vals("sdpa_mem_efficient"), "SDPA math": vals("sdpa_math")})
    doc.add("## Devices and environments", "Each section below names the one device and environment its records "
            "come from; records of different rows here are never mixed in one plot or ratio.")
    doc.table(rows, list(rows[0].keys()) if rows else [])


def build_report(paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike, plots: bool = True) -> ReportResult:
    """Read records, write <out_dir>/report.md and PNG plots beside it; return what was written."""
    files = [Path(p) for p in paths]
    missing = [str(p) for p in files if not p.exists()]
    if missing:
        raise AttnbenchError(f"no such file or folder: {', '.join(missing)}")
    records, problems = read(files)
    if not records:
        raise AttnbenchError(f"no attnbench records in {', '.join(map(str, files))}"
                             + (f" ({len(problems)} line(s) skipped; first: {problems[0]})" if problems else ""))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = bad_values(records)
    plt = load_pyplot() if plots else None
    if plots and plt is None:
        notes.append("matplotlib is not installed: tables only (pip install 'attnbench[plot]' for the plots)")
    doc = _Doc()
    sources = sorted({r["_source"].rsplit(":", 1)[0] for r in records})
    doc.add("# attnbench report", f"Written {utc_now()} by attnbench {__version__} from {len(records)} records in "
            f"{len(sources)} file(s): " + ", ".join(f"`{s}`" for s in sources) + ".")
    if problems:
        doc.add("Skipped lines:", *(f"- `{p}`" for p in problems))
    for n in notes:
        doc.add(f"> {n}")
    _env_section(doc, records)
    plot_list: list[Plot] = []
    kinds = defaultdict(list)
    for r in records:
        kinds[r["kind"]].append(r)
    if kinds["speed"]:
        _speed_section(doc, kinds["speed"], out, plt, plot_list)
    if kinds["memory"]:
        _memory_section(doc, kinds["memory"], out, plt, plot_list)
    if kinds["params"]:
        _params_section(doc, kinds["params"])
    if kinds["train"]:
        _train_section(doc, kinds["train"], out, plt, plot_list)
        paper = report_paper.section(kinds["train"])
        if paper:
            doc.add(*paper)
    md = out / "report.md"
    md.write_text("\n".join(doc.lines), encoding="utf-8")
    return ReportResult(md, plot_list, problems, notes, len(records))


# ---------------------------------------------------------------------------------------------- --compare
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
