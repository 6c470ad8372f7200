"""Causality where the run happens (issue 21, item 1; docs/contract.md, "Causality"; docs/design.md, "The causality
check"). Before an attention is measured or trained it is checked at the run's own sequence length T, memory length,
device, dtype and AttnConfig: in evaluation and in training mode (dropout 0), without and with memory, with its own
initialisation and with every parameter perturbed. The rule: no output position i depends on an input position j > i
(memory is all past; Vaswani et al. 2017, §3.2.3: "preventing leftward information flow").

One batch checks every split point at once: row b checks split s_b (outputs <= s_b against inputs > s_b), so a
module that mixes rows (batch statistics) shows up as a leak too, which is right. Two tests per variant:
- gradient: a random cotangent on the outputs at positions <= s_b; the gradient w.r.t. the inputs at > s_b must be
  exactly zero (a -inf mask gives exact zeros: exp(-inf) = 0, and every product with it is 0);
- perturbation: large noise on the inputs after s_b must leave the outputs at <= s_b unchanged within a tolerance of
  the dtype, relative to the output's scale: the leaks that carry no gradient (detach, argmax, indexing, no_grad).
On a failure a few more passes find the first leaking pair (i, j). Verdicts are cached per (class, config, T, memory,
device, dtype) within the process; the global RNG is left as it was (the training runs are unchanged by a check).
Library code: `check` returns a Verdict, `require` raises the refusal (contract.refuse: one line, exit 2).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace
from typing import Any

from attnbench import watchdog
from attnbench.config import AttnConfig

SPLITS = 6  # split points per variant: 0, T-2 and four more over the length (2^m - 1 first, then evenly spaced)
MEM_DEFAULT = 4  # the memory of the "with memory" variants of a run without memory
NOISE = 10.0  # size of the perturbation of later inputs (inputs are N(0, 1))
PARAM_NOISE = 0.1  # std of the noise added to every parameter (as contract.check has always done)
TOL = {"float32": 1e-5, "float64": 1e-9, "bfloat16": 2e-2, "float16": 2e-3}  # max |Δ past output| / max |output|
MODES = ("eval", "train")
# (parameters, mode, memory): the run's own initialisation in both modes, and every parameter perturbed (no leak hides
# behind a zero-initialised weight) in both modes, without and with memory (M: the run's, else MEM_DEFAULT)
VARIANTS = (("initialised", "eval", 0), ("initialised", "train", 0), ("perturbed", "eval", 0),
            ("perturbed", "train", 0), ("perturbed", "eval", "M"), ("perturbed", "train", "M"))
_WORDS = {"eval": "evaluation mode", "train": "training mode"}
_CACHE: dict[tuple, "Verdict"] = {}


@dataclass
class Leak:
    i: int  # output position
    j: int | None  # input position j > i; None: the output depends on another row of the batch
    mode: str  # eval | train
    mem: int  # memory length of the variant (0: without memory)
    params: str  # initialised | perturbed
    test: str  # gradient | perturbation
    change: float | None = None  # relative change (perturbation)


@dataclass
class Verdict:
    name: str
    T: int
    mem: int  # memory length of the "with memory" variants
    device: str
    dtype: str
    seconds: float = 0.0
    leak: Leak | None = None
    failed: tuple[str, str] | None = None  # (status, reason) of a check that could not run: classify(e), e.g. oom
    splits: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.leak is None and self.failed is None

    def problem(self) -> str:
        """The refusal, after "attention 'name' refused: "."""
        k = self.leak
        where = "with memory" if k.mem else "without memory"
        head = f"not causal in {_WORDS[k.mode]} {where} at T={self.T}"
        if k.mem:
            head += f", M={k.mem}"
        what = f"output {k.i} depends on input {k.j}" if k.j is not None else \
            f"output {k.i} depends on other rows of the batch (batch statistics)"
        how = "gradient" if k.change is None else f"perturbation, relative change {k.change:.2g}"
        return f"{head}: {what} ({k.params} parameters; {how})"

    def summary(self) -> dict[str, Any]:
        """What a record's config keeps (config.causality)."""
        out = {"checked_T": self.T, "mem": self.mem, "modes": list(MODES), "splits": len(self.splits), "seconds": round(self.seconds, 3),
               "ok": self.ok}
        if self.failed:
            out["failed"] = f"{self.failed[0]}: {self.failed[1]}"
        return out


def split_points(T: int, k: int = SPLITS) -> list[int]:
    """k split points in [0, T-2]: 0 and T-2, then 2^m - 1 (a mask's block edges), then evenly spaced ones."""
    if T < 2:
        return []
    last = T - 2
    out = {0, last}
    m = 4
    while len(out) < min(k, T - 1) and (1 << m) - 1 < last:
        out.add((1 << m) - 1)
        m += 2
    q = 1
    while len(out) < min(k, T - 1):
        out.update(round(last * f / (q + 1)) for f in range(1, q + 1) if len(out) < k)
        q += 1
    return sorted(out)


