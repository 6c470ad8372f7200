"""What a training run learns from and is scored on (issue 13): the character corpus (`--task shakespeare`, the
default) or a synthetic task of tasks.py (`--task mqar`, `--task selective-copying`). train.py asks its source for
the vocabulary, the training batches, a scored pass over a split and the record's data fields, and knows nothing
else about either.

    fit_config(cfg, overrides)   the run's settings fitted to its task (a synthetic task's length is the context)
    make_source(cfg, corpus)     the source of a run
    source.vocab_size, .title, .chars, .config()
    source.batches(cfg, seed, rank, world)          .get(step) -> (x, y) [b/W, T]; .new_epoch(step); .steps_per_epoch
    source.evaluate(model, split, cfg, device, rank, world)   metrics of a full pass over "val" or "test"
    source.test_metrics(test, best, best_val, val_n)   the record's test_* metrics from that pass
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch

from attnbench import tasks
from attnbench.config import TrainConfig, flag
from attnbench.data import Batches, Corpus
from attnbench.errors import AttnbenchError

TEXT = "shakespeare"  # the character corpus: attnbench.data (tasks.TASKS names it too)


def fit_config(cfg: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """A synthetic task fixes the sequence length: the model's context is the task's seq_len (set it with
    --task-opt seq_len=N, not --ctx), there is no memory (examples are independent) and no length extrapolation
    (every example has the task's length). Shakespeare takes no task options. Errors are one line (exit 2)."""
    tasks.check_task(cfg.task)
    if cfg.task == TEXT:
        if cfg.task_opts:
            raise AttnbenchError(f"--task-opt {cfg.task_opts!r}: options are for a synthetic task "
                                 f"({', '.join(t for t in tasks.TASKS if t != TEXT)}), not {TEXT}")
        return cfg
    if cfg.flavour == "labml":
        raise AttnbenchError(f"--task {cfg.task}: the paper preset trains on Tiny Shakespeare only")
    task = make_task(cfg)
    for name, why in (("mem_len", "its examples are independent"), ("eval_ctx", "its examples have one length")):
        if getattr(cfg, name):
            raise AttnbenchError(f"--{flag(name)} is not available with --task {cfg.task} ({why})")
    if "ctx" in overrides and overrides["ctx"] != task.seq_len:
        raise AttnbenchError(f"--ctx {overrides['ctx']}: the context of --task {cfg.task} is its sequence length "
                             f"({task.seq_len}); set it with --task-opt seq_len=N")
    return replace(cfg, ctx=task.seq_len, eval_stride=task.seq_len)


def make_task(cfg: TrainConfig) -> tasks.SyntheticTask:
    return tasks.make_task(cfg.task, **tasks.parse_options(cfg.task, cfg.task_opts))


def make_source(cfg: TrainConfig, corpus: Corpus | None) -> "CorpusSource | TaskSource":
    if cfg.task == TEXT:
        if corpus is None:
            raise AttnbenchError("no corpus given for --task shakespeare")
        return CorpusSource(corpus)
    return TaskSource(make_task(cfg))


def as_source(data: "Corpus | CorpusSource | TaskSource | None", cfg: TrainConfig) -> "CorpusSource | TaskSource":
    """A run's source from what the caller holds: a source as it is, else the source of cfg's task (a corpus for
    Shakespeare)."""
    if isinstance(data, (CorpusSource, TaskSource)):
        return data
    return make_source(cfg, data)


class CorpusSource:
    """The character corpus (data.py): random windows (or Transformer-XL streams) of its training 90 %, scored by
    a full sliding-window pass over validation or test (evaluation.evaluate)."""

    def __init__(self, corpus: Corpus):
        self.corpus = corpus
        self.vocab_size, self.chars = corpus.vocab_size, corpus.chars
        self.title = f"Tiny Shakespeare, held-out test split, full pass ({corpus.source})"

    def config(self) -> dict[str, Any]:
        c = self.corpus
        return {"task": {"task": TEXT}, "data": c.source, "data_sha256": c.sha256, "vocab": c.vocab_size,
                "split_tokens": [len(c.train), len(c.val), len(c.test)]}

    def batches(self, c: TrainConfig, seed: int, rank: int, world: int) -> Batches:
        return Batches(self.corpus.train, c.batch, c.ctx, c.mem_len, seed, rank, world)

    def evaluate(self, model, split: str, c: TrainConfig, device, rank: int = 0, world: int = 1) -> dict[str, Any]:
        from attnbench.evaluation import evaluate

        return evaluate(model, getattr(self.corpus, split), c, device, rank, world)

    def test_metrics(self, test: dict[str, Any], best: dict[str, Any], best_val: float, val_n: int) -> dict[str, Any]:
        return {"val_bpc_best": best_val / math.log(2), "test_loss": test["loss"], "test_bpc": test["bpc"],
                "test_ppl": test["ppl"], "test_acc": test["acc"], "test_n": test["n"],
                # the last 10 % of the text (validation then test, best weights): the held-out split of nanoGPT's
                # shakespeare_char, which the 0.579 reference model was most likely scored on
                "heldout_acc": (best["val_acc"] * val_n + test["acc"] * test["n"]) / (val_n + test["n"])}


class TaskSource:
    """A synthetic task (tasks.py): batches of its training stream, scored on its validation and test examples
    at the scored positions only (evaluation.evaluate_task). The task's own seed (--task-opt seed=N, default 0)
    fixes its data, so that every model seed of a comparison sees the same examples and the same test set."""

    def __init__(self, task: tasks.SyntheticTask):
        self.task = task
        self.vocab_size, self.chars = task.vocab_size, None
        self.title = f"{task.name} ({task.paper}), test set of {task.options.test_examples} examples, scored positions"

    def config(self) -> dict[str, Any]:
        return {"task": self.task.config(), "vocab": self.vocab_size}

    def batches(self, c: TrainConfig, seed: int, rank: int, world: int) -> "TaskBatches":
        return TaskBatches(self.task, c.batch, rank, world)

    def evaluate(self, model, split: str, c: TrainConfig, device, rank: int = 0, world: int = 1) -> dict[str, Any]:
        from attnbench.evaluation import evaluate_task

        n = self.task.options.test_examples  # validation: as many examples as the test set
        return evaluate_task(model, self.task.eval_batches(split, n, c.eval_batch), c, device, rank, world)

    def test_metrics(self, test: dict[str, Any], best: dict[str, Any], best_val: float, val_n: int) -> dict[str, Any]:
        return {"test_loss": test["loss"], "test_acc": test["acc"], "test_n": test["n"], "test_exact": test["exact"],
                "test_examples": test["examples"]}


class TaskBatches:
    """Training batches of a synthetic task: step s is batch s of the task's training stream (tasks.py: a pure
    function of the task's options and s); rank r of W takes rows [r·b/W, (r+1)·b/W) of it, as data.Batches does."""

    def __init__(self, task: tasks.SyntheticTask, batch: int, rank: int = 0, world: int = 1):
        if batch % world:
            raise AttnbenchError(f"batch {batch} (the global batch) is not divisible by the {world} processes")
        self.task, self.batch = task, batch
        self.rows = slice(rank * batch // world, (rank + 1) * batch // world)

    @property
    def steps_per_epoch(self) -> int:
        n = self.task.options.train_examples
        if n == 0:
            raise AttnbenchError(f"--epochs: task {self.task.name} streams fresh examples (train_examples=0); give "
                                 f"--steps, or --task-opt train_examples=N")
        return max(1, n // self.batch)

    def new_epoch(self, step: int) -> bool:
        return False  # no memory to restart

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, _ = self.task.batch("train", step, self.batch)
        return x[self.rows], y[self.rows]
