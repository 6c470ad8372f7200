"""The report's training section: per device, preset and task, the validation curves (mean over seeds ± std), the
final figures, the seed statistics (summary, retention ratio to BASELINE, Welch t-tests with Holm's correction) and
accuracy against model width; the length extrapolation of each section is extrapolation.py's.
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Sequence

from attnbench import stats
from attnbench.errors import AttnbenchError
from attnbench.record_groups import (TASK, _freeze, _num, _ok, attn_config, env_key, env_label, failed_seeds,
                                     train_settings)
from attnbench.report.document import _Doc
from attnbench.report.extrapolation import _extrapolation
from attnbench.report.names import (ATTN_PARAMS, BASELINE, CURVE_X, CURVE_Y, CURVES, LR, NA, PARAMS_SHARE, RATIO,
                                    RATIO_BOOT, RATIO_DELTA, SELECT_BY, SOLVED_AT, STATS_METRICS, TRAIN_ACC,
                                    TRAIN_COLUMNS, WIDTH, WIDTH_DERIVED)
from attnbench.report.paper import _per_run_wall
from attnbench.report.plots import Plot, _plot_lines, _save, slug
from attnbench.report.seeds import _baseline, _ci, _mean_std, _seed_values
from attnbench.report.series import Series, _fields, _figure, _series, one_per_seed, train_preset
from attnbench.tables import cell


def _train_section(doc: _Doc, recs, out: Path, plt, plots: list[Plot]) -> None:
    doc.add("## Training", "Validation loss and accuracy against step and wall-clock seconds; mean over seeds, the "
            "band is ± one standard deviation across seeds. Final figures are on the held-out test split. One "
            "section per device, preset and task: runs of different tasks are never set side by side.")
    by: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in recs:  # a width or learning-rate sweep of a preset is one section (its widths and rates in the heading)
        by[(env_key(r), train_preset(r, swept=True), train_settings(r)[1][TASK])].append(r)
    for (group, preset, task), rs in sorted(by.items(), key=lambda kv: repr(kv[0])):
        widths = sorted({w for r in rs if isinstance(w := (_fields(r)).get(WIDTH), int)})
        lrs = sorted({x for r in rs if isinstance(x := (_fields(r)).get(LR), (int, float))})
        swept = preset != "custom" and any(train_preset(r) != preset for r in rs)
        at = f" · {WIDTH} {', '.join(map(str, widths))}" if widths and swept else ""
        at += f" · {LR} {', '.join(cell(x) for x in lrs)}" if len(lrs) > 1 and swept else ""
        title = f"{group[0]} ({group[1]}) · preset {preset}{at} · task {task}"
        doc.add(f"### {title}", f"Environment: {env_label(group)}")
        series = _series(rs, train_settings)
        for s in series:
            note = degenerate_note(s.attn, attn_config(s.records[0]))
            s.label += f" ({note})" if note else ""
        name = f"{slug(group[0])}-{slug(preset)}-{slug(task)}"
        blocks = _width_blocks(series) if len(widths) > 1 and swept else [(None, series)]
        if plt is not None:  # a width sweep: one figure per width (nine attentions x four widths is unreadable)
            for w, block in blocks:
                at_w, file = ("", name) if w is None else (f" · {WIDTH} {w}", f"{name}-{slug(f'{WIDTH} {w}')}")
                _curves_plot(plt, block, title + at_w, out / f"train-{file}.png", group, plots, doc)
        rows = []
        for s in sorted(series, key=lambda s: _natural(s.label)):
            ok = one_per_seed(s.records)
            row: dict[str, Any] = {"attention": s.label, "seeds": len(ok),
                                   "failed": failed_seeds(s.records)}
            for c in TRAIN_COLUMNS:
                figs = [_figure(r.get("metrics") or {}, c) for r in ok]
                mu, sd = _mean_std([v for v in figs if v != NA])
                row[c] = mu if not sd else f"{cell(mu)} ± {cell(sd)}"  # mean ± std across seeds
                if NA in figs:  # named in a note; the seeds with a number, or n/a
                    row[c] = NA if mu is None else f"{cell(row[c])} (n={len(figs) - figs.count(NA)})"
            rows.append(row)
        doc.table(rows, ["attention", "seeds", "failed", *TRAIN_COLUMNS])
        doc.add("Cells with two seeds or more read mean ± standard deviation across seeds." + _gpu_time(series))
        for w, block in blocks:  # a width sweep's attentions are compared at each width, never across widths
            tested, left = _at_best_lr(block)
            _seed_stats(doc, tested, "" if w is None else f" at {WIDTH} {w}", left)
        _width_sweep(doc, series, plt, out / f"width-{name}.png", group, title, plots)
        _extrapolation(doc, series, plt, out / f"extrapolation-{name}.png", group, title, plots)


def _gpu_time(series: Sequence[Series]) -> str:
    """' The N runs took S s of wall in all.': each finished run's share of its group's wall (a stacked group's wall
    divided among its members; a record without a group trained alone), summed: the device time the runs cost."""
    shares = _per_run_wall([r for s in series for r in one_per_seed(s.records)], alone_if_unknown=True)
    return f" The {len(shares)} runs took {sum(shares):,.0f} s of wall in all (a stacked group's wall shared among " \
           "its runs)." if shares else ""


def _natural(label: str) -> list:
    """A sort key that orders the numbers inside a label as numbers (d_model=64 before d_model=128)."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", label)]


