"""The report being written: its Markdown lines and tables, in order (_Doc); each section adds to it."""

from __future__ import annotations

from typing import Any, Sequence

from attnbench.tables import to_markdown


class _Doc:
    """report.md's lines, in order: paragraphs (add) and tables (table), each followed by a blank line."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)
        self.lines.append("")

    def table(self, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
        columns = [c for c in columns if any(r.get(c) is not None for r in rows)]
        self.add(to_markdown(rows, columns))