def check(name: str, cfg: AttnConfig, T: int, mem_len: int = 0, device: Any = "cpu", dtype: Any = None,
          rows: int = SPLITS, autocast: bool = False, cls: Any = None) -> Verdict:
    """The verdict for attention `name` (class `cls`, default: the registry's) built from `cfg` at segment T and
    memory `mem_len` (0: MEM_DEFAULT for the "with memory" variants), on `device` in `dtype` (under bf16 autocast
    with `autocast`), at most `rows` rows per pass. Out of memory, or a forward that fails, is `failed`."""
    import torch

    from attnbench.errors import classify

    dtype = dtype or torch.float32
    if cls is None:
        from attnbench.attention import get

        cls = get(name)
    cfg0 = replace(cfg, dropout=0.0)
    M = mem_len or MEM_DEFAULT
    key = (cls, repr(cfg0), T, M, str(device), str(dtype), autocast)
    if key in _CACHE:
        return _CACHE[key]
    v = Verdict(name, T, M, str(device), str(dtype).replace("torch.", ""), splits=split_points(T))
    t0 = time.perf_counter()
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        try:
            v.leak = _check(cls, cfg0, T, M, dev, dtype, max(1, rows), autocast, v.splits)
        except (Exception, MemoryError) as e:
            from attnbench.errors import AttnbenchError

            if isinstance(e, AttnbenchError):
                raise
            v.failed = classify(e)
        finally:
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    v.seconds = time.perf_counter() - t0
    if not (v.failed and v.failed[0] == "timeout"):  # a limit is the caller's, not the attention's
        _CACHE[key] = v
    return v


def require(name: str, cfg: AttnConfig, T: int, mem_len: int = 0, **kw: Any) -> Verdict:
    """check(), and the refusal (AttnbenchError, exit 2) when the attention is not causal. A check that could not
    run comes back as it is (`failed`): the caller treats it as it treats its own cell or run failing so."""
    v = check(name, cfg, T, mem_len, **kw)
    if v.leak is not None:
        from attnbench.attention.contract import refuse

        raise refuse(name, v.problem())
    return v


# ----------------------------------------------------------------------------------------------- the check
def _check(cls, cfg: AttnConfig, T: int, M: int, dev, dtype, rows: int, autocast: bool,
           splits: list[int]) -> Leak | None:
    import torch

    if not splits:
        return None
    torch.manual_seed(0)
    base = cls(cfg)
    for m in base.modules():  # a dropout the class builds without reading cfg.dropout
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    base = base.to(device=dev, dtype=dtype)
    gen = torch.Generator().manual_seed(0)
    tol = TOL["bfloat16"] if autocast else TOL.get(str(dtype).replace("torch.", ""), 1e-2)
    module = base
    for params, mode, mem in VARIANTS:
        if params == "perturbed" and module is base:
            module = _perturbed(base, gen)
        module.train(mode == "train")
        mem = M if mem == "M" else 0
        for start in range(0, len(splits), rows):
            watchdog.check()  # under a sweep's cell limit (bench.py): CellTimeout once it has passed
            test = _one_pass(module, splits[start:start + rows], T, mem, cfg.d_model, dev, dtype, gen, tol, autocast)
            if test is not None:
                return _locate(module, T, mem, cfg.d_model, dev, dtype, gen, tol, autocast, rows, test[0],
                               min(test[1]), mode, params)
    return None


def _perturbed(base, gen):
    import torch

    module = copy.deepcopy(base)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(PARAM_NOISE * torch.randn(p.shape, generator=gen).to(p))
    return module


