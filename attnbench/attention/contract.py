"""Loading an attention from outside the package, and the check it must pass before anything is measured
(docs/contract.md): built as Class(AttnConfig), forward(x, mem=None) returns x's shape, and causal with and without
memory. A class that fails is refused with one line naming the problem (AttnbenchError, exit code 2)."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from attnbench.config import AttnConfig
from attnbench.errors import AttnbenchError

CHECK_CFG = dict(d_model=32, n_heads=4)  # small enough to check in milliseconds
CHECK_B, CHECK_T, CHECK_M = 2, 8, 3  # batch, segment, memory of the check


def refuse(name: str, problem: str) -> AttnbenchError:
    return AttnbenchError(f"attention {name!r} refused: {problem}", exit_code=2)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _guarded(e: BaseException) -> bool:
    """An exception a plugin's import may raise that is refused like any other: every one but Ctrl-C (and SIGTERM
    as errors.Terminated), which stop the command. SystemExit too: a plugin calling sys.exit() at import is broken,
    and its exit code would otherwise end attnbench."""
    return not isinstance(e, KeyboardInterrupt)


def _import_file(path: Path, name: str):
    """Import a .py file as a module of its own (a stable name per path, so that loading it twice is one module)."""
    module_name = "attnbench_external_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise refuse(name, f"{path} cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException as e:
        del sys.modules[module_name]
        if not _guarded(e):
            raise
        raise refuse(name, f"importing {path} fails: {_one_line(e)}") from None
    return module


def load(name: str) -> type:
    """The class named by `path/to/file.py:Class` or `package.module:Class`."""
    where, _, cls_name = name.rpartition(":")
    if not where or not cls_name:
        raise refuse(name, "expected path/to/file.py:Class or package.module:Class")
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where).expanduser()
        if not path.is_file():
            raise AttnbenchError(f"attention file not found: {where}", exit_code=2)
        module = _import_file(path, name)
    else:
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as e:
            if e.name and (where == e.name or where.startswith(e.name + ".")):
                raise AttnbenchError(f"attention module not found: {where} (is its folder on PYTHONPATH?)",
                                     exit_code=2) from None
            raise refuse(name, f"importing {where} fails: {_one_line(e)}") from None
        except BaseException as e:
            if not _guarded(e):
                raise
            raise refuse(name, f"importing {where} fails: {_one_line(e)}") from None
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise AttnbenchError(f"attention class not found: {where} has no {cls_name!r}", exit_code=2)
    return cls


def load_entry_point(ep) -> type:
    try:
        return ep.load()
    except BaseException as e:
        if not _guarded(e):
            raise
        raise refuse(ep.name, f"loading entry point {ep.value} fails: {_one_line(e)}") from None


def check(cls: Any, name: str) -> None:
    """The contract on a small float32 model on CPU: the optional members well-formed (check_members), the shape
    with and without memory, and causality (attnbench.causality: both modes, with the class's own initialisation
    and with every parameter perturbed); global RNG untouched. The run's own sizes are checked where it runs."""
    import torch

    from attnbench import causality

    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise refuse(name, f"{cls!r} is not a torch.nn.Module subclass")
    cfg = AttnConfig(**CHECK_CFG)
    check_members(cls, name, cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            module = cls(cfg)
        except Exception as e:
            raise refuse(name, f"{cls.__name__}(AttnConfig(d_model=32, n_heads=4)) fails: {_one_line(e)}") from None
        module.eval()
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(CHECK_B, CHECK_T, cfg.d_model, generator=gen)
        mem = torch.randn(CHECK_B, CHECK_M, cfg.d_model, generator=gen)
        with torch.no_grad():
            for m in (None, mem):
                _call(module, x, m, name, "without memory" if m is None else f"with memory [B, {CHECK_M}, D]")
    v = causality.check(name, cfg, CHECK_T, CHECK_M, cls=cls)
    if v.failed:
        raise refuse(name, f"forward fails in the causality check: {v.failed[1]}")
    if v.leak:
        raise refuse(name, v.problem())


# The optional members (attention.MEMBERS) as the commands read them: a malformed one is refused at load, in one
# line, rather than read as a wrong figure (or a traceback) later. docs/contract.md lists them.
PARTS = ("qkv", "out", "other")


def check_members(cls: Any, name: str, cfg: AttnConfig) -> None:
    from dataclasses import fields

    def bad(member: str, what: str) -> AttnbenchError:
        return refuse(name, f"member {member}: {what}")

    def call(member: str, *args):
        try:
            return getattr(cls, member)(*args)
        except Exception as e:
            raise bad(member, f"{member}({', '.join(map(_arg, args))}) fails: {_one_line(e)}") from None

    for flag in ("has_reference", "has_positions"):
        if hasattr(cls, flag) and not isinstance(getattr(cls, flag), bool):
            raise bad(flag, f"must be True or False, got {getattr(cls, flag)!r}")
    if hasattr(cls, "closed_form"):
        got = call("closed_form", cfg)
        if not isinstance(got, dict) or set(got) != set(PARTS) or not all(_count(v) for v in got.values()):
            raise bad("closed_form", f"must return {{'qkv', 'out', 'other'}} -> counts (int >= 0), got {got!r}")
    if hasattr(cls, "param_parts"):
        got = cls.param_parts
        if not isinstance(got, dict) or not set(got) <= {"qkv", "out"} or not all(
                isinstance(v, (tuple, list)) and all(isinstance(p, str) for p in v) for v in got.values()):
            raise bad("param_parts", f"must map 'qkv' and 'out' to tuples of parameter-name prefixes, got {got!r}")
    if hasattr(cls, "core_heads"):
        got = call("core_heads", cfg)
        if not (_count(got) and got > 0):
            raise bad("core_heads", f"must return a positive int, got {got!r}")
    if hasattr(cls, "activation_estimate"):
        got = call("activation_estimate", cfg, 2, 16, 4)
        if not isinstance(got, dict) or not all(isinstance(k, str) and _count(v) for k, v in got.items()):
            raise bad("activation_estimate", f"must return tensor group -> bytes (int >= 0), got {got!r}")
    if hasattr(cls, "settings"):
        got, known = cls.settings, {f.name for f in fields(AttnConfig)}
        if isinstance(got, str) or not isinstance(got, (tuple, list, set, frozenset)):
            raise bad("settings", f"must be a tuple of AttnConfig field names, got {got!r}")
        unknown = [s for s in got if s not in known]
        if unknown:
            raise bad("settings", f"{', '.join(map(repr, unknown))} is not an AttnConfig field "
                                  f"(fields: {', '.join(sorted(known))})")
    if hasattr(cls, "paper_figures"):
        got = cls.paper_figures
        acc = got.get("acc") if isinstance(got, dict) else None
        if not isinstance(got, dict) or (acc is not None and not (isinstance(acc, (int, float)) and 0 <= acc <= 1)):
            raise bad("paper_figures", f"must be a dict whose 'acc' is an accuracy in [0, 1], got {got!r}")


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _arg(a: Any) -> str:
    return "cfg" if isinstance(a, AttnConfig) else repr(a)


def _call(module, x, mem, name: str, where: str):
    import torch

    try:
        y = module(x) if mem is None else module(x, mem)
    except Exception as e:
        raise refuse(name, f"forward {where} fails: {_one_line(e)}") from None
    if not isinstance(y, torch.Tensor) or y.shape != x.shape:
        got = list(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise refuse(name, f"forward {where} returns {got}, expected x's shape {list(x.shape)}")
    if not torch.isfinite(y).all():
        raise refuse(name, f"forward {where} returns non-finite values")
    return y
