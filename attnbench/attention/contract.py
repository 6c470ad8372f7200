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
CAUSAL_TOL = 1e-5  # max |Δ past output| / max |output| when only future inputs change (float32)


def refuse(name: str, problem: str) -> AttnbenchError:
    return AttnbenchError(f"attention {name!r} refused: {problem}", exit_code=2)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


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
    except Exception as e:
        del sys.modules[module_name]
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
        except Exception as e:
            raise refuse(name, f"importing {where} fails: {_one_line(e)}") from None
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise AttnbenchError(f"attention class not found: {where} has no {cls_name!r}", exit_code=2)
    return cls


def load_entry_point(ep) -> type:
    try:
        return ep.load()
    except Exception as e:
        raise refuse(ep.name, f"loading entry point {ep.value} fails: {_one_line(e)}") from None


def check(cls: Any, name: str) -> None:
    """The contract and causality, on a small float32 model on CPU, with the class's own initialisation and again
    with every parameter perturbed (so that no leak hides behind a zero-initialised weight); global RNG untouched."""
    import torch

    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise refuse(name, f"{cls!r} is not a torch.nn.Module subclass")
    cfg = AttnConfig(**CHECK_CFG)
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
            for perturbed in (False, True):
                if perturbed:
                    for p in module.parameters():
                        p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
                for m in (None, mem):
                    _check_causal(module, x, m, name, gen)


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


def _check_causal(module, x, mem, name: str, gen) -> None:
    """For every t: inputs at positions > t changed (memory is all past) must leave outputs at positions <= t."""
    import torch

    where = "without memory" if mem is None else f"with memory [B, {mem.shape[1]}, D]"
    y = _call(module, x, mem, name, where)
    scale = y.abs().max().clamp_min(1e-30)
    T = x.shape[1]
    for t in range(T - 1):
        x2 = x.clone()
        x2[:, t + 1:] += 10 * torch.randn(x2[:, t + 1:].shape, generator=gen)
        y2 = _call(module, x2, mem, name, where)
        diff = ((y2[:, : t + 1] - y[:, : t + 1]).abs().max() / scale).item()
        if diff > CAUSAL_TOL:
            raise refuse(name, f"not causal {where}: changing inputs after position {t} changes the output at "
                               f"positions <= {t} (max relative change {diff:.2g})")
