"""The registry of attentions: one file per attention, one line here per attention.

    names()               registered names, in table order
    build(name, **cfg)    an nn.Module: forward(x [B,T,D], mem [B,M,D] | None) -> [B,T,D], causal
    get(name)             the class (paper, summary, closed_form(cfg), has_positions)
"""

from __future__ import annotations

import importlib
from typing import Any

from attnbench.config import AttnConfig
from attnbench.errors import AttnbenchError

# name -> "module:Class"; modules are imported on demand so that `attnbench --help` stays instant.
_REGISTRY: dict[str, str] = {}


def register(name: str, target: str) -> None:
    if name in _REGISTRY:
        raise ValueError(f"attention {name!r} registered twice")
    _REGISTRY[name] = target


register("mha", "attnbench.attention.mha:MHA")
register("mdha", "attnbench.attention.mdha:MDHA")
register("rmha", "attnbench.attention.rmha:RMHA")
register("rcmha", "attnbench.attention.rcmha:RCMHA")
register("mhe-add", "attnbench.attention.mhe_add:MHEAdd")
register("mhe-mul", "attnbench.attention.mhe_mul:MHEMul")
register("sha", "attnbench.attention.sha:SHA")
register("mqa", "attnbench.attention.mqa:MQA")
register("gqa", "attnbench.attention.gqa:GQA")


def names() -> list[str]:
    return list(_REGISTRY)


def check_name(name: str) -> str:
    if name not in _REGISTRY:
        raise AttnbenchError(f"unknown attention {name!r}; valid: {', '.join(names())}", exit_code=2)
    return name


def parse_names(spec: str | None) -> list[str]:
    """'mha,rcmha' -> ['mha', 'rcmha']; None, '' or 'all' -> every registered name."""
    if spec is None or spec.strip() in ("", "all"):
        return names()
    out = [check_name(s.strip()) for s in spec.split(",") if s.strip()]
    return list(dict.fromkeys(out))


def get(name: str) -> Any:
    module, cls = _REGISTRY[check_name(name)].split(":")
    return getattr(importlib.import_module(module), cls)


def build(name: str, **config: Any):
    """Build attention `name` from keyword settings (see AttnConfig) or a ready `cfg=AttnConfig(...)`."""
    cfg = config.pop("cfg", None) or AttnConfig.from_kwargs(**config)
    return get(name)(cfg)
