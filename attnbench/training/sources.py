"""What a training run learns from and is scored on (issue 13): the character corpus (`--task shakespeare`, the
default), the corpus as the RCMHA authors read it (`--preset paper`), or a synthetic task of tasks.py (`--task mqar`,
`--task selective-copying`). The engine asks its source for the vocabulary, the loaders, the schedule, a scored
pass over a split and the record's data fields, and knows nothing else about any of them.

    fit_config(cfg, overrides)   the run's settings fitted to its task (a synthetic task's length is the context)
    make_source(cfg, corpus)     the source of a run
    source.vocab_size, .title, .chars, .config()
    source.loaders(cfg, seeds, rank, world, device)   {"train": loader[, "score": loader]}; a loader's get(b) gives
                                 (x, y) of [B, T] (every member reads the same batch) or [n, B, T] (one per seed),
                                 restarts(b) says when Transformer-XL memory starts empty
    source.schedule(cfg, loaders)                      the schedule.Schedule the engine follows
    source.evaluate(members, split, cfg, device, rank, world)   one metrics dict per member, from a full pass over
                                 "val" or "test"
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
from attnbench.training.schedule import Schedule, labml_epochs, labml_schedule, step_schedule

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


def make_source(cfg: TrainConfig, corpus: Corpus | None) -> "CorpusSource | LabmlCorpusSource | TaskSource":
    if cfg.task == TEXT:
        if corpus is None:
            raise AttnbenchError("no corpus given for --task shakespeare")
        return LabmlCorpusSource(corpus) if cfg.flavour == "labml" else CorpusSource(corpus)
    return TaskSource(make_task(cfg))


def as_source(data, cfg: TrainConfig):
    """A run's source from what the caller holds: a source as it is, else the source of cfg's task (a corpus for
    Shakespeare)."""
    if isinstance(data, (CorpusSource, TaskSource)):
        return data
    return make_source(cfg, data)


def total_steps(c: TrainConfig, loader) -> int:
    if c.epochs > 0:
        return max(1, round(c.epochs * loader.steps_per_epoch))
    return c.steps


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

    def loaders(self, c: TrainConfig, seeds: list[int], rank: int = 0, world: int = 1,
                device: torch.device | None = None) -> dict[str, Any]:
        """Random windows depend on the seed: each member reads its own seed's batches, exactly those of its solo
        run; the memory streams do not."""
        each = [Batches(self.corpus.train, c.batch, c.ctx, c.mem_len, s, rank, world) for s in seeds]
        return {"train": PerMember(each) if each[0].seeded and len(each) > 1 else each[0]}

    def schedule(self, c: TrainConfig, loaders: dict[str, Any]) -> Schedule:
        return step_schedule(total_steps(c, loaders["train"]), c.eval_every)

    def evaluate(self, members, split: str, c: TrainConfig, device, rank: int = 0, world: int = 1) -> list[dict]:
        from attnbench.training.evaluation import evaluate

        return evaluate(members, getattr(self.corpus, split), c, device, rank, world)

    def test_metrics(self, test: dict[str, Any], best: dict[str, Any], best_val: float, val_n: int) -> dict[str, Any]:
        return {"val_bpc_best": best_val / math.log(2), "test_loss": test["loss"], "test_bpc": test["bpc"],
                "test_ppl": test["ppl"], "test_acc": test["acc"], "test_n": test["n"],
                # the last 10 % of the text (validation then test, best weights): the held-out split of nanoGPT's
                # shakespeare_char, which the 0.579 reference model was most likely scored on
                "heldout_acc": (best["val_acc"] * val_n + test["acc"] * test["n"]) / (val_n + test["n"])}


class LabmlCorpusSource(CorpusSource):
    """The corpus as the RCMHA authors' labml code reads it (docs/paper.md): the first 90 % for training and the
    last 10 % for validation (labml_helpers' TextFileDataset: split = int(len · 0.9), which is our validation and test
    texts joined), each read by labml's SequentialDataLoader (Streams), in labml's rounds (schedule.labml_schedule).
    Its test pass is one full pass over that last 10 % at the final weights: nothing selected on it."""

    def __init__(self, corpus: Corpus):
        super().__init__(corpus)
        self.train, self.valid = corpus.train, torch.cat([corpus.val, corpus.test])
        self.title = f"Tiny Shakespeare as the RCMHA authors read it, last 10 % at the final weights ({corpus.source})"

    def config(self) -> dict[str, Any]:
        return {**super().config(), "preset": "paper", "split_tokens": [len(self.train), len(self.valid)]}

    def loaders(self, c: TrainConfig, seeds: list[int], rank: int = 0, world: int = 1,
                device: torch.device | None = None) -> dict[str, Any]:
        if world > 1:
            raise AttnbenchError("--preset paper runs in one process (its seeds train together as one stacked "
                                 "model: --ensemble)")
        return {"train": Streams(self.train, c.batch, c.ctx, device), "score": Streams(self.valid, c.batch, c.ctx,
                                                                                        device)}

    def schedule(self, c: TrainConfig, loaders: dict[str, Any]) -> Schedule:
        n_train, n_valid = len(loaders["train"]), len(loaders["score"])
        epochs, max_steps = labml_epochs(c.epochs, c.steps, n_train)
        return labml_schedule(n_train, n_valid, epochs, max_train_steps=max_steps)

    def evaluate(self, members, split: str, c: TrainConfig, device, rank: int = 0, world: int = 1) -> list[dict]:
        from attnbench.training.evaluation import evaluate

        return evaluate(members, self.valid, c, device, rank, world)  # the last 10 %, whatever the split's name

    def test_metrics(self, test: dict[str, Any], best: dict[str, Any] | None, best_val, val_n) -> dict[str, Any]:
        return {k: test[k2] for k, k2 in (("test_loss", "loss"), ("test_bpc", "bpc"), ("test_ppl", "ppl"),
                                          ("test_acc", "acc"), ("test_n", "n"))}


class Streams:
    """labml_helpers' SequentialDataLoader over `data`: the text cut into `batch` contiguous streams of `per` tokens
    (the remainder dropped); batch b reads inputs [b·ctx, b·ctx + s) and targets one further, s = min(ctx,
    per − 1 − b·ctx); the loader has per // ctx batches, and memory starts empty with each epoch (labml's
    SimpleStateModule.on_epoch_start)."""

    seeded = False

    def __init__(self, data: torch.Tensor, batch: int, ctx: int, device: torch.device | None = None):
        per = len(data) // batch
        if per // ctx < 1 or per < 2:
            raise AttnbenchError(f"text of {len(data)} tokens is too short for {batch} streams of segment {ctx}")
        self.grid = data[: per * batch].view(batch, per).to(device or "cpu")  # [batch, per]
        self.per, self.ctx = per, ctx

    def __len__(self) -> int:
        return self.per // self.ctx

    @property
    def steps_per_epoch(self) -> int:
        return len(self)

    def restarts(self, b: int) -> bool:
        return b == 0

    def get(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        a = b * self.ctx
        s = min(self.ctx, self.per - 1 - a)
        return self.grid[:, a:a + s], self.grid[:, a + 1:a + 1 + s]


class PerMember:
    """One loader per member (its seed's): get(b) stacks the members' batches, [n, B, T]."""

    seeded = True

    def __init__(self, loaders: list):
        self.loaders = loaders
        self.steps_per_epoch = loaders[0].steps_per_epoch

    def restarts(self, b: int) -> bool:
        return self.loaders[0].restarts(b)

    def get(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = zip(*(ld.get(b) for ld in self.loaders))
        return torch.stack(xs), torch.stack(ys)


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

    @property
    def scored_per_example(self) -> int | None:
        return self.task.scored_per_example

    def loaders(self, c: TrainConfig, seeds: list[int], rank: int = 0, world: int = 1,
                device: torch.device | None = None) -> dict[str, Any]:
        return {"train": TaskBatches(self.task, c.batch, rank, world)}

    def schedule(self, c: TrainConfig, loaders: dict[str, Any]) -> Schedule:
        return step_schedule(total_steps(c, loaders["train"]), c.eval_every)

    def evaluate(self, members, split: str, c: TrainConfig, device, rank: int = 0, world: int = 1) -> list[dict]:
        from attnbench.training.evaluation import evaluate_task

        n = self.task.options.test_examples  # validation: as many examples as the test set
        return evaluate_task(members, self.task.eval_batches(split, n, c.eval_batch), c, device, rank, world)

    def test_metrics(self, test: dict[str, Any], best: dict[str, Any], best_val: float, val_n: int) -> dict[str, Any]:
        return {"test_loss": test["loss"], "test_acc": test["acc"], "test_n": test["n"], "test_exact": test["exact"],
                "test_examples": test["examples"]}


class TaskBatches:
    """Training batches of a synthetic task: step s is batch s of the task's training stream (tasks.py: a pure
    function of the task's options and s); rank r of W takes rows [r·b/W, (r+1)·b/W) of it, as data.Batches does.
    Every model seed reads the same batches (the task's own seed fixes them)."""

    seeded = False

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

    def restarts(self, step: int) -> bool:
        return False  # no memory to restart

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, _ = self.task.batch("train", step, self.batch)
        return x[self.rows], y[self.rows]