def _ctx(dev, autocast: bool):
    import contextlib

    import torch

    return torch.autocast(dev.type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()


def _inputs(n: int, T: int, mem: int, D: int, dev, dtype, gen):
    import torch

    x = torch.randn(n, T, D, generator=gen).to(dev, dtype)
    m = torch.randn(n, mem, D, generator=gen).to(dev, dtype) if mem else None
    return x, m


def _call(module, x, mem):
    y = module(x) if mem is None else module(x, mem)
    if getattr(y, "shape", None) != x.shape:
        raise ValueError(f"forward returns {list(getattr(y, 'shape', ()))}, expected x's shape {list(x.shape)}")
    return y


def _one_pass(module, s: list[int], T: int, mem: int, D: int, dev, dtype, gen, tol: float,
              autocast: bool) -> tuple[str, list[int]] | None:
    """Row b checks split s[b]: gradient, then perturbation. (test, the splits of the rows that leak) or None."""
    import torch

    x, m = _inputs(len(s), T, mem, D, dev, dtype, gen)
    pos = torch.arange(T, device=dev)
    after = pos[None, :] > torch.tensor(s, device=dev)[:, None]  # [B, T]: inputs after the row's split
    x.requires_grad_(True)
    with _ctx(dev, autocast):
        y = _call(module, x, m)
    if y.requires_grad:
        cot = torch.randn(y.shape, generator=gen).to(dev, y.dtype) * (~after)[..., None]
        (gx,) = torch.autograd.grad(y, x, cot, allow_unused=True)
        if gx is not None:
            bad = ((gx != 0) & after[..., None]).flatten(1).any(1)
            if bad.any():
                return "gradient", [s[b] for b in bad.nonzero().flatten().tolist()]
    y = y.detach()
    with torch.no_grad(), _ctx(dev, autocast):
        x2 = x.detach() + NOISE * torch.randn(x.shape, generator=gen).to(dev, dtype) * after[..., None]
        y2 = _call(module, x2, m)
    change = _change(y, y2, ~after)
    bad = change > tol
    if bad.any():
        return "perturbation", [s[b] for b in bad.nonzero().flatten().tolist()]
    return None


def _change(y, y2, keep):
    """Per row: max |y2 - y| over the kept positions, relative to max |y| (the output's scale)."""
    scale = y.float().abs().max().clamp_min(1e-30)
    return (((y2.float() - y.float()).abs().amax(-1) * keep).amax(-1) / scale)


# ----------------------------------------------------------------------------------------------- locating a leak
def _locate(module, T, mem, D, dev, dtype, gen, tol, autocast, rows, test, first, mode, params) -> Leak:
    """The first leaking pair: i the least split point that leaks (every pair (i', j) has i' <= s < j for a leaking
    s, so none has i' < i), then j the least later input that moves output i. Rows of one split point each, in
    passes of `rows`; i confirmed alone (batch of one), else the leak is across rows."""
    i = first
    cands = list(range(0, first))
    for start in range(0, len(cands), rows):
        watchdog.check()
        got = _one_pass(module, cands[start:start + rows], T, mem, D, dev, dtype, gen, tol, autocast)
        if got is not None:
            i = min(got[1])
            break
    alone = _one_pass(module, [i], T, mem, D, dev, dtype, gen, tol, autocast)
    if alone is None:
        return Leak(i, None, mode, mem, params, test)
    test = alone[0]
    j, change = _first_input(module, i, T, mem, D, dev, dtype, gen, tol, autocast, rows, test)
    return Leak(i, j, mode, mem, params, test, change)


def _first_input(module, i, T, mem, D, dev, dtype, gen, tol, autocast, rows, test) -> tuple[int | None, float | None]:
    """The least j > i whose input moves output i (gradient: one backward from output i; perturbation: rows that
    each change one input)."""
    import torch

    x, m = _inputs(1, T, mem, D, dev, dtype, gen)
    if test == "gradient":
        x.requires_grad_(True)
        with _ctx(dev, autocast):
            y = _call(module, x, m)
        cot = torch.zeros_like(y)
        cot[0, i] = torch.randn(y.shape[-1], generator=gen).to(dev, y.dtype)
        (gx,) = torch.autograd.grad(y, x, cot)
        js = (gx[0, i + 1:] != 0).any(-1).nonzero().flatten()
        return (i + 1 + int(js[0])) if len(js) else None, None
    with torch.no_grad(), _ctx(dev, autocast):
        y = _call(module, x, m)
        later = list(range(i + 1, T))
        for start in range(0, len(later), rows):
            watchdog.check()
            js = later[start:start + rows]
            x2 = x.repeat(len(js), 1, 1)
            for r, j in enumerate(js):
                x2[r, j] += NOISE * torch.randn(D, generator=gen).to(dev, dtype)
            y2 = _call(module, x2, None if m is None else m.repeat(len(js), 1, 1))
            keep = torch.zeros(len(js), T, dtype=torch.bool, device=dev)
            keep[:, i] = True
            change = _change(y.expand_as(y2), y2, keep)
            hit = (change > tol).nonzero().flatten()
            if len(hit):
                return js[int(hit[0])], float(change[hit[0]])
    return None, None


# ----------------------------------------------------------------------------------------------- where runs happen
def for_training(attns: list[str], c) -> dict[str, Verdict]:
    """Every attention of a training plan (TrainConfig `c`), before anything trains: at its segment (and every
    --eval-ctx length), with its memory, on its device, in float32 (bf16 autocast where the run uses it), its
    batch as the rows of a pass. A refusal raises (exit 2); a check that cannot run is one line (exit 1)."""
    from attnbench.device import resolve_device
    from attnbench.errors import RunFailed

    device = resolve_device(c.device)
    autocast = bool(c.amp) and device.type == "cuda"
    out = {}
    for a in attns:
        for T in dict.fromkeys([c.ctx, *c.eval_lengths]):
            v = require(a, c.attn_config(), T, c.mem_len if T == c.ctx else 0, device=device, rows=c.batch,
                        autocast=autocast)
            if v.failed:
                raise RunFailed(f"attention {a!r}: the causality check at T={T} could not run ({v.failed[0]}: "
                                f"{v.failed[1]})")
            out.setdefault(a, v)
    return out


def note(verdicts: list[Verdict]) -> str:
    """One line for a command's notes: what was checked, and what it cost."""
    if not verdicts:
        return "causality: nothing checked"
    each = ", ".join(f"{v.name} T={v.T} {v.seconds:.2f} s" for v in verdicts)
    v = verdicts[0]
    return (f"causality checked before running (docs/contract.md): {len(VARIANTS)} variants (evaluation and training "
            f"mode, initialised and perturbed parameters, without and with memory M={v.mem}), {len(v.splits)} split "
            f"points; {each}")
