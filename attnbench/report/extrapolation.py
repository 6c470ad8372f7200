"""The report's length extrapolation part of a training section (train --eval-ctx): test accuracy at each evaluated
context, mean ± std over seeds, the retention ratio to BASELINE at each length, and test loss against context.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from attnbench import stats
from attnbench.record_groups import TRAIN_FIELDS, _num, _ok, task_of
from attnbench.report.document import _Doc
from attnbench.report.names import (ATTN_PARAMS, BASELINE, EVAL_CTX, EVAL_CTX_ACC, EVAL_CTX_LOSS, RATIO, REASON_CHARS,
                                    SEQ_LEN)
from attnbench.report.plots import Plot, _plot_lines, _save
from attnbench.report.seeds import _baseline, _ci, _mean_std, _seed_values
from attnbench.report.series import Series, one_per_seed
from attnbench.tables import cell


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


def _pairs(s: Series, t: int, c: int, key: str) -> tuple[list[float], list[float]]:
    """Each seed's figure at length c and at its trained length t, paired (the same model scored twice)."""
    at_c, at_t = [], []
    for r in one_per_seed(s.records):
        by = {e.get("ctx"): e for e in (r.get("metrics") or {}).get(EVAL_CTX) or [] if isinstance(e, dict)}
        x, y = (_ctx_values([by[k]], key) if k in by else [] for k in (c, t))
        if x and y:
            at_c.append(x[0]), at_t.append(y[0])
    return at_c, at_t


def _gains(doc: _Doc, have: Sequence[Series], lengths: Sequence[int]) -> None:
    """What a longer context buys an attention that runs past its trained length: per (attention, length), the
    change of test accuracy and loss from the trained length, paired over seeds (stats.paired), Holm-adjusted over
    the table's rows (one family per metric)."""
    rows, tests = [], {EVAL_CTX_ACC: [], EVAL_CTX_LOSS: []}
    for s in have:
        t = _trained_ctx(s.records[0])
        for c in (c for c in lengths if t is not None and c > t):
            row: dict[str, Any] = {"attention": s.label, "from → to": f"{t} → {c}"}
            for key in tests:
                at_c, at_t = _pairs(s, t, c, key)
                if not at_c:
                    break
                res = stats.paired(at_c, at_t)
                row[f"Δ {key}"] = cell(res["diff"]) + (f" {ci}" if (ci := _ci(res["ci_low"], res["ci_high"])) else "")
                row["n"] = res["n"]
                tests[key].append((row, res))
            else:
                rows.append(row)
    if not rows:
        return
    shown = {id(row) for row in rows}
    for key, higher in ((EVAL_CTX_ACC, True), (EVAL_CTX_LOSS, False)):
        done = [(row, res) for row, res in tests[key] if res["p"] is not None and id(row) in shown]
        for (row, res), adj in zip(done, stats.holm([res["p"] for _, res in done])):
            better = (res["diff"] > 0) == higher
            row[f"{key} p_holm"] = (f"{'better' if better else 'worse'} ({stats.format_p(adj, 'p_holm')})"
                                    if adj < stats.ALPHA else f"not told apart ({stats.format_p(adj, 'p_holm')})")
        for row, res in tests[key]:
            row.setdefault(f"{key} p_holm", stats.TOO_FEW)
    doc.add("What the longer context gains: the change of test accuracy and loss (nats) from the trained length, "
            f"paired over seeds (the same model scored at both lengths; paired t-test, {stats.CONFIDENCE:.0%} "
            "interval of the mean change), Holm-adjusted over this table's rows, one family per metric.")
    doc.table(rows, ["attention", "from → to", "n", f"Δ {EVAL_CTX_ACC}", f"{EVAL_CTX_ACC} p_holm",
                     f"Δ {EVAL_CTX_LOSS}", f"{EVAL_CTX_LOSS} p_holm"])


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
    _gains(doc, have, lengths)
