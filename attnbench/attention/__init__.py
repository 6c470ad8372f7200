"""The registry of attentions and the contract they follow (docs/contract.md): built-ins, one line here each;
installed packages through the entry-point group `attnbench.attentions`; any class named as `path/file.py:Class`
or `package.module:Class`.

    names()                   built-in names, then installed entry points, in table order
    parse_names(spec)         'mha,my/attn.py:Local' -> ['mha', 'my/attn.py:Local'], each one resolvable
    get(name)                 the class; one from outside is checked first (contract.check: shape, causality)
    build(name, **cfg)        an nn.Module: forward(x [B,T,D], mem [B,M,D] | None) -> [B,T,D], causal
    describe(spec)            rows for `attnbench list`: name, paper, description, what the class declares
    file_safe(name)           the name as one file-name component (checkpoints of 'path/to/file.py:Class')
    unused_settings(cls, kw)  the given AttnConfig settings that the class does not read
"""

from __future__ import annotations

import importlib
import re
from dataclasses import fields
from typing import Any

from attnbench.config import AttnConfig
from attnbench.errors import AttnbenchError

ENTRY_POINT_GROUP = "attnbench.attentions"
COMMON_SETTINGS = ("d_model", "n_heads", "dropout", "bias", "impl")  # read by every attention
# The optional members a command needs (docs/contract.md); one left out gives n/a cells, never a guessed figure.
MEMBERS = ("has_reference", "closed_form", "param_parts", "core_heads", "activation_estimate", "settings",
           "paper_figures")

# name -> "module:Class"; modules are imported on demand so that `attnbench --help` stays instant.
_REGISTRY: dict[str, str] = {}
_CHECKED: dict[str, type] = {}  # names from outside whose class passed contract.check in this process


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


def _entry_points() -> dict[str, Any]:
    """Installed entry points of the group by name; a name taken twice, or by a built-in, fails loudly."""
    from importlib.metadata import entry_points

    out: dict[str, Any] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _REGISTRY:
            raise AttnbenchError(f"entry point {ep.name!r} ({ep.value}) of group {ENTRY_POINT_GROUP} takes the name "
                                 f"of a built-in attention", exit_code=2)
        if ep.name in out and out[ep.name].value != ep.value:
            raise AttnbenchError(f"entry point {ep.name!r} of group {ENTRY_POINT_GROUP} is installed twice "
                                 f"({out[ep.name].value}, {ep.value})", exit_code=2)
        out[ep.name] = ep
    return out


def names() -> list[str]:
    return [*_REGISTRY, *_entry_points()]


def is_external(name: str) -> bool:
    """A class named by its location (`file.py:Class`, `package.module:Class`) rather than registered."""
    return name not in _REGISTRY and ":" in name


def check_name(name: str) -> str:
    if name in _REGISTRY or is_external(name) or name in _entry_points():
        return name
    from attnbench.workload import BASELINES

    if name in BASELINES:
        raise AttnbenchError(f"{name} is a speed/memory baseline, not an attention (attnbench speed --attn {name})",
                             exit_code=2)
    raise AttnbenchError(f"unknown attention {name!r}; valid: {', '.join(names())}, or path/to/file.py:Class, "
                         f"or package.module:Class", exit_code=2)


def parse_names(spec: str | None) -> list[str]:
    """'mha,rcmha' -> ['mha', 'rcmha']; None, '' or 'all' -> every registered name. A class from outside is loaded
    and checked here, before anything is measured."""
    if spec is None or spec.strip() in ("", "all"):
        return names()
    out = [check_name(s.strip()) for s in spec.split(",") if s.strip()]
    if not out:
        raise AttnbenchError(f"--attn {spec!r} names no attention; valid: {', '.join(names())}, or all")
    out = list(dict.fromkeys(out))
    for name in out:
        if name not in _REGISTRY:
            get(name)
    return out


def get(name: str) -> Any:
    """The class registered (or named) as `name`. A class from outside the package is refused with one line
    unless it passes contract.check."""
    if name in _REGISTRY:
        module, cls = _REGISTRY[name].split(":")
        return getattr(importlib.import_module(module), cls)
    if name not in _CHECKED:
        from attnbench.attention import contract

        check_name(name)
        cls = contract.load(name) if is_external(name) else contract.load_entry_point(_entry_points()[name])
        contract.check(cls, name)
        _CHECKED[name] = cls
    return _CHECKED[name]


def build(name: str, **config: Any):
    """Build attention `name` from keyword settings (see AttnConfig) or a ready `cfg=AttnConfig(...)`."""
    cfg = config.pop("cfg", None) or AttnConfig.from_kwargs(**config)
    cls = get(name)
    if cfg.impl == "reference" and not getattr(cls, "has_reference", False):
        raise AttnbenchError(f"{name} has no reference implementation (it does not declare has_reference)")
    return cls(cfg)


def describe(spec: str | None = None) -> list[dict[str, Any]]:
    """One row per attention of `spec` (every registered one by default): its name, paper, one-line description,
    and the optional members it declares."""
    rows = []
    for name in parse_names(spec):
        cls = get(name)
        declared = [m for m in MEMBERS if getattr(cls, m, None) not in (None, False)]
        rows.append({"name": name, "paper": getattr(cls, "paper", "n/a"), "description": getattr(cls, "summary", "n/a"),
                     "declares": ", ".join(declared) or "-"})
    return rows


def file_safe(name: str) -> str:
    """`name` as one file-name component: '/home/me/attn.py:Local' -> 'home_me_attn.py_Local' (a name from outside
    holds slashes, which would put a file elsewhere than in the folder it is joined to)."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("_.") or "attention"


def unused_settings(cls: Any, given: dict[str, Any]) -> list[str]:
    """The AttnConfig settings in `given` whose value differs from the default and that `cls` does not read
    (neither a common setting nor one of its declared `settings`): a setting that would be silently ignored."""
    defaults = {f.name: f.default for f in fields(AttnConfig)}
    reads = set(COMMON_SETTINGS) | set(getattr(cls, "settings", ()))
    return [k for k, v in given.items() if k in defaults and k not in reads and v is not None and v != defaults[k]]
