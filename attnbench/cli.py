"""Thin Typer commands: parse, delegate, print. No torch import at module level, so `--help` is instant.

Every user-caused problem is an AttnbenchError, turned into one red line on stderr and a non-zero exit
(the traceback only with ATTNBENCH_DEBUG=1).
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer

app = typer.Typer(
    name="attnbench",
    help="What an attention mechanism costs and what it buys: parameters, memory, speed, language-model quality.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Shared options, declared once (style.md: Typer CLIs).
AttnOpt = Annotated[Optional[str], typer.Option("--attn", help="Attention(s), comma-separated, or 'all'.")]
DModelOpt = Annotated[int, typer.Option("--d-model", help="Model width D.")]
HeadsOpt = Annotated[int, typer.Option("--heads", help="Number of heads n.")]
KVHeadsOpt = Annotated[Optional[int], typer.Option("--kv-heads", help="K/V heads for gqa (default heads/4).")]
FormatOpt = Annotated[str, typer.Option("--format", help="Screen output: table|markdown|csv|json.")]
ResultsOpt = Annotated[str, typer.Option("--results-dir", help="Where run records (JSON Lines) are written.")]


def _fail(message: str, code: int = 1) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False).print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code)


def run_guarded(fn, *args, **kwargs):
    """Call library code; turn AttnbenchError (and a few environment failures) into one clear line."""
    from attnbench.errors import AttnbenchError

    try:
        return fn(*args, **kwargs)
    except AttnbenchError as e:
        if os.environ.get("ATTNBENCH_DEBUG"):
            raise
        _fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted; every finished measurement was already written to disk", 130)


def _defaults():
    from attnbench.config import AttnConfig

    return AttnConfig()


# --------------------------------------------------------------------------------------------------- list
@app.command("list")
def list_cmd(fmt: FormatOpt = "table") -> None:
    """Every registered attention, with its paper and a one-line description."""
    from attnbench.tables import render_rows
    from attnbench.attention import get, names

    rows = [{"name": n, "paper": get(n).paper, "description": get(n).summary} for n in names()]
    run_guarded(render_rows, rows, fmt, title="Registered attentions")


# --------------------------------------------------------------------------------------------------- params
_D = 1024  # AttnConfig.d_model; typer needs a literal default, tests assert they agree
_H = 16  # AttnConfig.n_heads


def _param_count(attn: AttnOpt = None, d_model: DModelOpt = _D, heads: HeadsOpt = _H, kv_heads: KVHeadsOpt = None,
                 layers: Annotated[int, typer.Option("--layers", help="Number of layers.")] = 1,
                 fmt: FormatOpt = "table") -> None:
    """Parameters of every attention (counted and closed-form), ratio to MHA, and the MHE paper's identities."""
    from attnbench.params import param_table
    from attnbench.tables import render_params

    table = run_guarded(param_table, attn, d_model=d_model, n_heads=heads, kv_heads=kv_heads, layers=layers)
    run_guarded(render_params, table, fmt)


app.command("param-count")(_param_count)
app.command("params", help="Alias of param-count.")(_param_count)

# --------------------------------------------------------------------------------------------------- speed / memory
# (issue 3) BEGIN speed-memory block
def _profile_speed() -> None:
    """Time every attention (not built yet)."""
    _fail("profile-speed is not built yet", 2)


def _profile_memory() -> None:
    """Measure every attention's memory (not built yet)."""
    _fail("profile-memory is not built yet", 2)


app.command("profile-speed")(_profile_speed)
app.command("speed", help="Alias of profile-speed.")(_profile_speed)
app.command("profile-memory")(_profile_memory)
app.command("memory", help="Alias of profile-memory.")(_profile_memory)
# (issue 3) END speed-memory block

# --------------------------------------------------------------------------------------------------- train
# (issue 4) BEGIN train block
@app.command("train")
def _train() -> None:
    """Train a character-level language model with the chosen attention (not built yet)."""
    _fail("train is not built yet", 2)
# (issue 4) END train block

# --------------------------------------------------------------------------------------------------- report / env
# (issue 6) BEGIN report-env block
_REPORT_IN = "results"  # report.DEFAULT_RESULTS; typer needs a literal default, tests assert they agree
_REPORT_OUT = "results/report"  # report.DEFAULT_OUT


@app.command("report")
def _report(
    paths: Annotated[Optional[list[str]], typer.Argument(help="Record files or folders (default: results/).")] = None,
    out: Annotated[str, typer.Option("--out", help="Folder for report.md and the PNG plots.")] = _REPORT_OUT,
    compare: Annotated[Optional[tuple[str, str]], typer.Option(
        "--compare", help="Two runs (files or folders) side by side: change in % per row, flagged beyond the spread.",
        metavar="A B")] = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Draw PNG plots (needs matplotlib).")] = True,
    fmt: FormatOpt = "table",
) -> None:
    """Markdown report with tables and PNG plots from run records; or --compare A B."""
    from pathlib import Path

    from rich.console import Console

    from attnbench import report
    from attnbench.tables import check_format, render_rows

    run_guarded(check_format, fmt)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if compare is not None:
        if paths:
            _fail("give either PATHS or --compare A B, not both", 2)
        a, b = [compare[0]], [compare[1]]
        res = run_guarded(report.compare, a, b)
        for p in res.problems:
            err.print(f"[yellow]skipped[/] {p}")
        Path(out).mkdir(parents=True, exist_ok=True)
        md = Path(out) / "compare.md"
        md.write_text(report.compare_markdown(res, a, b), encoding="utf-8")
        run_guarded(render_rows, res.rows, fmt, title=f"A: {a[0]}  vs  B: {b[0]}", columns=report.COMPARE_COLUMNS,
                    notes=[*res.notes, f"written: {md}"])
        return
    res = run_guarded(report.build_report, paths or [_REPORT_IN], out, plots=plots)
    for p in res.problems:
        err.print(f"[yellow]skipped[/] {p}")
    for n in res.notes:
        err.print(f"[yellow]note:[/] {n}")
    rows = [{"name": "report", "kind": "markdown", "path": str(res.markdown)}]
    rows += [{"name": p.title, "kind": p.kind, "path": str(p.path)} for p in res.plots]
    run_guarded(render_rows, rows, fmt, title=f"Report of {res.records} records", columns=["kind", "path", "name"])


@app.command("env")
def _env(fmt: FormatOpt = "table") -> None:
    """This machine: device, driver, CUDA and torch versions, GPU memory, clocks, temperature, SDPA backends."""
    from attnbench.envinfo import env_info, env_rows
    from attnbench.tables import check_format, render_rows

    run_guarded(check_format, fmt)
    info = env_info()
    if fmt == "json":
        import json

        print(json.dumps(info, indent=2, default=str))
        return
    run_guarded(render_rows, env_rows(info), fmt, title="attnbench env", columns=["name", "value"])
# (issue 6) END report-env block


def main() -> None:
    app()


if __name__ == "__main__":
    main()
