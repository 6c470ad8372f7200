"""Checkpoints of a training group: its members' weights and optimiser state, where it stands in its schedule,
and everything measured so far, written atomically (a temporary file, then a rename), so that Ctrl-C or a crash
never leaves a half-written one. One file per group in the run's folder, beside its plan (plan.py):
`<attn>-seed<s>.pt` for a run trained alone, `<attn>-seeds<a>-<b>.pt` for seeds a..b trained as one model."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from attnbench.errors import AttnbenchError

KIND = "attnbench.group/1"


def atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def name(attn_file: str, seeds: list[int]) -> str:
    """The file name of a group's checkpoint (`attn_file`: the attention's name made file-safe)."""
    if len(seeds) == 1:
        return f"{attn_file}-seed{seeds[0]}.pt"
    return f"{attn_file}-seeds{seeds[0]}-{seeds[-1]}.pt"


def seeds_of(path: Path, attn_file: str) -> list[int] | None:
    """The seeds of a checkpoint file of this attention, read off its name; None for another file."""
    m = re.fullmatch(re.escape(attn_file) + r"-seed(\d+)\.pt|" + re.escape(attn_file) + r"-seeds(\d+)-(\d+)\.pt",
                     path.name)
    if not m:
        return None
    if m.group(1) is not None:
        return [int(m.group(1))]
    return list(range(int(m.group(2)), int(m.group(3)) + 1))


def load(path: str | os.PathLike) -> dict[str, Any]:
    """A group checkpoint, checked to be one; one line (exit 2) otherwise."""
    p = Path(path)
    if not p.is_file():
        raise AttnbenchError(f"checkpoint not found: {p}")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # any unreadable file: one line, not a traceback
        raise AttnbenchError(f"cannot read checkpoint {p}: {type(e).__name__}") from None
    if not isinstance(ck, dict) or ck.get("kind") != KIND:
        raise AttnbenchError(f"{p} is not a checkpoint of this attnbench version (start a new run)")
    return ck


def split(ck: dict[str, Any], k: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A stacked group's checkpoint as two: members [0, k) and [k, n), each a group of its own that continues
    exactly where the whole one stood (every stacked tensor, the members' weights and the AdamW moments alike,
    is sliced along its member dimension; the step counts are shared)."""
    n = len(ck["seeds"])

    def part(lo: int, hi: int) -> dict[str, Any]:
        cut = _slicer(n, lo, hi)
        out = {**ck, "seeds": ck["seeds"][lo:hi], "members": cut(ck["members"]), "states": ck["states"][lo:hi]}
        out["opt"] = {**ck["opt"], "state": {i: cut(s) for i, s in ck["opt"]["state"].items()}}
        out["counters"] = cut(ck.get("counters") or {})
        out["mems"] = {s: None if m is None else [t[lo:hi] for t in m] for s, m in ck["mems"].items()}
        return out

    return part(0, k), part(k, n)


def _slicer(n: int, lo: int, hi: int):
    """Tensors (each with a leading member dimension of n) are sliced [lo:hi]; AdamW's step (0-dim) is kept."""
    def cut(d: dict) -> dict:
        return {key: v[lo:hi] if torch.is_tensor(v) and v.dim() > 0 else v for key, v in d.items()}
    return cut
