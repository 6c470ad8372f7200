"""What the one training loop (engine.py) does, in order: a schedule is a list of chunks, each a run of batches of
one kind, and a position in it is where a run stands (what a checkpoint saves and --resume continues from).

    Chunk("train", a, b)      optimiser steps on training batches a .. b-1 of the loader's epoch
    Chunk("score", a, b)      forward passes on validation batches a .. b-1 that only count correct predictions
                              (the RCMHA authors' running accuracy, paper_acc)
    Chunk("validate")         a full validation pass: the curve's point and model selection (best weights)

Two schedules (style.md, habit 13: one engine, many schedules):
    step_schedule     every preset but paper: `total` steps, a validation pass every eval_every steps and at the end;
                      a training batch's index is the step (data.Batches is a function of the step)
    labml_schedule    --preset paper: labml's rounds of training then validation batches (paper_run of old)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from attnbench.errors import AttnbenchError

INNER_ITERATIONS = 25  # the RCMHA authors' main.py: labml's inner_iterations


@dataclass(frozen=True)
class Chunk:
    kind: str  # "train" | "score" | "validate"
    start: int = 0  # batches [start, stop) of the loader's epoch
    stop: int = 0
    epoch: int = 0

    @property
    def batches(self) -> int:
        return self.stop - self.start


@dataclass
class Position:
    """Where a group stands: the next batch is batch `batch` of chunk `chunk` (None: the chunk's first)."""

    chunk: int = 0
    batch: int | None = None
    step: int = 0  # optimiser steps done
    m_len: dict[str, int] = field(default_factory=lambda: {"train": 0, "score": 0})  # memory held, tokens


@dataclass
class Schedule:
    chunks: list[Chunk]
    select_best: bool  # the test pass scores the best-validation weights (else the final weights)
    count_correct: bool  # train and score steps count correct predictions (paper_acc)
    info: dict = field(default_factory=dict)  # for the records
    # --stop-after with Transformer-XL memory: stop only where every stream starts over (the checkpoint then holds
    # no memory), else before any training chunk (the memory saved with it); engine._stop_point
    stops_where_memory_restarts: bool = False

    @property
    def total(self) -> int:
        """Optimiser steps of the whole schedule."""
        return sum(ch.batches for ch in self.chunks if ch.kind == "train")


def step_schedule(total: int, eval_every: int) -> Schedule:
    """`total` steps; a validation pass after every eval_every-th step and after the last one."""
    chunks: list[Chunk] = []
    for a in range(0, total, eval_every):
        b = min(total, a + eval_every)
        chunks += [Chunk("train", a, b), Chunk("validate", b, b)]
    return Schedule(chunks, select_best=True, count_correct=False)


def labml_schedule(n_train: int, n_valid: int, epochs: int, inner: int = INNER_ITERATIONS,
                   max_train_steps: int | None = None) -> Schedule:
    """labml_helpers' TrainValidConfigs with `inner` iterations (docs/paper.md): round r of an epoch trains on
    batches [r·n // inner, (r+1)·n // inner) of the training loader, then scores the same share of the validation
    loader (labml_helpers' BatchIndex). `max_train_steps` cuts the schedule after that many training batches (the
    round's validation chunk still runs). The test pass scores the final weights: nothing selects on a split."""
    out: list[Chunk] = []
    done = 0
    for e in range(epochs):
        for r in range(inner):
            a, b = r * n_train // inner, (r + 1) * n_train // inner
            if max_train_steps is not None:
                b = min(b, a + max_train_steps - done)
            if b > a:
                out.append(Chunk("train", a, b, e))
                done += b - a
            va, vb = r * n_valid // inner, (r + 1) * n_valid // inner
            if vb > va:
                out.append(Chunk("score", va, vb, e))
            if max_train_steps is not None and done >= max_train_steps:
                return _labml(out, epochs, inner, n_train, n_valid)
    return _labml(out, epochs, inner, n_train, n_valid)


def _labml(chunks: list[Chunk], epochs: int, inner: int, n_train: int, n_valid: int) -> Schedule:
    # every epoch starts both streams over: ten memory-free stop points in a paper run, where a stacked rcmha
    # group's checkpoint is 52 MB instead of 69 (docs/usage.md, --stop-after); a run of one epoch (--steps under
    # an epoch's) has none after its start, so any training chunk's start is a stop point there
    return Schedule(chunks, select_best=False, count_correct=True,
                    info={"epochs": epochs, "inner_iterations": inner, "train_batches": n_train,
                          "valid_batches": n_valid}, stops_where_memory_restarts=epochs > 1)


def labml_epochs(epochs: float, steps: int, n_train: int) -> tuple[int, int | None]:
    """(epochs to lay out, training steps to stop after or None): --epochs as the authors count them, or --steps."""
    if epochs > 0:
        if epochs != int(epochs):
            raise AttnbenchError(f"the paper schedule takes whole epochs, got {epochs}")
        return int(epochs), None
    return max(1, math.ceil(steps / n_train)), steps
