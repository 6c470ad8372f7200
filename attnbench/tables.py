"""Screen output of rows (list of dicts): a rich table, Markdown (tabulate), CSV or JSON. The only printing layer
besides cli.py."""

from __future__ import annotations

import csv
import io
import json
import sys
from typing import Any, Sequence

from attnbench.errors import AttnbenchError

FORMATS = ("table", "markdown", "csv", "json")


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise AttnbenchError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}", exit_code=2)
    return fmt


def cell(v: Any) -> str:
    """How a value reads on screen: integers with thousands separators, floats with 4 significant digits."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e6 else f"{v:,.0f}"
    return str(v)


def to_markdown(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    from tabulate import tabulate

    columns = list(columns or (rows[0].keys() if rows else []))
    return tabulate([[cell(r.get(c)) for c in columns] for r in rows], headers=columns, tablefmt="github")


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    columns = list(columns or (rows[0].keys() if rows else []))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def render_rows(rows: Sequence[dict[str, Any]], fmt: str = "table", title: str | None = None,
                columns: Sequence[str] | None = None, notes: Sequence[str] = ()) -> None:
    """Print rows in the chosen format. Notes go under a table (and to stderr for machine formats)."""
    check_format(fmt)
    columns = list(columns or (rows[0].keys() if rows else []))
    if fmt == "json":
        print(json.dumps(list(rows), indent=2, default=str))
    elif fmt == "csv":
        sys.stdout.write(to_csv(rows, columns))
    elif fmt == "markdown":
        if title:
            print(f"### {title}\n")
        print(to_markdown(rows, columns))
        for n in notes:
            print(f"\n{n}")
        return
    else:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=title, title_justify="left")
        for c in columns:
            t.add_column(c, justify="left" if c in ("name", "attn", "paper", "description", "status") else "right",
                         overflow="fold")
        for r in rows:
            t.add_row(*(cell(r.get(c)) for c in columns))
        con = Console()
        if not con.is_terminal:  # piped or redirected: the table at its own width, not squeezed to 80 columns
            natural = Console(width=10**5).measure(t).maximum  # measured without the 80-column limit
            con = Console(width=max(con.width, natural))
        con.print(t)
        for n in notes:
            con.print(n, highlight=False, soft_wrap=not con.is_terminal)
        return
    for n in notes:
        print(n, file=sys.stderr)


def render_params(table, fmt: str = "table") -> None:
    """The `params` output: one row per attention, then the MHE identities with 'holds' or 'fails'."""
    check_format(fmt)
    if fmt == "json":
        print(json.dumps({"config": table.config, "layers": table.layers, "rows": table.rows,
                          "identities": table.identities, "notes": table.notes}, indent=2))
        return
    c = table.config
    title = (f"Parameters per attention (D={c['d_model']}, n={c['n_heads']}, d={c['d_model'] // c['n_heads']}, "
             f"kv_heads={c['kv_heads']}, layers={table.layers}, bias={c['bias']})")
    rows = [{**r, "ratio_to_mha": round(r["ratio_to_mha"], 4)} for r in table.rows]
    notes = table.notes + [f"{i['identity']}: counted {i['counted']:,}, closed form {i['closed_form']:,}: "
                           f"{'holds' if i['holds'] else 'FAILS'}" for i in table.identities]
    if not table.identities and c["bias"]:
        notes.append("MHE identities are stated for projections without biases: not evaluated with --bias.")
    render_rows(rows, fmt, title=title, notes=notes)


def _last_result(rec: dict[str, Any]) -> str:
    """One finished cell of a sweep, as the progress line shows it."""
    c, m = rec["config"], rec.get("metrics") or {}
    head = f"{c['name']} ({c['impl']}) T={c['seq_len']}: "
    if rec["status"] != "ok":
        return head + ("OOM" if rec["status"] == "oom" else rec["status"])
    if rec["kind"] == "speed":
        return head + f"{m['median_ms']:.4g} ms"
    peak = m.get("peak_alloc_mib") or m.get("peak_fwd_mib") or m.get("cpu_peak_rss_mib")
    return head + (f"peak {peak:.4g} MiB" if peak is not None else "ok")


class SweepProgress:
    """Progress of the speed and memory sweeps on stderr: a rich bar with the cell being measured, cells done of
    all, the elapsed time and the last cell's result; no bar when stderr is not a terminal (a pipe, a log file).
    Warnings are one line either way. A context manager; `on` is the sweep's callback (bench.run)."""

    def __init__(self, console=None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console or Console(stderr=True, highlight=False)
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TextColumn("{task.fields[last]}"), console=self.console,
                            disable=not self.console.is_terminal)
        self.task = None

    def __enter__(self) -> "SweepProgress":
        self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()

    def on(self, event: str, **d: Any) -> None:
        if event == "start":
            self.task = self.bar.add_task(d["kind"], total=d["total"], last="")
        elif event == "warning":
            self.console.print(f"[yellow]warning:[/] {d['text']}", soft_wrap=True)
        elif event == "measure" and self.task is not None:
            self.bar.update(self.task, description=d["what"], completed=d["done"], refresh=True)
        elif event == "done" and self.task is not None:
            self.bar.update(self.task, completed=d["done"], last=_last_result(d["record"]), refresh=True)