def _width_blocks(series: Sequence[Series]) -> list[tuple[int | None, list[Series]]]:
    """A width sweep's series per WIDTH, widths in order (series without one last), each labelled without the
    width and the settings derived from it where the labels stay distinct at that width."""
    by: dict[int | None, list[Series]] = defaultdict(list)
    for s in series:
        w = s.settings.get(WIDTH)
        by[w if isinstance(w, int) else None].append(s)
    blocks = []
    for w, block in sorted(by.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)):
        short = [replace(s, label=_label_without(s, WIDTH, *WIDTH_DERIVED)) for s in block]
        if w is not None and len({s.label for s in short}) == len(short):
            block = short
        blocks.append((w, sorted(block, key=lambda s: _natural(s.label))))
    return blocks


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
        mine, theirs = row[ATTN_PARAMS], base and _mean_std(_seed_values(base, ATTN_PARAMS))[0]
        row[PARAMS_SHARE] = mine / theirs if mine is not None and theirs else None
        if base is s:
            row[RATIO], row[RATIO_BOOT] = 1.0, "baseline"
        elif base is not None and base.label in groups:
            rr = stats.retention_ratio(groups[s.label], groups[base.label], higher_is_better=higher)
            row.update({RATIO: rr["ratio"], RATIO_BOOT: _ci(rr["ci_low"], rr["ci_high"]),
                        RATIO_DELTA: _ci(rr["delta_low"], rr["delta_high"])})
        rows.append(row)
    return rows


def _at_best_lr(block: Sequence[Series]) -> tuple[list[Series], list[Series]]:
    """(the series to compare, the ones left out): where an attention ran at several learning rates with its other
    settings equal, only its best by validation (_best_lr) is compared, as Zoology compares each architecture at
    the best of its sweep; testing every rate against every other would pair one attention's failed rate with
    another's good one and spend the Holm family on pairs nobody asked about."""
    by: dict[tuple, list[Series]] = defaultdict(list)
    for s in block:
        by[(s.attn, _freeze({k: v for k, v in s.settings.items() if k != LR}))].append(s)
    best = {id(_best_lr(c)[0]) for c in by.values()}
    return [s for s in block if id(s) in best], [s for s in block if id(s) not in best]


def _seed_stats(doc: _Doc, series: Sequence[Series], at: str = "", left: Sequence[Series] = ()) -> None:
    """Per STATS_METRICS metric, when some series has two seeds or more: the summary rows, then Welch t-tests of
    every pair with Holm's correction over that metric's pairs (stats.pairwise); `at` names the width a block of a
    width sweep is (its pairs are its own family); `left`: the series of other learning rates, named, not tested."""
    for metric, higher in STATS_METRICS:
        groups = {s.label: _seed_values(s, metric) for s in series if _seed_values(s, metric)}
        if not any(len(v) > 1 for v in groups.values()):
            continue
        inverted = "" if higher else f" (inverted, {BASELINE.upper()}'s over ours, so that below 1 is worse)"
        doc.add(f"#### {metric} across seeds{at} ({'higher' if higher else 'lower'} is better)",
                f"Mean ± standard deviation and the {stats.CONFIDENCE:.0%} confidence interval of the mean (Student "
                f"t). `{PARAMS_SHARE}`: the attention parameters over {BASELINE.upper()}'s. `{RATIO}` is the "
                f"retention ratio (Xue & Aletras 2023), mean {metric} over "
                f"{BASELINE.upper()}'s{inverted}, with {stats.CONFIDENCE:.0%} intervals from a percentile bootstrap "
                "over seeds and from the delta method (Student t). At a handful of seeds the bootstrap interval runs "
                "narrow (it sees no more spread than the seeds show): trust the delta interval and the p-values."
                + (f" Each attention at its best learning rate by mean `{SELECT_BY}` (validation, not test); its "
                   f"other rates are in the table above, not compared here: {', '.join(s.label for s in left)}."
                   if left else ""))
        doc.table(_summary_rows(series, groups, metric, higher),
                  ["attention", "n", metric, "95% CI", ATTN_PARAMS, PARAMS_SHARE, RATIO, RATIO_BOOT, RATIO_DELTA])
        tested = {k: v for k, v in groups.items() if len(v) > 1}
        tests = stats.pairwise(tested, higher_is_better=higher)
        pairs = [{"A": p["a"], "B": p["b"], "A - B": p["diff"], "95% CI of A - B": _ci(p["ci_low"], p["ci_high"]),
                  "p (Welch)": p["p"], "p_holm": p["p_holm"], "verdict": p["verdict"]} for p in tests]
        few = [k for k in groups if k not in tested]
        if pairs:
            doc.add(f"Every pair: Welch's t-test (unequal variances); p_holm is Holm-adjusted over this table's pairs; "
                    f"a pair is told apart when p_holm < {stats.ALPHA:.2g}."
                    + (f" Not tested ({stats.TOO_FEW}: one seed): {', '.join(few)}." if few else ""))
            doc.table(pairs, ["A", "B", "A - B", "95% CI of A - B", "p (Welch)", "p_holm", "verdict"])
        beaten = _baseline_beaten(series, tests, higher)
        if beaten:
            doc.add(f"**{beaten[0]} is not a baseline to keep here**: it is worse than {', '.join(beaten[1:])} "
                    f"(p_holm < {stats.ALPHA:.2g}), so a `{RATIO}` above 1 measures its shortfall at this point, not "
                    "what the others keep of it.")


