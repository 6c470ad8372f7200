"""A group's steps captured once as CUDA graphs and replayed (PyTorch's CUDA semantics notes, "Whole-network
capture"): the training step (forward, loss, backward, per-member clipping, AdamW) and the scoring step of the paper
schedule, with or without Transformer-XL memory.

Why: a small model's step is hundreds of small kernels, launched one by one from Python; the GPU waits on the CPU.
A replayed graph launches them at once and computes the same step, on the same static buffers.

Exactness: capture needs a few warm-up steps first (workspaces, lazily built optimizer state). Those steps change the
weights and the AdamW moments, so both are snapshotted before and copied back in place afterwards: the first
replayed step starts from exactly the state an eager step would. Memory lives in static buffers, one [n, B, M, D] per
block: a step reads them and, after the update, copies the new memory in, so consecutive replays carry memory like
consecutive eager steps. Only the steady state is captured (memory full, a full segment): the engine runs the other
steps eagerly and hands their memory over with `load_mems`. Counters (correct predictions) are device tensors owned
by the caller, added to inside the graph: no replay syncs with the host. Dropout draws from the same generator
through CUDA's graph-safe Philox offsets, so masks differ from an eager run's but are as random.
"""

from __future__ import annotations

import contextlib

import torch

from attnbench.device import side_stream
from attnbench.training.optim import score_step, train_step

WARMUP_STEPS = 3  # the docs' example uses 3


def _snapshot(params: list[torch.Tensor], opt: torch.optim.Optimizer | None):
    """The weights (a copy beside them, as in every run) and the optimizer state, copied to host memory: a resumed
    run's AdamW moments (twice the weights) would otherwise sit on the GPU through the warm-up steps and raise its
    allocator peak above a fresh run's, whose state does not exist yet (an H200 rcmha run resumed at step 4,500 read
    2,271 MiB against 2,192; results/h200/extrapolation/)."""
    saved = [p.detach().clone() for p in params]
    state = {} if opt is None else {id(p): {k: (v.detach().to("cpu", copy=True) if torch.is_tensor(v) else v)
                                            for k, v in s.items()} for p, s in opt.state.items()}
    return saved, state


def _restore(params: list[torch.Tensor], opt: torch.optim.Optimizer | None, snap) -> None:
    """Copy the snapshot back into the same tensors (the graph holds their addresses)."""
    saved, state = snap
    with torch.no_grad():
        for p, s in zip(params, saved):
            p.copy_(s)
        for p, s in ({} if opt is None else opt.state).items():
            before = state.get(id(p))
            for k, v in s.items():
                if torch.is_tensor(v):
                    v.zero_() if before is None else v.copy_(before[k])  # no state before: step 0, moments 0


def amp(on: bool):
    """bf16 autocast without the weight-cast cache, which must be off under capture (PyTorch AMP docs, "CUDA
    Graphs")."""
    return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False) if on else contextlib.nullcontext()


class _Graphed:
    def __init__(self, members, x_shape, mem_shape, device, counter: torch.Tensor | None):
        self.members, self.counter = members, counter
        self.x = torch.zeros(x_shape, dtype=torch.long, device=device)
        self.y = torch.zeros(x_shape, dtype=torch.long, device=device)
        self.mems = None if mem_shape is None else [torch.zeros(mem_shape[1:], device=device)
                                                    for _ in range(mem_shape[0])]

    def _capture(self, opt) -> None:
        """Warm the body up on a side stream, then capture it; weights, optimizer state and counter as before."""
        params = [p for _, p, _ in self.members.named_trained()]
        snap, before = _snapshot(params, opt), None if self.counter is None else self.counter.clone()
        device = self.x.device
        try:
            side = side_stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(WARMUP_STEPS):
                    if opt is not None:
                        opt.zero_grad(set_to_none=True)
                    self._body()
            torch.cuda.current_stream(device).wait_stream(side)
            if opt is not None:
                opt.zero_grad(set_to_none=True)  # .grad then comes from the graph's private pool
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self._body()
        finally:  # also when capture fails: the caller may go on eagerly from the untouched state
            if opt is not None:
                opt.zero_grad(set_to_none=True)
            _restore(params, opt, snap)
            if before is not None:
                self.counter.copy_(before)

    def _carry(self, new_mems, counted) -> None:
        if self.mems is not None:
            for buf, m in zip(self.mems, new_mems):
                buf.copy_(m)
        if self.counter is not None:
            self.counter.add_(counted)

    def load_mems(self, mems: list[torch.Tensor]) -> None:
        for buf, m in zip(self.mems, mems):
            buf.copy_(m)

    def _feed(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x.copy_(x, non_blocking=True)
        self.y.copy_(y, non_blocking=True)


class GraphedStep(_Graphed):
    """`step(x, y)` runs one optimiser step of every member (optim.train_step) by replaying the captured graph at
    the optimiser's current learning rate (a device tensor); returns the per-member losses [n] as a new device
    tensor. x, y: the shape given at capture; mem_shape (blocks, n, B, M, D) or None for no memory."""

    def __init__(self, members, opt, x_shape, mem_shape, device, grad_clip: float, amp_on: bool,
                 counter: torch.Tensor | None = None):
        super().__init__(members, x_shape, mem_shape, device, counter)
        self.opt, self.grad_clip, self.amp_on = opt, grad_clip, amp_on
        self._capture(opt)

    def _body(self) -> None:
        self.loss, new, counted = train_step(self.members, self.opt, self.x, self.y, self.mems, self.grad_clip,
                                             amp(self.amp_on), self.counter is not None)
        self._carry(new, counted)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self._feed(x, y)
        self.graph.replay()
        return self.loss.clone()


class GraphedScore(_Graphed):
    """A scoring step (optim.score_step) captured like GraphedStep: adds each member's correct predictions to
    `counter`, reads and updates the memory buffers."""

    def __init__(self, members, x_shape, mem_shape, device, amp_on: bool, counter: torch.Tensor):
        super().__init__(members, x_shape, mem_shape, device, counter)
        self.amp_on = amp_on
        self._capture(None)

    def _body(self) -> None:
        counted, new = score_step(self.members, self.x, self.y, self.mems, amp(self.amp_on))
        self._carry(new, counted)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self._feed(x, y)
        self.graph.replay()
