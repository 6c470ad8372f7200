"""Screen output (attnbench/tables.py): the default table stays readable when piped or redirected (issue 14)."""

from __future__ import annotations

import pytest

from attnbench.tables import cell, render_rows

COLUMNS = ["attn", "impl", "T", "median ms", "p25–p75 ms", "tokens/s", "core TFLOP/s", "module TFLOP/s", "× mha",
           "% ceiling", "estimate MiB", "NVML peak MiB"]


def _rows():
    return [{"attn": name, "impl": "fast", "T": 16384, "median ms": 20.83 * k, "p25–p75 ms": f"{0.2741 * k:.4g}–"
             f"{0.2801 * k:.4g}", "tokens/s": 1.483e7 / k, "core TFLOP/s": 0.3112 * k, "module TFLOP/s": 0.3763,
             "× mha": 1.0 * k, "% ceiling": 44.23, "estimate MiB": 1290.5, "NVML peak MiB": 76_543}
            for k, name in enumerate(["mha", "sdpa+proj", "mhe-mul", "rcmha"], start=1)]


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
        for c in COLUMNS:
            assert cell(r[c]) in line, (c, line)
    assert ("a note " * 30).strip() in [ln.strip() for ln in lines]  # a long note is one line too


@pytest.mark.parametrize("width", [60, 200])
def test_the_header_names_are_whole(capsys, monkeypatch, width):
    monkeypatch.setenv("COLUMNS", str(width))
    render_rows(_rows(), "table", columns=COLUMNS)
    header = next(line for line in capsys.readouterr().out.splitlines() if "attn" in line)
    assert all(c in header for c in COLUMNS), header
