"""One training step (forward, loss, backward, gradient clipping, AdamW) captured once as a CUDA graph and replayed
(PyTorch's CUDA semantics notes, "Whole-network capture").

Why: at the default preset (T=256, D=384, batch 64) a step is several hundred small kernels, and the relative and
convolutional attentions add tens per layer; launched one by one from Python the GPU waits on the CPU. A replayed
graph launches them all at once and computes the same step: the same kernels on the same static buffers.

Exactness: capture needs a few warm-up steps first (workspaces, lazily built optimizer state). Those steps change
the weights and the AdamW moments, so both are snapshotted before and copied back in place afterwards: the first
replayed step starts from exactly the state an eager run would. Dropout draws from the same generator through
CUDA's graph-safe Philox offsets, so masks differ from an eager run's but are as random.
"""

from __future__ import annotations

import contextlib

import torch

from attnbench.model import lm_loss

WARMUP_STEPS = 3  # the docs' example uses 3


def _snapshot(model: torch.nn.Module, opt: torch.optim.Optimizer):
    params = [p.detach().clone() for p in model.parameters()]
    state = {id(p): {k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()} for p, s in opt.state.items()}
    return params, state


def _restore(model: torch.nn.Module, opt: torch.optim.Optimizer, snap) -> None:
    """Copy the snapshot back into the same tensors (the graph holds their addresses)."""
    params, state = snap
    with torch.no_grad():
        for p, saved in zip(model.parameters(), params):
            p.copy_(saved)
        for p, s in opt.state.items():
            before = state.get(id(p))
            for k, v in s.items():
                if not torch.is_tensor(v):
                    continue
                if before is None:
                    v.zero_()  # a fresh AdamW state: step 0, both moments 0
                else:
                    v.copy_(before[k])


class GraphedStep:
    """`step(x, y, lr)` runs one optimiser step of `model` on (x, y) by replaying the captured graph; returns the
    step's loss as a new device tensor (no host sync). x, y: [B, T] token ids of the shape given at capture."""

    def __init__(self, model: torch.nn.Module, opt: torch.optim.Optimizer, shape: tuple[int, int],
                 device: torch.device, grad_clip: float, amp: bool):
        self.model, self.opt, self.grad_clip, self.amp = model, opt, grad_clip, amp
        self.x = torch.zeros(shape, dtype=torch.long, device=device)
        self.y = torch.zeros(shape, dtype=torch.long, device=device)
        self.lr = torch.tensor(float(opt.param_groups[0]["lr"]), dtype=torch.float32, device=device)
        for g in opt.param_groups:
            g["lr"] = self.lr  # read by the captured AdamW kernels at every replay
        snap = _snapshot(model, opt)
        try:
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(WARMUP_STEPS):
                    opt.zero_grad(set_to_none=True)
                    self._body()
            torch.cuda.current_stream(device).wait_stream(side)
            opt.zero_grad(set_to_none=True)  # .grad then comes from the graph's private pool
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.loss = self._body()
        finally:  # also when capture fails: the caller may go on eagerly from the untouched state
            opt.zero_grad(set_to_none=True)
            _restore(model, opt, snap)

    def _amp(self):
        # autocast's weight-cast cache must be off under capture (PyTorch AMP docs, "CUDA Graphs")
        if self.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
        return contextlib.nullcontext()

    def _body(self) -> torch.Tensor:
        with self._amp():
            logits, _ = self.model(self.x)
            loss = lm_loss(logits, self.y)
        loss.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.opt.step()
        return loss.detach()

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
        self.x.copy_(x, non_blocking=True)
        self.y.copy_(y, non_blocking=True)
        self.lr.fill_(lr)
        self.graph.replay()
        return self.loss.clone()


