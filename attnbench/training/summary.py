"""The train command's screen summary: one row per attention (mean, and std over seeds), and, with two seeds or
more, which test-accuracy and test-bpc differences are significant (stats.pairwise: Welch's t-test, Holm's
correction). `attnbench report` adds confidence intervals and retention ratios; this is what the terminal shows."""

from __future__ import annotations

import statistics
from typing import Any

from attnbench.stats import pairwise
from attnbench.tables import STD  # metric + STD: its standard deviation over seeds (None with one seed)

SUMMARY_METRICS = ("paper_acc", "test_acc", "test_exact", "heldout_acc", "test_bpc", "test_loss", "val_loss_best",
                   "tokens_per_s", "wall_s", "run_share_s", "params", "alloc_peak_mib", "nvml_avg_mib", "nvml_peak_mib",
                   "cpu_peak_rss_mib")


def summarize(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows per attention (runs_ok of runs; each metric's mean, and its std over seeds as metric_std) and one
    statement per pair of attentions with two seeds or more: the difference of mean test accuracy (and bpc) and the
    verdict of Welch's t-test with Holm's correction over that metric's pairs."""
    by: dict[str, list[dict]] = {}
    for r in records:
        by.setdefault(r["attn"], []).append(r)
    rows = []
    for attn, recs in by.items():
        ok = [r for r in recs if r["status"] == "ok"]
        row: dict[str, Any] = {"attn": attn, "runs_ok": len(ok), "runs": len(recs)}
        if len(ok) < len(recs):
            row["status"] = "; ".join(r["reason"] for r in recs if r["status"] != "ok")
        for m in SUMMARY_METRICS:
            vals = [r["metrics"].get(m) for r in ok if r["metrics"].get(m) is not None]
            same = len(set(vals)) == 1  # e.g. params: no spread to show
            row[m] = (vals[0] if same else statistics.fmean(vals)) if vals else None
            row[m + STD] = statistics.stdev(vals) if len(vals) > 1 and not same else None
        rows.append(row)
    notes = []
    for m, higher in (("test_acc", True), ("test_bpc", False)):
        groups = {a: [r["metrics"][m] for r in recs if r["status"] == "ok" and r["metrics"].get(m) is not None]
                  for a, recs in by.items()}
        groups = {a: v for a, v in groups.items() if len(v) > 1}
        if len(groups) < 2:
            continue
        for p in pairwise(groups, higher_is_better=higher):  # Welch's t-test, Holm over this metric's pairs
            notes.append(f"{m}: {p['a']} − {p['b']} = {p['diff']:+.4f}, {p['verdict']} (Welch t-test, "
                         f"{p['n_a']} and {p['n_b']} seeds)")
    return rows, notes


def extrapolation_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """--eval-ctx on screen: per attention, the test loss and accuracy at each evaluated context (mean over the
    seeds that scored it), or the first seed's reason why a length could not be scored."""
    by: dict[str, dict[int, list[dict]]] = {}
    for r in records:
        for e in (r.get("metrics") or {}).get("eval_ctx") or []:
            by.setdefault(r["attn"], {}).setdefault(e["ctx"], []).append(e)
    rows = []
    for attn, at in by.items():
        row: dict[str, Any] = {"attn": attn}
        for ctx, cells in sorted(at.items()):
            ok = [c for c in cells if "loss" in c]
            row[f"T={ctx}"] = (f"{statistics.fmean(c['loss'] for c in ok):.3f} / "
                               f"{statistics.fmean(c['acc'] for c in ok):.3f}") if ok else \
                f"{cells[0]['status']}: {cells[0]['reason']}"
        rows.append(row)
    return rows
