"""The report's plotting, shared by every section: matplotlib loaded when installed (it is optional), one style per
attention, the line plot with its bands and failure marks, saving beside report.md, and the Plot each section
lists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


def slug(text: str) -> str:
    """A plot's file-name part: "NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3"."""
    return re.sub(r"[^A-Za-z0-9]+", "-", str(text)).strip("-").lower() or "x"


def load_pyplot():
    """matplotlib.pyplot with the Agg backend, or None when matplotlib is not installed (it is optional)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _style(plt, label: str) -> dict:
    """One colour per attention in every plot (tab20, registry order, baselines last), dashed for a reference path:
    the default 10-colour cycle repeats once a sweep has more than ten rows."""
    from attnbench.attention import names

    order = [*names(), "sdpa", "sdpa+proj"]
    name = label.split()[0]
    idx = order.index(name) if name in order else len(order) + sum(map(ord, name))
    return {"color": plt.get_cmap("tab20")(idx % 20), "linestyle": "--" if "reference" in label else "-"}


def _plot_lines(plt, ax, lines, failed, logx=True, logy=True):
    """lines: (label, xs, ys, lo|None, hi|None); failed: (label, x, status) drawn as crosses at the top."""
    colors = {}
    for label, xs, ys, lo, hi in lines:
        (ln,) = ax.plot(xs, ys, marker="o", ms=3, label=label, **_style(plt, label))
        colors[label] = ln.get_color()
        if lo is not None and hi is not None:
            ax.fill_between(xs, lo, hi, alpha=0.2, color=ln.get_color(), linewidth=0)
    if failed:
        top = max((y for _, _, ys, _, hi in lines for y in (hi or ys) if y is not None), default=1.0)
        for label, x, status in failed:
            ax.plot([x], [top], marker="x", ms=8, mew=2, color=colors.get(label, "red"), linestyle="none")
            ax.annotate(status.upper(), (x, top), textcoords="offset points", xytext=(3, 4), fontsize=7,
                        color=colors.get(label, "red"))
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    if len(lines) > 8:  # many rows: the legend beside the axes, not over the lines
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    elif lines:
        ax.legend(fontsize=7)


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


@dataclass
class Plot:
    """A PNG written beside report.md, as build_report lists it."""

    path: Path
    kind: str
    group: tuple  # env_key: exactly one device/environment per plot
    title: str
    series: list[str]