def _baseline_beaten(series: Sequence[Series], pairs: Sequence[dict], higher: bool) -> list[str]:
    """[the baseline's label, then each series that beats it (Welch + Holm, p_holm < ALPHA)], or [] when none does:
    a retention ratio over a baseline that failed (MHA at a learning rate too high for it) is not retention."""
    base = next((s.label for s in series if _baseline(s, series) is s), None)
    better = []
    for p in pairs:
        if base not in (p["a"], p["b"]) or p["p_holm"] is None or p["p_holm"] >= stats.ALPHA:
            continue
        other, sign = (p["b"], -1) if p["a"] == base else (p["a"], 1)
        if sign * p["diff"] * (1 if higher else -1) > 0:
            better.append(other)
    return [base, *better] if better else []


def _label_without(s: Series, *keys: str) -> str:
    """A series' label with its `key=value` parts removed (a line of a plot whose x axis is that key)."""
    return " ".join(t for t in s.label.split(" ") if not any(t.startswith(f"{key}=") for key in keys))


def _best_lr(candidates: list[Series]) -> tuple[Series, bool]:
    """Of an attention's series at one width that differ in LR only, the one with the best mean SELECT_BY
    (validation accuracy), and whether there was a choice. Candidates without that figure are never chosen over
    one with it; with none having it, the choice is not made on test: the lowest learning rate stands."""
    if len(candidates) == 1:
        return candidates[0], False
    def key(s: Series):
        mu = _mean_std(_seed_values(s, SELECT_BY))[0]
        return (mu is not None, mu or 0.0, -(s.settings.get(LR) or 0.0))
    return max(candidates, key=key), True


