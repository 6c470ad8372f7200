"""The models of one training group: `n` members of one architecture (one attention, one config), one per seed.

    Solo      one member: the plain module, with every fast path, DistributedDataParallel and torch.compile
    Stacked   n members as one model: each parameter stacked along a leading member dimension, the forward of every
              member at once through torch.func.vmap over torch.func.functional_call (docs/design.md, "Seeds as one
              model"); any attention written in plain PyTorch runs so, a user's too
Both take and give a leading member dimension: x [n, B, T] (or [B, T] when every member reads the same batch) ->
logits [n, B, T, V], memories [n, B, M, D] per block, losses [n]. Everything that must stay per member is: the loss,
the gradient clipping (clip_grad_norm_), the optimiser state (AdamW is element-wise), the weights of a record.

Member i of a group starts from exactly the weights its solo run starts from (torch.manual_seed(seed), then the
model), and each member only ever reads its own slice of a stacked tensor, so a member's training is its solo run's,
up to the summation order of batched kernels.

Narrowed tables: a learned relative table (attention.md, RMHA: labml's 2·max_rel rows) is read at ctx + mem_len rows
only; with Adam(W) and no weight decay a row whose gradient is always zero never moves (both moments stay 0), so a
group may train the rows in use alone (build(narrow=True)); the records and checkpoints still hold the full tables.
"""

from __future__ import annotations

import copy
import re
import warnings
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from attnbench import kernels
from attnbench.config import TrainConfig
from attnbench.model import lm_loss

_NO_RULE = re.compile(r"not yet implemented the batching rule for (\S+?)\.")


def build_model(attn: str, c: TrainConfig, vocab: int) -> nn.Module:
    """The run's language model: labml's Transformer-XL shell for the paper preset (flavour labml), else CharLM."""
    if c.flavour == "labml":
        from attnbench.model_labml import LabmlCharLM

        return LabmlCharLM(c.model_config(attn, vocab))
    from attnbench.model import CharLM

    return CharLM(c.model_config(attn, vocab))


def seeded_model(attn: str, c: TrainConfig, vocab: int, seed: int) -> nn.Module:
    """The weights a run of `seed` starts from (a solo run and member `seed` of a group alike)."""
    torch.manual_seed(seed)
    return build_model(attn, c, vocab)


class _Method(nn.Module):
    """`model.<name>(...)` as a module's forward, so that functional_call can run a method other than forward."""

    def __init__(self, model: nn.Module, name: str):
        super().__init__()
        self.model, self.name = model, name

    def forward(self, *args):
        return getattr(self.model, self.name)(*args)


class Solo:
    """One member: the module itself. `net` is what the training forward calls (DDP under torchrun, or
    torch.compile'd); evaluation calls the module."""

    stacked = False
    scored: int | None = None  # the training loss's positions per example, when fixed (scored_positions)

    def __init__(self, model: nn.Module, seed: int, net: nn.Module | None = None):
        self.model, self.net, self.seeds, self.n = model, net or model, [seed], 1
        self.n_params, self.attn_params = model.n_params(), model.attn_params()

    # -------------------------------------------------------------- forward
    def forward(self, x, mems=None, training: bool = False, at=None):
        """x [1, B, T] or [B, T], mems [1, B, M, D] per block -> (logits [1, B, T, V], memories or None); `at`
        [B, k]: logits at those positions only, [1, B, k, V] (CharLM.forward)."""
        x = x[0] if x.dim() == 3 else x
        where = {} if at is None else {"at": at}
        logits, new = (self.net if training else self.model)(x, None if mems is None else [m[0] for m in mems],
                                                             **where)
        return logits[None], None if new is None else [m[None] for m in new]

    def loss(self, x, y, mems=None):
        """Per-member losses [1], the logits (at the scored positions only when `scored` is set), memories."""
        at, targets = scored_targets(y[0] if y.dim() == 3 else y, self.scored)
        logits, new = self.forward(x, mems, training=True, at=at)
        return lm_loss(logits[0], targets)[None], logits, new

    def features(self, x):
        return self.model.features(x[0] if x.dim() == 3 else x)[0][None]

    def logits(self, h):
        return self.model.logits(h[0])[None]

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)

    # -------------------------------------------------------------- parameters
    def named_trained(self) -> list[tuple[str, torch.Tensor, int]]:
        """(name, tensor, dimensions of one member's parameter) of every trained tensor."""
        return [(k, p, p.dim()) for k, p in self.model.named_parameters()]

    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        return torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)[None]

    # -------------------------------------------------------------- state
    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(sd)

    def member_weights(self, i: int) -> dict[str, torch.Tensor]:
        """Member i's weights, copied to the host (the best-validation weights are kept so)."""
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def load_member_weights(self, weights: list[dict[str, torch.Tensor]]) -> None:
        self.model.load_state_dict(weights[0])

    def member_model(self, i: int) -> nn.Module:
        return self.model


