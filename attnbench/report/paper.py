"""The report's "RCMHA paper, reproduced" section (issue 12, items 5 and 6): train records of `--preset paper`
-> Markdown lines, which build_report (__init__.py) writes into report.md.

Per device and configuration (records of different devices or settings are never pooled):
- the table: per attention and FFN activation, paper_acc (the authors' cumulative train+validation accuracy),
  held-out test accuracy and bpc, memory and wall time, each beside the paper's figure where the attention's class
  declares one (`paper_figures`, attention.md "RCMHA");
- whether the paper's accuracy lies inside our 95 % confidence interval of paper_acc;
- one sentence per paper claim (its accuracy ordering, read off `paper_figures["acc"]`), tested with Welch's t-test
  and Holm's correction (stats.pairwise) on paper_acc and on test_acc, within one FFN activation;
- the ablation the paper lacks: convolution x relative scoring x FFN activation, 8 cells, each factor's effect
  within every level of the other two (Welch, Holm over the table's contrasts), and once every cell has two runs the
  main effects and interactions as Welch contrasts of the cell means (stats.contrast; docs/paper.md says why not an
  ANOVA);
- the memory probes (`is_probe`: fixed-step runs alone) in a table of their own: the stacked cells' `(solo)` memory.
A rerun of a seed replaces the earlier record of that seed, so that no run counts twice.

Library code: `section(records)` returns Markdown lines; nothing here prints.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Sequence

from attnbench import stats
from attnbench.record_groups import (TRAIN_IGNORE, _freeze, _latest, _num, _ok, env_key, env_label, failed_seeds,
                                     train_settings)
from attnbench.tables import cell, to_markdown

PRESET = "paper"  # config.preset of the records this section reads
# Metric names of a paper-preset record (paper_run.py), declared once here.
PAPER_ACC, TEST_ACC, TEST_BPC, STEPS, WALL = "paper_acc", "test_acc", "test_bpc", "steps", "wall_s"
MEMORY = (("alloc_peak_mib", "alloc peak GiB"), ("nvml_peak_mib", "NVML peak GiB"), ("nvml_avg_mib", "NVML avg GiB"))
CLAIM_METRICS = (PAPER_ACC, TEST_ACC)  # the paper's claims are about accuracy: higher is better
ABLATION_METRICS = ((PAPER_ACC, True), (TEST_BPC, False))  # (metric, higher is better)
# Config keys: the FFN activation (a factor of the ablation), the seeds trained as one model (records before the
# stacked engine: the size of a lockstep group).
ACT, ENSEMBLE, RUNS_IN_GROUP = "act", "ensemble", "runs_in_group"
ACTS = ("relu", "relu2")  # the ablation's activation levels (issue 12, item 6): the effect is ACTS[1] - ACTS[0]
# Settings that do not split a configuration: the ablation's activation, how the step was executed.
CONFIG_IGNORE = (*TRAIN_IGNORE, ACT, "cuda_graph")
# The attention classes' paper_figures keys (attention.md, "RCMHA").
FIG_ACC, FIG_MEMORY, FIG_TIME = "acc", "avg_memory_gb", "train_time_s"
# The ablation's attention factors, read off each class's declared settings (docs/contract.md): an attention with a
# convolution takes conv_width (attention.md, MDHA), one with relative scoring takes pos (attention.md, RMHA).
FACTORS = (("conv", "conv_width"), ("relative", "pos"))
MISSING = "—"
PROBE_DROP = ("paper: avg GB", "paper: time", "runs in group", "wall / run")  # columns a solo probe leaves empty
GIB = 1024.0  # MiB per GiB (benchmarking.md, "Memory": powers of two)


# ---------------------------------------------------------------------------------------------- the classes
def figures(attn: str) -> dict[str, Any]:
    """The paper's figures an attention's class declares ({} for an unregistered or undeclaring attention)."""
    from attnbench.attention import get, names

    return dict(getattr(get(attn), "paper_figures", None) or {}) if attn in names() else {}


def paper_figure(attn: str) -> float | None:
    """The Tiny Shakespeare accuracy the RCMHA paper (Sugiharto et al. 2023, arXiv 2308.03429) reports for `attn`:
    its class's paper_figures["acc"] (docs/contract.md; attention.md, "RCMHA"), None for an attention that declares
    none. Only registered attentions are looked up (figures): a report never imports a file a record names."""
    return figures(attn).get(FIG_ACC)


def paper_attentions() -> list[str]:
    """The paper's attentions (those declaring a paper accuracy), in registry order: the ablation's grid."""
    from attnbench.attention import names

    return [a for a in names() if figures(a).get(FIG_ACC) is not None]


def factor_levels(attn: str) -> dict[str, bool]:
    """{"conv": bool, "relative": bool} of an attention (FACTORS)."""
    from attnbench.attention import get

    declared = getattr(get(attn), "settings", ())
    return {name: setting in declared for name, setting in FACTORS}


# ---------------------------------------------------------------------------------------------- grouping
def paper_records(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("kind") == "train" and (r.get("config") or {}).get("preset") == PRESET]


def is_probe(r: dict[str, Any]) -> bool:
    """A memory probe: a run of a fixed step count (`--steps`, the preset's epochs set to 0) trained alone, as
    `scripts/gpu_paper.sh memory` makes them. It supplies a stacked cell's per-run memory (`(solo)`) and is listed
    on its own, never averaged into the table of full runs or tested against them."""
    fields = (r.get("config") or {}).get("preset_fields") or {}
    return "epochs" in fields and not _num(fields.get("epochs")) and _group_size(r) in (None, 1)


def _act(r: dict[str, Any]) -> str:
    fields = (r.get("config") or {}).get("preset_fields") or {}
    return str(fields.get(ACT, "?"))


def _cell(r: dict[str, Any]) -> tuple[str, str]:
    """(attention, act): the grid cell a record belongs to."""
    return train_settings(r)[0], _act(r)


def _config_key(r: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in train_settings(r)[1].items() if k not in CONFIG_IGNORE}


def _groups(recs: Sequence[dict[str, Any]]):
    """(env key, configuration label, records) per device and configuration; the label names the settings in which
    configurations of one device differ ('' when there is one)."""
    by: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        by[(env_key(r), _freeze(_config_key(r)))].append(r)
    for (env, cfg), rs in sorted(by.items(), key=lambda kv: repr(kv[0])):
        others = [dict(c) for e, c in by if e == env]
        varying = sorted(k for k in dict(cfg) if len({o.get(k) for o in others}) > 1)
        yield env, " ".join(f"{k}={dict(cfg)[k].strip(chr(39))}" for k in varying), rs


def cells(recs: Sequence[dict[str, Any]]) -> tuple[dict[tuple[str, str], list[dict]], dict[tuple[str, str], int]]:
    """(attention, act) -> its ok records, the latest per seed; and -> its seeds without a finished run (a seed
    stopped in one device call and finished by --resume in the next is not counted: record_groups.failed_seeds)."""
    ok: dict[tuple[str, str], dict[Any, dict]] = defaultdict(dict)
    by: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in _latest(recs):
        key = _cell(r)
        by[key].append(r)
        if _ok(r):
            ok[key][(r.get("config") or {}).get("seed")] = r
    failed = {k: n for k, rs in by.items() if (n := failed_seeds(rs))}
    return {k: list(v.values()) for k, v in ok.items()}, failed


def _order(keys) -> list[tuple[str, str]]:
    """Registry order of attentions, then ACTS order of activations; unknown names last, alphabetically."""
    from attnbench.attention import names

    reg = names()
    return sorted(keys, key=lambda k: (reg.index(k[0]) if k[0] in reg else len(reg), k[0],
                                       ACTS.index(k[1]) if k[1] in ACTS else len(ACTS), k[1]))


def values(recs: Sequence[dict[str, Any]], metric: str) -> list[float]:
    vs = [_num((r.get("metrics") or {}).get(metric)) for r in recs]
    return [float(v) for v in vs if v is not None]


def unfinished(records: Sequence[dict[str, Any]], wanted: Sequence[tuple[str, str]], seeds: int) -> list[tuple]:
    """The cells of `wanted` ((attention, act)) with fewer than `seeds` finished full runs among the paper-preset
    `records` (memory probes not counted): what `scripts/gpu_paper.sh next` still has to train, in `wanted`'s order."""
    ok, _ = cells([r for r in paper_records(records) if not is_probe(r)])
    return [c for c in wanted if len(ok.get(tuple(c), [])) < seeds]


def unprobed(records: Sequence[dict[str, Any]], wanted: Sequence[tuple[str, str]]) -> list[tuple]:
    """The cells of `wanted` without a finished memory probe or another finished run alone that measured its GPU
    memory (a probe on a CPU measures none: it still counts, as there is nothing more to measure there)."""
    recs = paper_records(records)
    have = {key[1:] for key in solo_memory(recs)} | {_cell(r) for r in _latest(recs)
                                                     if _ok(r) and is_probe(r)}
    return [c for c in wanted if tuple(c) not in have]


# ---------------------------------------------------------------------------------------------- formatting
def mean_sd(vs: Sequence[float], scale: float = 1.0) -> str:
    """'0.5612 ± 0.0021', one value as itself, no values as MISSING."""
    sm = stats.summary([v / scale for v in vs])
    if sm["mean"] is None:
        return MISSING
    return cell(sm["mean"]) if sm["std"] is None else f"{cell(sm['mean'])} ± {cell(sm['std'])}"


def span(vs: Sequence[float]) -> str:
    """Counts: '156,850' when every run has it, else '156,000 – 156,850'."""
    if not vs:
        return MISSING
    lo, hi = cell(int(min(vs))), cell(int(max(vs)))
    return lo if lo == hi else f"{lo} – {hi}"


def ci(vs: Sequence[float]) -> str:
    sm = stats.summary(vs)
    if sm["n"] == 0:
        return MISSING
    return stats.TOO_FEW if sm["ci_low"] is None else f"[{cell(sm['ci_low'])}, {cell(sm['ci_high'])}]"


def duration(s: float | None) -> str:
    """7320 -> '2 h 02 min', 212 -> '3 min 32 s', 41.6 -> '42 s'."""
    if s is None:
        return MISSING
    s = round(s)
    if s >= 3600:
        return f"{s // 3600} h {round(s % 3600 / 60):02d} min"
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def _fig(value: Any, fmt=cell) -> str:
    return MISSING if value is None else fmt(value)


# ---------------------------------------------------------------------------------------------- the table
def quality_rows(ok, failed) -> list[dict[str, Any]]:
    rows = []
    for attn, act in _order({*ok, *failed}):
        rs, fig = ok.get((attn, act), []), figures(attn)
        acc = values(rs, PAPER_ACC)
        rows.append({"attention": attn, "act": act, "runs": len(rs), "failed": failed.get((attn, act), 0),
                     PAPER_ACC: mean_sd(acc), "95% CI": ci(acc), "paper: acc": _fig(fig.get(FIG_ACC)),
                     TEST_ACC: mean_sd(values(rs, TEST_ACC)), TEST_BPC: mean_sd(values(rs, TEST_BPC))})
    return rows


def _group_size(r: dict[str, Any]) -> float | None:
    cfg = r.get("config") or {}
    return _num(cfg.get(ENSEMBLE, cfg.get(RUNS_IN_GROUP)))


def _per_run_wall(rs: Sequence[dict[str, Any]], alone_if_unknown: bool = False) -> list[float]:
    """A group's wall time divided among its runs: the GPU time one run cost. A record that names no group size is
    left out, or with alone_if_unknown taken for a run trained alone (records written before groups existed)."""
    out = []
    for r in rs:
        wall, n = _num((r.get("metrics") or {}).get(WALL)), _group_size(r) or (1 if alone_if_unknown else None)
        if wall is not None and n:
            out.append(wall / n)
    return out


def solo_memory(recs: Sequence[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """(env key, attention, act) -> the finished runs trained alone that measured their memory, of any length and
    configuration: what a stacked cell's per-run memory is read from (a stacked record holds its group's)."""
    by: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in _latest(recs):
        if _ok(r) and _group_size(r) in (None, 1) and values([r], MEMORY[0][0]):
            by[(env_key(r), *_cell(r))].append(r)
    return by


def cost_rows(ok, failed, solo: dict[tuple[str, str], list[dict]] | None = None) -> list[dict[str, Any]]:
    """Per cell: steps, memory, wall time beside the paper's; a cell whose runs hold no per-run memory (stacked)
    takes it from `solo` ((attention, act) -> runs trained alone), marked `(solo)`."""
    rows = []
    for attn, act in _order({*ok, *failed}):
        rs, fig = ok.get((attn, act), []), figures(attn)
        group = sorted({int(n) for r in rs if (n := _group_size(r))})
        row = {"attention": attn, "act": act, "runs": len(rs), STEPS: span(values(rs, STEPS))}
        mem_rs, mark = rs, ""
        if not any(values(rs, metric) for metric, _ in MEMORY) and (solo or {}).get((attn, act)):
            mem_rs, mark = solo[(attn, act)], " (solo)"
        row.update({label: mean_sd(values(mem_rs, metric), GIB) + (mark if values(mem_rs, metric) else "")
                    for metric, label in MEMORY})
        wall, per_run = stats.summary(values(rs, WALL))["mean"], stats.summary(_per_run_wall(rs))["mean"]
        row.update({"paper: avg GB": _fig(fig.get(FIG_MEMORY)), "wall": duration(wall),
                    "runs in group": ", ".join(map(str, group)) or MISSING,
                    "wall / run": duration(per_run), "paper: time": _fig(fig.get(FIG_TIME), duration)})
        rows.append(row)
    return rows


def device_time_line(ok) -> str:
    """The device time the table's runs took: each run's share of its group's wall (_per_run_wall), summed, so that
    a stacked group's wall counts once; the time between device calls (a cell stopped and resumed) is not in it."""
    runs = [r for rs in ok.values() for r in rs]
    total = sum(_per_run_wall(runs, alone_if_unknown=True))
    return (f"The {len(runs)} finished runs of this table took {cell(round(total))} s of device wall in all "
            f"({duration(total)}; a stacked group's wall counted once, the start of each device call not counted).")


def reach_lines(ok) -> list[str]:
    """Per cell with a paper accuracy: is the paper's figure inside our 95 % CI of paper_acc?"""
    out = []
    for attn, act in _order(ok):
        paper, acc = figures(attn).get(FIG_ACC), values(ok[(attn, act)], PAPER_ACC)
        if paper is None or not acc:
            continue
        sm, who = stats.summary(acc), f"{attn} (act {act}, n={len(acc)})"
        if sm["ci_low"] is None:
            out.append(f"- {who}: {stats.TOO_FEW} for an interval; ours {cell(sm['mean'])}, the paper's {paper}.")
        elif sm["ci_low"] <= paper <= sm["ci_high"]:
            out.append(f"- {who}: the paper's {paper} lies inside our 95 % CI {ci(acc)}.")
        else:
            side = "above" if paper > sm["ci_high"] else "below"
            out.append(f"- {who}: the paper's {paper} lies {side} our 95 % CI {ci(acc)} "
                       f"(ours {cell(sm['mean'])}, {sm['mean'] - paper:+.4f}).")
    return out


# ---------------------------------------------------------------------------------------------- the claims
def _n(p: dict[str, Any]) -> str:
    return f"n={p['n_a']}" if p["n_a"] == p["n_b"] else f"n={p['n_a']} vs {p['n_b']}"


def claim_verdict(p: dict[str, Any]) -> str:
    """The claim 'a > b' against one stats.pairwise row: holds, does not hold, cannot be told apart, too few runs."""
    if not p["n_a"] or not p["n_b"]:
        return f"no runs of {p['a'] if not p['n_a'] else p['b']}"
    if p["n_a"] < 2 or p["n_b"] < 2:
        return f"{stats.TOO_FEW} ({_n(p)})"
    if p["p_holm"] is None:
        return f"not testable: no spread in either group ({_n(p)})"
    shown = f"{round(p['diff'], 4) + 0.0:+.4f}, {stats.format_p(p['p_holm'], 'p_holm')}"  # + 0.0: no '-0.0000'
    if p["p_holm"] >= stats.ALPHA:
        return f"cannot be told apart at {_n(p)} ({shown})"
    return f"holds ({shown})" if p["diff"] > 0 else f"does not hold: the opposite is significant ({shown})"


def claim_lines(ok, act: str, attns: Sequence[str]) -> list[str]:
    """One sentence per claim 'a > b' of the paper (a's paper accuracy above b's) among `attns`, at activation
    `act`: the verdict on each CLAIM_METRICS, Holm-corrected over that metric's claims."""
    ranked = sorted((a for a in attns if figures(a).get(FIG_ACC) is not None), key=lambda a: -figures(a)[FIG_ACC])
    verdicts: dict[tuple[str, str], list[str]] = defaultdict(list)
    for metric in CLAIM_METRICS:
        groups = {a: values(ok.get((a, act), []), metric) for a in ranked}
        for p in stats.pairwise(groups, higher_is_better=True):
            verdicts[(p["a"], p["b"])].append(f"{metric} {claim_verdict(p)}")
    out = []
    for (a, b), said in verdicts.items():
        fa, fb = figures(a)[FIG_ACC], figures(b)[FIG_ACC]
        if fa > fb:
            out.append(f"- {a} > {b} (paper {fa} > {fb}): " + "; ".join(said) + ".")
    return out


# ---------------------------------------------------------------------------------------------- the ablation
def _levels(attn: str, act: str) -> dict[str, Any]:
    return {**factor_levels(attn), ACT: act}


def _yes(v: Any) -> str:
    return ("yes" if v else "no") if isinstance(v, bool) else str(v)


def grid_rows(ok, acts: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for attn in paper_attentions():
        for act in acts:
            rs = ok.get((attn, act), [])
            row = {"attention": attn, **{k: _yes(v) for k, v in _levels(attn, act).items()}, "n": len(rs)}
            row.update({metric: mean_sd(values(rs, metric)) for metric, _ in ABLATION_METRICS})
            rows.append(row)
    return rows


def contrasts(acts: Sequence[str]) -> list[tuple[str, tuple[str, str], tuple[str, str]]]:
    """(factor, high cell, low cell) for each factor and each level of the other two: the pairs of grid cells that
    differ in that factor alone (high: with the convolution / relative scoring, or ACTS[1])."""
    cells_ = [(a, act) for a in paper_attentions() for act in acts]
    out = []
    for factor in [name for name, _ in FACTORS] + [ACT]:
        for hi in cells_:
            for lo in cells_:
                lh, ll = _levels(*hi), _levels(*lo)
                if all(lh[k] == ll[k] for k in lh if k != factor) and \
                        ((lh[factor] is True and ll[factor] is False) or (lh[factor], ll[factor]) == ACTS[::-1]):
                    out.append((factor, hi, lo))
    return out


def _within(factor: str, cell_: tuple[str, str]) -> str:
    return " · ".join(f"{k} {_yes(v)}" for k, v in _levels(*cell_).items() if k != factor)


def _label(factor: str, hi: tuple[str, str], lo: tuple[str, str]) -> str:
    return f"{hi[1]} − {lo[1]} ({hi[0]})" if factor == ACT else f"{hi[0]} − {lo[0]} ({hi[1]})"


def effect_rows(ok, acts: Sequence[str]) -> list[dict[str, Any]]:
    """One row per contrast: mean difference high - low with its 95 % CI and Welch p-value, Holm-adjusted over the
    table's contrasts, separately per ABLATION_METRICS metric."""
    todo = contrasts(acts)
    rows = [{"factor": f, "within": _within(f, hi), "contrast": _label(f, hi, lo),
             "n": f"{len(ok.get(hi, []))} vs {len(ok.get(lo, []))}"} for f, hi, lo in todo]
    for metric, _ in ABLATION_METRICS:
        tests = stats.adjust([stats.welch(values(ok.get(hi, []), metric), values(ok.get(lo, []), metric))
                              for _, hi, lo in todo])
        for row, t in zip(rows, tests):
            row[f"Δ {metric} [95% CI]"] = _delta(t)
            row[f"p_holm ({metric})"] = _p(t)
    return rows


def _code(attn: str, act: str, factor: str) -> int:
    """+1 at a factor's high level (with the convolution / relative scoring, ACTS[1]), -1 at its low level."""
    v = _levels(attn, act)[factor]
    return 1 if v is True or v == ACTS[1] else -1


def factorial_effects() -> list[tuple[str, list[tuple[tuple[str, str], float]]]]:
    """(name, [(cell, weight)]) of every factorial effect of the 2^k grid (paper_attentions() x ACTS): a main effect
    is the mean of the cells at the factor's high level less the mean at its low level (weights ±1/2^(k-1)); an
    interaction of factors S is how much the effect of one changes with the others, each averaged over the rest
    (weights prod_{f in S} x_f / 2^(k-|S|), x_f = ±1: Box, Hunter & Hunter 2005, "Statistics for Experimenters",
    ch. 5, effects of a 2^k factorial as contrasts of the cell means)."""
    from itertools import combinations

    names = [name for name, _ in FACTORS] + [ACT]
    grid = [(a, act) for a in paper_attentions() for act in ACTS]
    out = []
    for size in range(1, len(names) + 1):
        for subset in combinations(names, size):
            scale = 2 ** (len(names) - size)
            out.append((" × ".join(subset),
                        [(c, math.prod(_code(*c, f) for f in subset) / scale) for c in grid]))
    return out


def factorial_lines(ok) -> list[str]:
    """The main effects and interactions of the ablation as Welch contrasts of the cell means (stats.contrast), Holm
    over the effects per metric; a sentence naming the cells that lack two runs when the grid is not complete."""
    effects = factorial_effects()
    if not effects or not effects[0][1]:  # no paper attention registered: no grid
        return []
    grid = [c for c, _ in effects[0][1]]
    short = [f"{a} {act}" for a, act in grid if len(ok.get((a, act), [])) < 2]
    if short:
        return [f"Main effects and interactions: not computed until every cell of the grid has two runs or more "
                f"(short: {', '.join(short)}).", ""]
    rows = [{"effect": name, "runs per cell": span([len(ok[c]) for c, _ in weights])} for name, weights in effects]
    spread = []
    for metric, _ in ABLATION_METRICS:
        tests = stats.adjust([stats.contrast([values(ok[c], metric) for c, _ in weights], [w for _, w in weights])
                              for _, weights in effects])
        for row, t in zip(rows, tests):
            row[f"{metric} [95% CI]"] = _delta(t)
            row[f"df ({metric})"] = MISSING if t["df"] is None else f"{t['df']:.1f}"
            row[f"p_holm ({metric})"] = _p_holm(t)  # every cell has two runs or more here
        sds = [stats.summary(values(ok[c], metric))["std"] for c in grid]
        if min(sds) > 0:
            spread.append(f"{max(sds) / min(sds):.1f}× on {metric}")
    why = (f"the cells' standard deviations differ up to {' and '.join(spread)}, " if spread else
           "the cells' variances need not be equal, ")
    return ["Main effects and interactions, each a contrast of the eight cell means (a main effect: the cells with "
            "the factor less those without; an interaction: how much one factor's effect changes with the other, "
            "the rest averaged). Welch contrasts, not an ANOVA: " + why + "and an ANOVA pools them into one "
            "variance; each contrast takes its own variance and the Welch-Satterthwaite df (stats.contrast; with "
            "equal runs per cell its t is the ANOVA effect's). p Holm-adjusted over the effects per metric.", "",
            _table(rows), ""]


def _delta(t: dict[str, Any]) -> str:
    if t["diff"] is None:
        return MISSING
    return f"{t['diff']:+.4g}" + ("" if t["ci_low"] is None else f" [{t['ci_low']:+.4g}, {t['ci_high']:+.4g}]")


def _p(t: dict[str, Any]) -> str:
    if t["diff"] is None:
        return MISSING
    if t["n_a"] < 2 or t["n_b"] < 2:
        return stats.TOO_FEW
    return _p_holm(t)


def _p_holm(t: dict[str, Any]) -> str:
    """A tested figure's Holm-adjusted p ('<0.001', '0.083'), or 'no spread' where nothing varied."""
    return "no spread" if t["p"] is None else stats.format_p(t["p_holm"], "").lstrip("=")


# ---------------------------------------------------------------------------------------------- the section
def _table(rows: list[dict[str, Any]]) -> str:
    return to_markdown(rows, list(rows[0]) if rows else [])


def _group_lines(recs: Sequence[dict[str, Any]], solo: dict[tuple[str, str], list[dict]] | None = None) -> list[str]:
    ok, failed = cells(recs)
    present = [a for a, _ in _order({*ok, *failed})]
    acts = [*ACTS, *sorted({act for _, act in {*ok, *failed}} - set(ACTS))]
    lines = [_table(quality_rows(ok, failed)), "", _table(cost_rows(ok, failed, solo)), "",
             "Memory is one run's where runs in group is 1. A record of stacked seeds holds its group's memory only "
             "(under group_* keys), so such a cell reads `(solo)`, the memory of a run of the same attention and "
             "activation trained alone on this device (`scripts/gpu_paper.sh memory`: a few thousand steps, as the "
             "peak comes in the first round, the Transformer-XL memory full after 16 steps), or `—` without one; "
             "records of the former lockstep engine (runs_in_group) hold their group's memory in these columns. "
             "`wall` is the group's wall time, which every run of the group shares; `wall / run` divides it among "
             "the group's runs. The paper writes GB without saying whether it means 10⁹ or 2³⁰ bytes (2.98 GB = "
             "2.78 GiB if 10⁹).", "", device_time_line(ok), ""]
    reach = reach_lines(ok)
    if reach:
        lines += ["Is the paper's accuracy within our reach (inside our 95 % CI of paper_acc)?", "", *reach, ""]
    ranked = list(dict.fromkeys(a for a in present if figures(a).get(FIG_ACC) is not None))
    for act in acts:
        claims = claim_lines(ok, act, ranked) if any((a, act) in ok for a in ranked) else []
        if claims:
            lines += [f"The paper's claims with act {act}: Welch's t-test, Holm-adjusted over each metric's claims "
                      f"(a claim holds where p_holm < {stats.ALPHA:.2g}); the signed figure is ours, a − b.", "",
                      *claims, ""]
    if ranked:
        lines += ["#### Ablation: convolution × relative scoring × FFN activation", "",
                  "The cells: the paper's four attentions are the convolution / relative-scoring cells, the FFN "
                  "activation the third factor; `—` marks a cell without runs.", "",
                  _table(grid_rows(ok, acts)), "",
                  "Each factor's effect within every level of the other two (high − low: with − without, "
                  f"{ACTS[1]} − {ACTS[0]}); Welch's t-test, p Holm-adjusted over this table per metric.", "",
                  _table(effect_rows(ok, acts)), "", *factorial_lines(ok)]
    return lines


def section(records: Sequence[dict[str, Any]]) -> list[str]:
    """The Markdown lines of the section, [] when no record is of the paper preset."""
    recs = paper_records(records)
    if not recs:
        return []
    lines = ["## RCMHA paper, reproduced",
             "",
             f"Train records of `--preset {PRESET}` (Sugiharto et al. 2023, arXiv 2308.03429; attention.md, RCMHA). "
             "`paper_acc` is the authors' metric: a running next-character accuracy over every training and "
             "validation batch since the start; `test_acc` and `test_bpc` are one full pass over the last 10 % at "
             "the final weights. Mean ± standard deviation across seeds; the 95 % CI is the mean's (Student t). A "
             "rerun of a seed replaces its earlier record.", ""]
    solo = solo_memory(recs)
    for env, label, rs in _groups([r for r in recs if not is_probe(r)]):
        lines += [f"### {env[0]} ({env[1]})" + (f" · {label}" if label else ""), "", f"Environment: {env_label(env)}",
                  "", *_group_lines(rs, {k[1:]: v for k, v in solo.items() if k[0] == env})]
    probes: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        if is_probe(r):
            probes[env_key(r)].append(r)
    for env, rs in sorted(probes.items(), key=lambda kv: repr(kv[0])):
        lines += [f"### {env[0]} ({env[1]}) · memory probes", "",
                  "Runs of a fixed step count trained alone (`scripts/gpu_paper.sh memory`): the `(solo)` memory of "
                  "the stacked cells above; their accuracy after so few steps is not the paper's and is not shown.",
                  "", _table([{k: v for k, v in row.items() if k not in PROBE_DROP}
                              for row in cost_rows(*cells(rs))]), ""]
    return lines
