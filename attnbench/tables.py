"""Screen output of rows (list of dicts): a rich table, Markdown (tabulate), CSV or JSON. The only printing layer
besides cli.py.

Rows carry machine keys (snake_case, the records' own names where a record has the figure) and numbers as numbers:
that is what CSV and JSON print. The table and Markdown show the same rows for people: HEADERS names the columns,
JOINED and `_std` siblings join two numbers into one cell, and a failed row shows why in place of its first figure.
A terminal too narrow for a table gets it folded into several, each repeating the key columns: a number never
breaks across lines.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from typing import Any, Sequence

from attnbench.errors import AttnbenchError

FORMATS = ("table", "markdown", "csv", "json")

# Machine key (CSV, JSON) -> the header a person reads (table, Markdown), declared once; a key not listed is its own
# header. The same key reads the same everywhere (tokens_per_s is 'tokens/s' in speed and train alike).
HEADERS = {
    "seq_len": "T", "median_ms": "median ms", "tokens_per_s": "tokens/s", "core_tflops": "core TFLOP/s",
    "module_tflops": "module TFLOP/s", "ratio_to_mha": "× mha", "pct_of_ceiling": "% ceiling",
    "compile_s": "compile s",
    "inputs_mib": "inputs MiB", "weights_mib": "weights MiB", "activations_mib": "activations MiB",
    "estimate_mib": "estimate MiB", "peak_alloc_mib": "peak MiB", "peak_fwd_mib": "peak fwd MiB",
    "reserved_mib": "reserved MiB", "nvml_peak_mib": "NVML peak MiB", "nvml_avg_mib": "NVML avg MiB",
    "cpu_peak_rss_mib": "peak RSS MiB", "cpu_peak_rss_delta_mib": "RSS growth MiB",
    "paper_acc": "paper acc", "test_acc": "test acc", "test_exact": "all-right examples", "heldout_acc": "val+test acc",
    "test_bpc": "test bpc", "test_loss": "test loss", "val_loss_best": "best val loss", "wall_s": "wall s",
    "run_share_s": "wall s / run",
    "alloc_peak_mib": "alloc peak MiB", "closed_form": "closed form",
    "a": "A", "b": "B", "change_pct": "change %", "spread_pct": "spread %",
}
# Two machine columns a person reads as one cell 'first<sep>second': first key -> (second key, header, separator).
JOINED = {"p25_ms": ("p75_ms", "p25–p75 ms", "–"), "runs_ok": ("runs", "runs", "/")}
STD = "_std"  # a column k beside k + STD reads 'mean ± std' on screen (the mean alone where the std is None)
STATUS, REASON = "status", "reason"  # a row whose status is not "ok" shows why in place of its first figure
NA = "n/a"  # a figure a row that did not fail lacks (an attention that declares no core_heads, no NVML)
# Columns of names and prose: left-aligned, and the only cells a narrow terminal may fold mid-word.
TEXT = ("name", "attn", "impl", "attention", "paper", "description", "declares", "status", "reason", "kind", "path",
        "settings", "metric", "value", "task", "summary", "options")
# Leading columns that say which row it is: repeated in each part of a table folded to fit a narrow terminal.
KEYS = ("attn", "attention", "name", "kind", "impl", "seq_len")
TEXT_MIN = 12  # a text column is never folded narrower than this (nor than its header's longest word)
_TEXT_HEADERS = {HEADERS.get(k, k) for k in TEXT}


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


def failure(status: str, reason: str | None) -> str:
    """A failed measurement as its cell reads: 'OOM', or 'n/a: why'."""
    if status == "oom":
        return "OOM"
    return f"{status}: {reason}" if reason else str(status)


def screen(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> tuple[list[dict[str, str]], list[str]]:
    """Rows and columns as a person reads them: (rows of cell strings keyed by header, headers). A figure that is
    None reads n/a; a failed row (status not ok, no status column) reads 'OOM' or 'n/a: why' in its first figure."""
    columns = list(columns)
    joined = {k: JOINED[k] for k in columns if k in JOINED and JOINED[k][0] in columns}
    joined.update({k: (k + STD, HEADERS.get(k, k), " ± ") for k in columns if k + STD in columns})
    hidden = {second for second, _, _ in joined.values()}
    shown = [k for k in columns if k not in hidden]
    headers = [joined[k][1] if k in joined else HEADERS.get(k, k) for k in shown]
    figures = [k for k in shown if k not in KEYS and k not in TEXT]
    out = []
    for r in rows:
        failed = r.get(STATUS) not in (None, "ok")
        row = {}
        for k, h in zip(shown, headers):
            text = NA if r.get(k) is None and k in figures and not failed else cell(r.get(k))
            if k in joined and r.get(joined[k][0]) is not None:
                text += joined[k][2] + cell(r[joined[k][0]])
            row[h] = text
        if failed and STATUS not in columns and figures:
            row[headers[shown.index(figures[0])]] = failure(r[STATUS], r.get(REASON))
        out.append(row)
    return out, headers


def to_markdown(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    from tabulate import tabulate

    columns = list(columns or (rows[0].keys() if rows else []))
    return tabulate([[cell(r.get(c)) for c in columns] for r in rows], headers=columns, tablefmt="github")


def _machine_columns(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[str]:
    """The columns, then every other key the rows carry (a failed row's status and reason)."""
    out = list(columns)
    for r in rows:
        out += [k for k in r if k not in out]
    return out


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    columns = list(columns or (rows[0].keys() if rows else []))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def render_rows(rows: Sequence[dict[str, Any]], fmt: str = "table", title: str | None = None,
                columns: Sequence[str] | None = None, notes: Sequence[str] = (), console=None) -> None:
    """Print rows in the chosen format: CSV and JSON with the machine keys, every key the rows carry; the table and
    Markdown as screen() shows them. Notes go under a table (and to stderr for machine formats). `console`: where the
    table goes (default: stdout)."""
    check_format(fmt)
    columns = list(columns or (rows[0].keys() if rows else []))
    if fmt == "json":
        print(json.dumps(list(rows), indent=2, default=str))
    elif fmt == "csv":
        sys.stdout.write(to_csv(rows, _machine_columns(rows, columns)))
    elif fmt == "markdown":
        if title:
            print(f"### {title}\n")
        shown, headers = screen(rows, columns)
        print(to_markdown(shown, headers))
        for n in notes:
            print(f"\n{n}")
        return
    else:
        from rich.console import Console

        shown, headers = screen(rows, columns)
        con = console or Console()
        if not con.is_terminal:  # piped or redirected: the table at its own width, not squeezed to 80 columns
            table = _rich_table(title, headers, shown, _natural(headers, shown))
            natural = Console(width=10**5).measure(table).maximum  # measured without the 80-column limit
            Console(file=con.file, width=max(con.width, natural)).print(table)
        else:
            keys = [i for i, h in enumerate(headers) if h in _key_headers(columns)]
            for part, (cols, widths) in enumerate(fold(headers, shown, con.width, keys)):
                con.print(_rich_table(title if part == 0 else None, [headers[i] for i in cols],
                                      [{headers[i]: r[headers[i]] for i in cols} for r in shown], widths))
        for n in notes:
            con.print(n, highlight=False, soft_wrap=not con.is_terminal)
        return
    for n in notes:
        print(n, file=sys.stderr)


def _key_headers(columns: Sequence[str]) -> list[str]:
    """Headers of the leading key columns (KEYS) of a table."""
    out = []
    for k in columns:
        if k not in KEYS:
            break
        out.append(HEADERS.get(k, k))
    return out


def _words(text: str) -> int:
    return max((len(w) for w in text.split()), default=0)


def _lines(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def _natural(headers: Sequence[str], rows: Sequence[dict[str, str]]) -> list[int]:
    """Each column's width with no cell wrapped."""
    return [max([_lines(h), *(_lines(r[h]) for r in rows)]) for h in headers]


def _narrowest(headers: Sequence[str], rows: Sequence[dict[str, str]]) -> list[int]:
    """Each column's least width: its longest word (a number is one word), a text column's capped at TEXT_MIN."""
    out = []
    for h in headers:
        longest = max((_words(r[h]) for r in rows), default=0)
        out.append(max(_words(h), min(longest, TEXT_MIN) if h in _TEXT_HEADERS else longest))
    return out


def fold(headers: Sequence[str], rows: Sequence[dict[str, str]], width: int,
         keys: Sequence[int] = (0,)) -> list[tuple[list[int], list[int]]]:
    """The parts of a table for a terminal `width` wide: [(column indices, their widths)], one part when the whole
    table fits. Each part repeats the key columns and takes as many further columns, in order, as fit with every
    column at least its narrowest (no number broken); the room left goes to the columns that need least to be whole."""
    if not headers:
        return [([], [])]
    lo, hi = _narrowest(headers, rows), _natural(headers, rows)

    def room(cols: list[int]) -> int:  # characters for cell text: borders and one space of padding each side
        return width - 3 * len(cols) - 1

    keys = [k for k in keys if k < len(headers)] or [0]
    rest = [i for i in range(len(headers)) if i not in keys]
    parts: list[list[int]] = []
    for i in rest:
        if parts and sum(lo[j] for j in parts[-1] + [i]) <= room(parts[-1] + [i]):
            parts[-1].append(i)
        else:
            parts.append([*keys, i])
    out = []
    for cols in parts or [keys]:
        widths = {j: lo[j] for j in cols}
        spare = room(cols) - sum(widths.values())
        for j in sorted(cols, key=lambda j: hi[j] - lo[j]):  # whole columns first: fewest wrapped cells
            give = max(0, min(hi[j] - widths[j], spare))
            widths[j] += give
            spare -= give
        out.append((cols, [widths[j] for j in cols]))
    return out


def _rich_table(title: str | None, headers: Sequence[str], rows: Sequence[dict[str, str]], widths: Sequence[int]):
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for h, w in zip(headers, widths):
        t.add_column(h, justify="left" if h in _TEXT_HEADERS else "right", overflow="fold", width=w)
    for r in rows:
        t.add_row(*(r[h] for h in headers))
    return t


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