class Stacked:
    """n members of one architecture as one model (vmap over functional_call); see the module docstring."""

    stacked = True
    scored: int | None = None  # as Solo.scored

    def __init__(self, models: list[nn.Module], seeds: list[int], device: torch.device,
                 template: nn.Module | None = None, windows: dict[str, slice] | None = None):
        """`models`: the members' full models (their initial weights); `template`: the architecture that runs (a
        narrowed one, or models[0]'s); `windows`: rows (dim 0) of a full parameter that the template holds."""
        self.seeds, self.n = list(seeds), len(models)
        self.n_params, self.attn_params = models[0].n_params(), models[0].attn_params()
        self.windows = windows or {}
        self.full_template = copy.deepcopy(models[0]).to("meta")  # the members' own architecture (member_model)
        self.template = self.full_template if template is None else template.to("meta")
        full = [dict(m.named_parameters()) for m in models]
        self.params: dict[str, nn.Parameter] = {}
        self.full_init: dict[str, torch.Tensor] = {}  # full tables of windowed parameters, on the host
        for name, _ in self.template.named_parameters():
            ws = [f[name].detach() for f in full]
            if name in self.windows:
                self.full_init[name] = torch.stack(ws)
                ws = [w[self.windows[name]] for w in ws]
            self.params[name] = nn.Parameter(torch.stack(ws).to(device))
        self.buffers = {k: torch.stack([dict(m.named_buffers())[k] for m in models]).to(device)
                        for k, _ in self.template.named_buffers()}
        self._features = _Method(self.template, "features")
        self._logits = _Method(self.template, "logits")

    # -------------------------------------------------------------- forward
    def _state(self, prefix: str = "") -> dict[str, torch.Tensor]:
        return {prefix + k: v for d in (self.params, self.buffers) for k, v in d.items()}

    def _vmap(self, fn, *args):
        """fn(state, *args) for every member at once: state and [n, ...] arguments split along dim 0, a [B, T]
        batch (one for every member) or None passed whole. An operator without a batching rule runs once per
        member (PyTorch's fallback, with a warning): the records name it (kernels.STACKED_FALLBACKS)."""
        from torch.func import vmap

        dims = (0, *(None if a is None or (torch.is_tensor(a) and a.dim() == 2) else 0 for a in args))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = vmap(fn, in_dims=dims, randomness="different")(self._state(), *args)
        for w in caught:
            m = _NO_RULE.search(str(w.message))
            if m:
                kernels.STACKED_FALLBACKS.add(f"{m.group(1)}: no batching rule, run once per member")
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return out

    def forward(self, x, mems=None, training: bool = False):
        from torch.func import functional_call

        def member(state, x, mems):
            logits, new = functional_call(self.template, state, (x, mems))
            return (logits, *(new or ()))

        logits, *new = self._vmap(member, x, mems)
        return logits, (new or None) if self.template.cfg.mem_len > 0 else None

    def loss(self, x, y, mems=None):
        from torch.func import functional_call

        k = self.scored

        def member(state, x, y, mems):
            at, targets = scored_targets(y, k)
            logits, new = functional_call(self.template, state, (x, mems), {} if at is None else {"at": at})
            return (lm_loss(logits, targets), logits, *(new or ()))

        losses, logits, *new = self._vmap(member, x, y, mems)
        return losses, logits, (new or None) if self.template.cfg.mem_len > 0 else None

    def features(self, x):
        from torch.func import functional_call

        return self._vmap(lambda s, x: functional_call(self._features, self._prefixed(s), (x,))[0], x)

    def logits(self, h):
        from torch.func import functional_call

        return self._vmap(lambda s, h: functional_call(self._logits, self._prefixed(s), (h,)), h)

    @staticmethod
    def _prefixed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"model." + k: v for k, v in state.items()}

    def train(self, mode: bool = True) -> None:
        self.template.train(mode)

    # -------------------------------------------------------------- parameters
    def named_trained(self) -> list[tuple[str, torch.Tensor, int]]:
        return [(k, p, p.dim() - 1) for k, p in self.params.items()]

    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """clip_grad_norm_ of each member on its own slices: the member's total 2-norm over every gradient, each
        slice scaled by min(1, max_norm / (norm + 1e-6)) (torch.nn.utils.clip_grad_norm_'s rule). Returns the
        norms [n]."""
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        slices = [list(g.unbind(0)) for g in grads]  # [params][n]: every member's slice of every gradient
        # multi-tensor kernels over every slice at once, as clip_grad_norm_ runs them over one model's gradients
        norms = torch.stack(torch._foreach_norm([t for s in slices for t in s])).view(len(grads), self.n)
        total = torch.linalg.vector_norm(norms, dim=0)  # [n]
        coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
        for i in range(self.n):
            torch._foreach_mul_([s[i] for s in slices], coef[i])
        return total

    # -------------------------------------------------------------- state
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in self._state().items()}

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for k, v in self._state().items():
                v.copy_(sd[k])

    def member_weights(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i].detach().to("cpu", copy=True) for k, v in self._state().items()}

    def load_member_weights(self, weights: list[dict[str, torch.Tensor]]) -> None:
        with torch.no_grad():
            for k, v in self._state().items():
                v.copy_(torch.stack([w[k] for w in weights]))

    def member_model(self, i: int) -> nn.Module:
        """Member i as a plain module, with its full tables (sampling, and whoever wants the weights)."""
        device = next(iter(self.params.values())).device
        sd = {}
        for k, v in self._state().items():
            w = v[i].detach()
            if k in self.windows:
                w = self.full_init[k][i].clone().index_copy_(0, torch.arange(self.windows[k].start,
                                                                             self.windows[k].stop), w.cpu())
            sd[k] = w
        model = copy.deepcopy(self.full_template).to_empty(device=device)
        model.load_state_dict(sd)
        return model


