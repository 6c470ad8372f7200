"""Screen output (attnbench/tables.py): machine keys for CSV and JSON, headers for people; the default table stays
readable when piped or redirected (issue 14) and in a narrow terminal, where no number breaks across lines
(issue 21)."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from rich.console import Console

from attnbench.tables import HEADERS, JOINED, cell, fold, render_rows, screen

COLUMNS = ["attn", "impl", "seq_len", "median_ms", "p25_ms", "p75_ms", "tokens_per_s", "core_tflops",
           "module_tflops", "ratio_to_mha", "pct_of_ceiling", "estimate_mib", "nvml_peak_mib"]


def _rows():
    return [{"attn": name, "impl": "fast", "seq_len": 16384, "status": "ok", "median_ms": 20.83 * k,
             "p25_ms": 0.2741 * k, "p75_ms": 0.2801 * k, "tokens_per_s": 1.483e7 / k, "core_tflops": 0.3112 * k,
             "module_tflops": 0.3763, "ratio_to_mha": 1.0 * k, "pct_of_ceiling": 44.23, "estimate_mib": 1290.5,
             "nvml_peak_mib": 76_543}
            for k, name in enumerate(["mha", "sdpa+proj", "mhe-mul", "rcmha"], start=1)]


def _numbers(rows):
    """Every number a person must be able to read whole: each cell of each figure column as the table writes it."""
    return [cell(r[k]) for r in rows for k in COLUMNS[2:]]


def _terminal(width: int) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=width, force_terminal=True, color_system=None), buf


def test_a_wide_table_piped_keeps_every_number_on_one_line(capsys, monkeypatch):
    """Rich squeezes a table to 80 columns when stdout is not a terminal, splitting numbers across lines
    ('0.2 / 762'); piped, the table is as wide as it needs."""
    monkeypatch.delenv("COLUMNS", raising=False)
    rows = _rows()
    render_rows(rows, "table", title="Speed", columns=COLUMNS, notes=["a note " * 30])
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) > 120  # wider than any default terminal: nothing was squeezed
    for r in rows:
        (line,) = [ln for ln in lines if ln.startswith(f"│ {r['attn']} ")]
        for c in COLUMNS[2:]:
            assert cell(r[c]) in line, (c, line)
    assert ("a note " * 30).strip() in [ln.strip() for ln in lines]  # a long note is one line too


@pytest.mark.parametrize("width", [60, 200])
def test_the_header_names_are_whole(capsys, monkeypatch, width):
    monkeypatch.setenv("COLUMNS", str(width))
    render_rows(_rows(), "table", columns=COLUMNS)
    header = next(line for line in capsys.readouterr().out.splitlines() if "attn" in line)
    assert all(h in header for h in screen(_rows(), COLUMNS)[1]), header


@pytest.mark.parametrize("width", [60, 80, 200])
def test_a_narrow_terminal_folds_the_table_and_breaks_no_number(width):
    """In a terminal narrower than the table it is folded into parts that each fit, every part repeating the key
    columns; each number appears whole on one line (headers may wrap, between words)."""
    con, buf = _terminal(width)
    rows = _rows()
    rows[1].update(status="oom", reason="out of memory", **{k: None for k in COLUMNS[3:]})  # a failed row reads OOM
    render_rows(rows, "table", title="Speed (fwd+bwd, B=4, heads=16, d_model=1024)", columns=COLUMNS,
                notes=["ceiling: bfloat16 8192^3 matrix product, 771.3 TFLOP/s measured in this run"], console=con)
    lines = buf.getvalue().splitlines()
    assert max(map(len, lines)) <= width
    body = [ln for ln in lines if ln.startswith("│")]
    for k, r in enumerate(rows):
        mine = [ln for ln in body if ln.startswith(f"│ {r['attn']} ")]
        assert len(mine) >= 1 and all("fast" in ln and "16,384" in ln for ln in mine)  # the keys, in every part
        shown = " ".join(mine)
        wanted = ["OOM"] if r["status"] == "oom" else [cell(r[c]) for c in COLUMNS[3:]
                                                        if c not in ("p25_ms", "p75_ms")]
        if r["status"] == "ok":
            wanted.append(f"{cell(r['p25_ms'])}–{cell(r['p75_ms'])}")  # the IQR, one cell
        for text in wanted:
            assert re.search(rf"(^|[ │]){re.escape(text)}( |$)", shown), (text, mine)
    parts = sum(ln.startswith("┏") for ln in lines)
    assert (parts == 1) == (width == 200)  # folded only when it does not fit
    assert "771.3" in buf.getvalue() and lines[0].startswith("Speed")


def test_fold_keeps_every_column_at_least_as_wide_as_its_longest_word():
    shown, headers = screen(_rows(), COLUMNS)
    for width in range(40, 200, 7):
        parts = fold(headers, shown, width, keys=[0, 1, 2])
        assert sorted({i for cols, _ in parts for i in cols}) == list(range(len(headers)))  # every column, once
        for cols, widths in parts:
            assert cols[:3] == [0, 1, 2]
            for i, w in zip(cols, widths):
                assert w >= max(len(word) for text in [headers[i], *(r[headers[i]] for r in shown)]
                                for word in text.split())
            if len(cols) > 4:  # a part of one column beside the keys may be wider than a very narrow terminal
                assert sum(widths) + 3 * len(cols) + 1 <= width


def test_machine_formats_use_snake_case_keys_and_numbers(capsys):
    rows = _rows()
    render_rows(rows, "json", columns=COLUMNS)
    back = json.loads(capsys.readouterr().out)
    assert back == rows and all(re.fullmatch(r"[a-z][a-z0-9_]*", k) for r in back for k in r)
    render_rows(rows, "csv", columns=COLUMNS)
    got = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert list(got[0]) == [*COLUMNS, "status"]  # the columns, then what else the rows carry
    assert [float(g["p25_ms"]) for g in got] == pytest.approx([r["p25_ms"] for r in rows])
    assert [float(g["p75_ms"]) for g in got] == pytest.approx([r["p75_ms"] for r in rows])


def test_markdown_and_table_show_headers_joined_cells_and_std():
    rows = [{"attn": "mha", "runs_ok": 2, "runs": 3, "test_acc": 0.5612, "test_acc_std": 0.0021, "wall_s": 12.5,
             "wall_s_std": None, "params": 74176, "tokens_per_s": None, "status": "oom at seed 2"}]
    shown, headers = screen(rows, ["attn", "runs_ok", "runs", "test_acc", "test_acc_std", "wall_s", "wall_s_std",
                                   "params", "tokens_per_s", "status"])
    assert headers == ["attn", "runs", "test acc", "wall s", "params", "tokens/s", "status"]
    assert shown == [{"attn": "mha", "runs": "2/3", "test acc": "0.5612 ± 0.0021", "wall s": "12.5",
                      "params": "74,176", "tokens/s": "-", "status": "oom at seed 2"}]  # a failed run: no n/a guess
    shown, headers = screen([{"seq_len": 64, "p25_ms": 1.5, "p75_ms": 2.25, "core_tflops": None}],
                            ["seq_len", "p25_ms", "p75_ms", "core_tflops"])
    assert shown == [{"T": "64", "p25–p75 ms": "1.5–2.25", "core TFLOP/s": "n/a"}]  # a figure not declared


def test_machine_keys_are_snake_case_ascii():
    for key in [*HEADERS, *JOINED, *(second for second, _, _ in JOINED.values())]:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", key), key


@pytest.mark.parametrize("fmt", ["table", "markdown", "csv", "json"])
def test_no_rows_is_an_empty_table_not_an_error(fmt, capsys):
    con, buf = _terminal(80)
    render_rows([], fmt, columns=COLUMNS, console=con)
    assert "median" in buf.getvalue() + capsys.readouterr().out or fmt == "json"
    render_rows([], fmt, console=con)  # nor is a table without columns