class GraphedXLStep:
    """One training step WITH Transformer-XL memory, captured once and replayed (attnbench.paper_run).

    The memory of the previous segment lives in static buffers, one [B, mem_len, D] per block: the step reads them,
    and, after the optimizer step, copies the new memory into them in place, so consecutive replays carry memory
    exactly like consecutive eager steps. Only the steady state is captured (memory full, full segment): the caller
    runs the steps whose memory is still filling eagerly and hands their memory over with `load_mems`.
    The step also adds the batch's correct top-1 predictions to `correct` and its loss to `loss_sum` (device
    tensors owned by the caller), so no replay syncs with the host."""

    def __init__(self, model: torch.nn.Module, opt: torch.optim.Optimizer, shape: tuple[int, int],
                 mem_shape: tuple[int, int, int, int], device: torch.device, grad_clip: float, amp: bool,
                 correct: torch.Tensor, loss_sum: torch.Tensor):
        self.model, self.opt, self.grad_clip, self.amp = model, opt, grad_clip, amp
        self.correct, self.loss_sum = correct, loss_sum
        self.x = torch.zeros(shape, dtype=torch.long, device=device)
        self.y = torch.zeros(shape, dtype=torch.long, device=device)
        n_layers, B, M, D = mem_shape
        self.mems = [torch.zeros(B, M, D, device=device) for _ in range(n_layers)]
        snap = _snapshot(model, opt)
        counters = (correct.clone(), loss_sum.clone())
        try:
            self.graph = _capture(self._body, opt, device)
        finally:
            opt.zero_grad(set_to_none=True)
            _restore(model, opt, snap)
            correct.copy_(counters[0])
            loss_sum.copy_(counters[1])

    def _body(self) -> None:
        with _amp(self.amp):
            logits, new = self.model(self.x, self.mems)
            loss = lm_loss(logits, self.y)
        loss.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.opt.step()
        self.correct.add_((logits.detach().argmax(-1) == self.y).sum())
        self.loss_sum.add_(loss.detach())
        for buf, m in zip(self.mems, new):
            buf.copy_(m)

    def load_mems(self, mems: list[torch.Tensor]) -> None:
        for buf, m in zip(self.mems, mems):
            buf.copy_(m)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x.copy_(x, non_blocking=True)
        self.y.copy_(y, non_blocking=True)
        self.graph.replay()


class GraphedXLForward:
    """A scoring step with memory (no gradient), captured like GraphedXLStep: reads and updates the static memory
    buffers and adds the batch's correct top-1 predictions to `correct`."""

    def __init__(self, model: torch.nn.Module, shape: tuple[int, int], mem_shape: tuple[int, int, int, int],
                 device: torch.device, amp: bool, correct: torch.Tensor):
        self.model, self.amp, self.correct = model, amp, correct
        self.x = torch.zeros(shape, dtype=torch.long, device=device)
        self.y = torch.zeros(shape, dtype=torch.long, device=device)
        n_layers, B, M, D = mem_shape
        self.mems = [torch.zeros(B, M, D, device=device) for _ in range(n_layers)]
        before = correct.clone()
        try:
            self.graph = _capture(self._body, None, device)
        finally:
            correct.copy_(before)

    @torch.no_grad()
    def _body(self) -> None:
        with _amp(self.amp):
            logits, new = self.model(self.x, self.mems)
        self.correct.add_((logits.argmax(-1) == self.y).sum())
        for buf, m in zip(self.mems, new):
            buf.copy_(m)

    load_mems = GraphedXLStep.load_mems
    step = GraphedXLStep.step


def _amp(amp: bool):
    """bf16 autocast without the weight-cast cache, which must be off under capture (PyTorch AMP docs, "CUDA
    Graphs")."""
    return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False) if amp else contextlib.nullcontext()


def _capture(body, opt: torch.optim.Optimizer | None, device: torch.device) -> torch.cuda.CUDAGraph:
    """Warm `body` up on a side stream, then capture it (PyTorch CUDA semantics, "Whole-network capture")."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(WARMUP_STEPS):
            if opt is not None:
                opt.zero_grad(set_to_none=True)
            body()
    torch.cuda.current_stream(device).wait_stream(side)
    if opt is not None:
        opt.zero_grad(set_to_none=True)  # .grad then comes from the graph's private pool
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        body()
    return graph
