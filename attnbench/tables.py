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