def _width_sweep(doc: _Doc, series: Sequence[Series], plt, path: Path, group: tuple, title: str,
                 plots: list[Plot]) -> None:
    """Accuracy against model width (Zoology, Arora et al. 2023, arXiv 2312.04927, Figure 2): a line per attention
    over the series that differ from another series of that attention in WIDTH (and LR) only; mean over seeds ± std.
    Where several learning rates ran at a width, the point is the attention's best there by validation accuracy
    (_best_lr), as Zoology plots each architecture at the best of its learning-rate sweep."""
    at_width: dict[tuple, dict[int, list[Series]]] = defaultdict(lambda: defaultdict(list))
    for s in series:
        w = s.settings.get(WIDTH)
        if isinstance(w, int):
            rest = {k: v for k, v in s.settings.items() if k not in (WIDTH, LR) and k not in WIDTH_DERIVED}
            at_width[(s.attn, _freeze(rest))][w].append(s)
    lines_of: dict[tuple, dict[int, Series]] = {}
    chosen: dict[int, bool] = {}  # id(series) -> whether it was chosen among learning rates
    for key, by_w in at_width.items():
        lines_of[key] = {}
        for w, candidates in by_w.items():
            lines_of[key][w], chosen[id(lines_of[key][w])] = _best_lr(candidates)

    def one_line(by_w: dict[int, Series]) -> bool:  # each derived setting: fixed, or derived at every width
        return all(len({repr(s.settings.get(k)) for s in by_w.values()}) == 1
                   or all(s.settings.get(k) == f * w for w, s in by_w.items()) for k, f in WIDTH_DERIVED.items())

    lines_of = {k: dict(sorted(v.items())) for k, v in lines_of.items() if len(v) > 1 and one_line(v)}
    if not lines_of:
        return
    widths = sorted({w for by_w in lines_of.values() for w in by_w})
    rows, lines = [], []
    def line_label(by_w: dict[int, Series]) -> str:  # the attention and what stays fixed along its line
        return _label_without(next(iter(by_w.values())), WIDTH, LR, *WIDTH_DERIVED)

    for by_w in sorted(lines_of.values(), key=line_label):
        label = line_label(by_w)
        row: dict[str, Any] = {"attention": label}
        xs, ys, lo, hi = [], [], [], []
        for w, s in by_w.items():
            vals = _seed_values(s, TRAIN_ACC)
            mu, sd = _mean_std(vals)
            if mu is None:
                continue
            row[f"{WIDTH} {w}"] = f"{cell(mu)} ± {cell(sd or 0.0)} ({len(vals)})" + (
                f" at lr {cell(s.settings.get(LR))}" if chosen[id(s)] else "")
            # an accuracy: the ± std band clipped to [0, 1] (bimodal seeds, some solved and some not, overshoot)
            xs.append(w), ys.append(mu)
            lo.append(max(0.0, mu - (sd or 0.0))), hi.append(min(1.0, mu + (sd or 0.0)))
        rows.append(row)
        if xs:
            lines.append((label, xs, ys, lo, hi))
    doc.add(f"#### {TRAIN_ACC} against model width",
            f"Series that differ in `{WIDTH}` only, as the Zoology paper (Arora et al. 2023, arXiv 2312.04927, "
            f"Figure 2) plots recall accuracy against width. Cells: mean ± standard deviation across seeds (seeds). "
            f"The retention ratios above divide by {BASELINE.upper()} at the same width. Where several learning rates "
            f"ran, a cell is the attention's best at that width by mean `{SELECT_BY}` (validation, not test), as "
            f"Zoology plots the best of its learning-rate sweep; `at lr` names it.")
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
    _solved(doc, {line_label(by_w): by_w for by_w in lines_of.values()}, widths)


def _solved(doc: _Doc, lines: dict[str, dict[int, Series]], widths: Sequence[int]) -> None:
    """How many seeds solve (test accuracy >= SOLVED_AT) at each width of the sweep, and each attention against
    BASELINE over the widths both ran: the exact test stratified by width (stats.exact_strata), Holm over the
    attentions. Seeds of a recall task split into solved and stuck at the plateau, a two-valued outcome whose means a
    t-test reads poorly; the count is what differs. Only where some seed solves and some does not (a sweep of
    Shakespeare, where none reaches SOLVED_AT, shows no such table)."""
    solved = {label: {w: [v >= SOLVED_AT for v in _seed_values(s, TRAIN_ACC)] for w, s in by_w.items()}
              for label, by_w in lines.items()}
    flags = [f for by_w in solved.values() for fs in by_w.values() for f in fs]
    if all(flags) or not any(flags):
        return
    base = next((label for label in solved if label.split(" ")[0] == BASELINE), None)
    tests: dict[str, dict] = {}
    for label, by_w in solved.items():
        if base is None or label == base:
            continue
        both = [w for w in widths if by_w.get(w) and solved[base].get(w)]
        if both:
            tests[label] = stats.exact_strata([(sum(by_w[w]), len(by_w[w]), sum(solved[base][w]),
                                                len(solved[base][w])) for w in both])
    stats.adjust(list(tests.values()))
    rows = []
    for label, by_w in sorted(solved.items()):
        row: dict[str, Any] = {"attention": label}
        row.update({f"{WIDTH} {w}": f"{sum(fs)}/{len(fs)}" for w, fs in by_w.items()})
        row["solved"] = f"{sum(sum(fs) for fs in by_w.values())}/{sum(len(fs) for fs in by_w.values())}"
        t = tests.get(label)
        if t is not None:
            row[f"p vs {BASELINE}"], row["p_holm"] = t["p"], t.get("p_holm")
            row["verdict"] = (stats.verdict(label, base, t["diff"], t["p_holm"], True) if t["p"] is not None else
                              "not testable: at each width every seed of both solves, or none does")
        rows.append(row)
    doc.add(f"Seeds that solve (test accuracy >= {SOLVED_AT}), per width, at the rate the table above shows. `p vs "
            f"{BASELINE}`: do the attention's seeds solve as often as {BASELINE.upper()}'s, over the widths both ran? "
            "The conditional exact test stratified by width (Mehta, Patel & Gray 1985; Fisher's exact test within "
            "each width), two-sided; p_holm is Holm-adjusted over the attentions tested. A seed either solves or "
            "stays at the plateau, so the count says more than a t-test of means with three seeds.")
    doc.table(rows, ["attention", *(f"{WIDTH} {w}" for w in widths), "solved", f"p vs {BASELINE}", "p_holm",
                     "verdict"])
