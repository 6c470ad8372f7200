"""The train command's screen summary: one row per attention (mean, and ± std over seeds), and which differences
exceed the seed spread. The report's statistics (stats.py) go further; this is what the terminal shows at once."""

from __future__ import annotations

import statistics
from typing import Any

SUMMARY_METRICS = ("paper_acc", "test_acc", "heldout_acc", "test_bpc", "test_loss", "val_loss_best", "tokens_per_s", "wall_s", "params",
                   "alloc_peak_mib", "nvml_avg_mib", "nvml_peak_mib", "cpu_peak_rss_mib")


def summarize(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows per attention (mean, and std over seeds when there are several) and plain statements saying which
    test-accuracy and test-bpc differences exceed the seed spread (|Δmean| > std_a + std_b)."""
    by: dict[str, list[dict]] = {}
    for r in records:
        by.setdefault(r["attn"], []).append(r)
    rows, stats = [], {}
    for attn, recs in by.items():
        ok = [r for r in recs if r["status"] == "ok"]
        row: dict[str, Any] = {"attn": attn, "runs": f"{len(ok)}/{len(recs)}"}
        if len(ok) < len(recs):
            row["status"] = "; ".join(r["reason"] for r in recs if r["status"] != "ok")
        for m in SUMMARY_METRICS:
            vals = [r["metrics"].get(m) for r in ok if r["metrics"].get(m) is not None]
            if not vals:
                row[m] = None
                continue
            same = len(set(vals)) == 1  # e.g. params: no spread to show
            mean = vals[0] if same else statistics.fmean(vals)
            sd = statistics.stdev(vals) if len(vals) > 1 and not same else None
            stats[(attn, m)] = (mean, sd, len(vals))
            row[m] = mean if sd is None else f"{_fmt(mean)} ± {_fmt(sd)}"
        rows.append(row)
    notes = []
    names = list(by)
    multi = any(n > 1 for (_, _), (_, _, n) in stats.items())
    if multi:
        for m, better in (("test_acc", "higher"), ("test_bpc", "lower")):
            for i, a in enumerate(names):
                for b in names[i + 1:]:
                    if (a, m) not in stats or (b, m) not in stats:
                        continue
                    (ma, sa, _), (mb, sb, _) = stats[(a, m)], stats[(b, m)]
                    spread = (sa or 0.0) + (sb or 0.0)
                    d = ma - mb
                    verdict = "exceeds" if abs(d) > spread else "does not exceed"
                    notes.append(f"{m}: {a} − {b} = {d:+.4f}, which {verdict} the seed spread "
                                 f"(std {a} + std {b} = {spread:.4f})")
    return rows, notes


def _fmt(v: float) -> str:
    return f"{v:.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