# ------------------------------------------------------------------------------------------------ a group's models
def narrowed(c: TrainConfig) -> TrainConfig | None:
    """The config a group may train instead of `c` with the same result, or None: learned relative tables cut to
    the rows a run reads (ctx + mem_len, attention.md RMHA), when no weight decay moves the unread rows and no
    extrapolation pass reads further."""
    keys = c.ctx + c.mem_len
    if c.pos != "learned" or c.weight_decay != 0 or c.eval_lengths or c.max_rel <= keys:
        return None
    return replace(c, max_rel=keys)


def build(attn: str, c: TrainConfig, vocab: int, seeds: list[int], device: torch.device, *, stacked: bool,
          net=None) -> "Solo | Stacked":
    """The group's members, built from their seeds; `stacked` False takes one seed and the plain module."""
    if not stacked:
        (seed,) = seeds
        model = seeded_model(attn, c, vocab, seed).to(device)
        return Solo(model, seed, net(model) if net else None)
    models = [seeded_model(attn, c, vocab, s) for s in seeds]
    small = narrowed(c)
    if small is None:
        return Stacked(models, seeds, device)
    with torch.device("meta"):
        template = build_model(attn, small, vocab)
    windows = {}
    full = dict(models[0].named_parameters())
    for name, p in template.named_parameters():
        if p.shape != full[name].shape:  # a table of 2·max_rel rows, row max_rel + (j − i') in both sizes
            windows[name] = slice(c.max_rel - small.max_rel, c.max_rel + small.max_rel)
    return Stacked(models, seeds, device, template, windows)


def decay_groups(members, c: TrainConfig) -> list[dict[str, Any]]:
    """AdamW's parameter groups: weight decay on a member's matrices (2 dimensions or more), not on its vectors."""
    trained = members.named_trained()
    return [{"params": [p for _, p, d in trained if d >= 2], "weight_decay": c.weight_decay},
            {"params": [p for _, p, d in trained if d < 2], "weight_decay": 0.0}]


def scored_positions(y: torch.Tensor, k: int) -> torch.Tensor:
    """[B, k]: the positions of each row of targets y [B, T] that are scored (not tasks.IGNORE), in order, when every
    row has exactly k (a synthetic task's scored_per_example). The loss over the logits at these positions alone is
    the loss over all positions, whose other targets cross-entropy ignores; the output layer then runs on k of T
    positions (MQAR under --preset mqar: 16 of 64, at a vocabulary of 8192). A static shape and no host sync, so
    the captured step (graphed.py) holds it: a stable sort puts the scored positions first, in order."""
    from attnbench.tasks import IGNORE

    return (y != IGNORE).int().argsort(dim=-1, descending=True, stable=True)[..., :k]


def scored_targets(y: torch.Tensor, k: int | None) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(positions, targets) of a training loss: with k, scored_positions and y there; without, (None, y)."""
    if k is None:
        return None, y
    at = scored_positions(y, k)
    return at, y.gather(1, at)


def correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Correct top-1 predictions per member: logits [n, B, T, V], targets [B, T] or [n, B, T] -> [n]."""
    return (logits.argmax(-1) == y).flatten(1).sum(1)
