"""Checkpoints of a training run: model, optimiser and everything measured so far, written atomically (a temporary
file, then a rename), so that Ctrl-C or a crash never leaves a half-written one. One file per (attention, seed)
in the run's folder, beside its plan (plan.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from attnbench.errors import AttnbenchError


def atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the weights on the host (the best-validation weights are kept this way)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def save(path: Path, *, attn: str, seed: int, cfg: dict, world: int, model, opt, state: dict, vocab: list[str]) -> None:
    """`state`: the run's RunState as a dict (train.py)."""
    atomic_save({"attn": attn, "seed": seed, "cfg": cfg, "world_size": world, "vocab": vocab,
                 "model": model.state_dict(), "opt": opt.state_dict(), "state": state}, path)


def load(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint written by `save`, checked to be one; one line (exit 2) otherwise."""
    p = Path(path)
    if not p.is_file():
        raise AttnbenchError(f"checkpoint not found: {p}")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # any unreadable file: one line, not a traceback
        raise AttnbenchError(f"cannot read checkpoint {p}: {type(e).__name__}") from None
    if not isinstance(ck, dict) or "cfg" not in ck or "attn" not in ck or "state" not in ck:
        raise AttnbenchError(f"{p} is not a checkpoint of this attnbench version (start a new run)")
    return ck
