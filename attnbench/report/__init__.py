"""The report layer: run records (results.py) -> a Markdown report (tabulate) with PNG plots beside it, and the
side-by-side comparison of two runs (`--compare A B`). One module per section of report.md:

    environments.py   "Devices and environments": the device and environment groups
    cost.py           "Speed", "Memory" (with the fitted exponent), "Parameters"
    training.py       "Training": curves, final figures, seed statistics, accuracy against width
    extrapolation.py  a training section's length extrapolation (train --eval-ctx)
    paper.py          "RCMHA paper, reproduced": the paper's table, its claims tested, the ablation
    side_by_side.py   --compare A B: two runs side by side

and what they share:

    names.py          every metric and config name the report reads (paper.py's own excepted)
    series.py         records -> series; a record's settings, preset and figures
    seeds.py          statistics over a series' seeds (built on stats.py)
    plots.py          matplotlib, one style per attention, line plots, saving
    document.py       the Markdown being written

Rules held here (../shared/docs/benchmarking.md, "Records"):
- records are grouped by device and environment (device name, device type, driver, CUDA, torch); a plot, a table
  and a ratio only ever hold records of one group;
- a failed measurement (OOM, n/a) is a result: it stays in the tables and is marked on the plots;
- matplotlib is optional (`.[plot]`): without it the report has tables only and says so;
- multi-seed train results get their statistics from stats.py (confidence intervals, Welch t-tests with Holm's
  correction, the retention ratio to MHA with its confidence intervals);
- runs of the RCMHA paper's preset get a section of their own (paper.py): the paper's table, its claims
  tested, and the convolution x relative scoring x activation ablation.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from attnbench import __version__
from attnbench.config import ReportSettings
from attnbench.errors import AttnbenchError
from attnbench.report import paper
from attnbench.report.side_by_side import COMPARE_COLUMNS, CompareResult, compare, compare_markdown
from attnbench.report.cost import _memory_section, _params_section, _speed_section, fit_exponent
from attnbench.report.document import _Doc
from attnbench.report.environments import _env_section
from attnbench.report.paper import paper_figure
from attnbench.report.plots import Plot, load_pyplot
from attnbench.report.seeds import attn_params
from attnbench.report.series import bad_values, one_per_seed, train_preset
from attnbench.report.training import _train_section, degenerate_note
from attnbench.results import read, utc_now

__all__ = ["build_report", "ReportResult", "Plot", "compare", "compare_markdown", "CompareResult", "COMPARE_COLUMNS",
           "DEFAULT_RESULTS", "DEFAULT_OUT", "attn_params", "degenerate_note", "fit_exponent", "one_per_seed",
           "paper_figure", "train_preset"]

DEFAULT_RESULTS = ReportSettings.records  # where `report` reads records by default (config.py)
DEFAULT_OUT = ReportSettings.out  # where it writes report.md and the plots


@dataclass
class ReportResult:
    markdown: Path
    plots: list[Plot]
    problems: list[str]  # skipped lines, "file:line: why"
    notes: list[str]
    records: int


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
        paper_lines = paper.section(kinds["train"])
        if paper_lines:
            doc.add(*paper_lines)
    md = out / "report.md"
    md.write_text("\n".join(doc.lines), encoding="utf-8")
    return ReportResult(md, plot_list, problems, notes, len(records))
