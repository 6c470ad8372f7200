"""What one `attnbench train` runs, written down before it starts (plan.json in the run's checkpoint folder), so that
--resume continues every (attention, seed) of it with the same settings and files.

    new_plan(job, overrides)        checks everything a run needs before anything is trained
    resume_plan(path, typed)        the plan of an interrupted run; options that differ from it are refused
    Plan.start(corpus)              (rank 0) the record file and the run folder, created; the plan saved
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from attnbench.config import ATTN_SETTINGS, TRAIN_FIELDS, TrainConfig, TrainJob, flag, make_config
from attnbench.errors import AttnbenchError

PLAN_FILE = "plan.json"
SCHEMA = "attnbench.trainplan/1"
# Options that --resume honours when they differ from the plan: where the corpus is read, where new records go,
# how the table is shown, this session's CPU threads, size guard and time budget.
RESUME_MAY_CHANGE = ("data", "results_dir", "fmt", "resume", "threads", "force", "stop_after")


@dataclass
class RunSpec:
    attn: str
    seed: int
    cfg: TrainConfig  # resolved


@dataclass
class Plan:
    job: TrainJob
    overrides: dict[str, Any]  # the TrainConfig fields given on the command line
    cfg: TrainConfig  # the preset with the overrides, resolved
    attns: list[str]
    run_dir: str = ""  # <checkpoints_dir>/<stamp>: checkpoints and plan.json
    records: list[str] = field(default_factory=list)  # record files, one per session; the last is written
    data_sha256: str = ""
    causality: dict[str, Any] = field(default_factory=dict)  # attention -> causality.Verdict of this session
    commands: list[str] = field(default_factory=list)  # the command of every session: the run's own, then resumes

    def specs(self) -> list[RunSpec]:
        """(attention, seed) pairs; seeds cfg.seed … cfg.seed + seeds - 1, each shared by every attention."""
        return [RunSpec(a, self.cfg.seed + k, self.cfg) for k in range(self.job.seeds) for a in self.attns]

    def groups(self, size: int, done: set[tuple[str, int]]) -> list[tuple[str, list[int]]]:
        """The groups still to train, (attention, seeds), in order: a group with a checkpoint in the run's folder
        continues as it was (a group split when out of memory continues as its parts); the other seeds not done go
        in groups of `size` consecutive seeds (size 1: seeds outer, attentions inner, as the runs of a plan were
        always ordered)."""
        from attnbench.attention import file_safe
        from attnbench.training.checkpoints import seeds_of

        seeds = [self.cfg.seed + k for k in range(self.job.seeds)]
        chunks = [seeds[i:i + size] for i in range(0, len(seeds), size)]
        out = []
        for chunk in chunks:
            for a in self.attns:
                todo = [s for s in chunk if (a, s) not in done]
                saved = sorted((g for p in Path(self.run_dir).glob("*.pt") if (g := seeds_of(p, file_safe(a)))
                                and set(g) & set(todo)), key=lambda g: g[0]) if self.run_dir else []
                for g in saved:
                    out.append((a, g))
                    todo = [s for s in todo if s not in g]
                out += [(a, todo[i:i + size]) for i in range(0, len(todo), size)]
        return out

    def checkpoint(self, attn: str, seeds: list[int]) -> Path:
        from attnbench.attention import file_safe
        from attnbench.training.checkpoints import name

        return Path(self.run_dir) / name(file_safe(attn), seeds)

    @property
    def record_path(self) -> Path:
        return Path(self.records[-1])

    def resume_command(self, world: int = 1) -> str:
        """The command that continues this plan, with the original --data, --results-dir, --checkpoints-dir."""
        launcher = "attnbench" if world == 1 else f"torchrun --nproc-per-node {world} -m attnbench"
        parts = [launcher, "train", "--resume", shlex.quote(self.run_dir)]
        for opt, value, default in (("--data", self.job.data, TrainJob.data),
                                    ("--results-dir", self.job.results_dir, TrainJob.results_dir),
                                    ("--checkpoints-dir", self.job.checkpoints_dir, TrainJob.checkpoints_dir)):
            if value != default:
                parts += [opt, shlex.quote(str(value))]
        return " ".join(parts)

    def start(self, data_sha256: str, command: str = "") -> None:
        """Rank 0, before the first step: a new record file (unless resuming into the same folder and its record is
        still there: a run carried to another machine finds neither), the run folder, and plan.json. Everything was
        checked writable by new_plan/resume_plan."""
        from attnbench import results

        last = Path(self.records[-1]) if self.records else None
        if last is None or not last.is_file() or last.parent.resolve() != Path(self.job.results_dir).resolve():
            self.records.append(str(results.new_run_path("train", self.job.results_dir)))
        if not self.run_dir:
            self.run_dir = str(Path(self.job.checkpoints_dir) / Path(self.records[-1]).stem)
        self.data_sha256 = self.data_sha256 or data_sha256
        if command:
            self.commands.append(command)
        self.save()

    def save(self) -> None:
        d = Path(self.run_dir)
        d.mkdir(parents=True, exist_ok=True)
        body = {"schema": SCHEMA, "job": asdict(self.job), "overrides": self.overrides, "cfg": asdict(self.cfg),
                "attns": self.attns, "run_dir": self.run_dir, "records": self.records,
                "data_sha256": self.data_sha256, "commands": self.commands}
        tmp = d / (PLAN_FILE + ".part")
        tmp.write_text(json.dumps(body, indent=1), encoding="utf-8")
        os.replace(tmp, d / PLAN_FILE)


# ---------------------------------------------------------------------------------------------- a new plan
def new_plan(job: TrainJob, overrides: dict[str, Any]) -> Plan:
    """Every setting checked, the folders checked writable, nothing written yet: one line (exit 2) for anything
    that would make the run fail later or ignore a setting."""
    from attnbench.attention import parse_names
    from attnbench.training.sources import TEXT, fit_config

    overrides = {k: v for k, v in overrides.items() if v is not None}
    cfg = fit_config(make_config(job.preset, **overrides).resolved(), overrides)
    attns = parse_names(job.attn)
    if job.seeds <= 0:
        raise AttnbenchError(f"seeds must be positive, got {job.seeds}")
    if job.sample < 0:
        raise AttnbenchError(f"sample must be >= 0, got {job.sample}")
    if job.sample and cfg.task != TEXT:
        raise AttnbenchError(f"--sample generates text: not available with --task {cfg.task}")
    if cfg.flavour == "labml":
        for a in attns:
            check_flavour(a, cfg)
        if job.sample:
            raise AttnbenchError("--sample is not available with --preset paper (the authors' run samples nothing)")
    ensemble_size(job.ensemble, job.seeds)  # a bad value is one line now, not after the first run
    _refuse_unread_settings(attns, overrides)
    _refuse_gpu_only_on_cpu(cfg, overrides)
    _check_folders(job)
    return Plan(job=job, overrides=overrides, cfg=cfg, attns=attns)


def ensemble_size(value: str, seeds: int) -> int | None:
    """--ensemble as a group size: "off" 1, N, or None for "auto" (decided where the run happens: engine.py)."""
    v = str(value).strip().lower()
    if v == "auto":
        return None
    if v == "off":
        return 1
    try:
        n = int(v)
    except ValueError:
        n = 0
    if n < 1:
        raise AttnbenchError(f"--ensemble {value}: auto, off, or a positive number of seeds trained as one model")
    return min(n, seeds)


def _refuse_unread_settings(attns: list[str], overrides: dict[str, Any]) -> None:
    """An attention setting given on the command line must be read by at least one attention of the run."""
    from attnbench.attention import get, unused_settings

    for field_name, attn_field in ATTN_SETTINGS.items():
        if field_name not in overrides:
            continue
        given = {attn_field: overrides[field_name]}
        if all(unused_settings(get(a), given) for a in attns):
            raise AttnbenchError(f"--{flag(field_name)} {overrides[field_name]}: not a setting of "
                                 f"{', '.join(attns)} (it would be ignored)")


def _refuse_gpu_only_on_cpu(cfg: TrainConfig, overrides: dict[str, Any]) -> None:
    from attnbench.device import resolve_device

    device = resolve_device(cfg.device)
    if device.type == "cuda":
        return
    for name in ("compile", "cuda_graph"):
        if overrides.get(name):
            raise AttnbenchError(f"--{flag(name)} needs a CUDA GPU (device is {device.type})")


def _check_folders(job: TrainJob) -> None:
    from attnbench import results

    results.check_writable_dir(job.results_dir, "--results-dir")
    results.check_writable_dir(job.checkpoints_dir, "--checkpoints-dir")


# ---------------------------------------------------------------------------------------------- resuming
def load_plan(path: str | os.PathLike) -> Plan:
    """The plan of a run folder, or of the folder a checkpoint (.pt) sits in."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    f = folder / PLAN_FILE
    if not p.exists():
        raise AttnbenchError(f"--resume {p}: no such file or folder")
    if not f.is_file():
        raise AttnbenchError(f"--resume {p}: no {PLAN_FILE} there; give the run's checkpoint folder, as printed when "
                             f"it stopped")
    try:
        body = json.loads(f.read_text(encoding="utf-8"))
        assert body.get("schema") == SCHEMA
        plan = Plan(job=TrainJob(**body["job"]), overrides=body["overrides"], cfg=TrainConfig(**body["cfg"]),
                    attns=body["attns"], run_dir=body["run_dir"], records=body["records"],
                    data_sha256=body["data_sha256"], commands=body.get("commands", []))  # no commands: older
    except (ValueError, KeyError, TypeError, AssertionError):
        raise AttnbenchError(f"{f} is not a plan of this attnbench version") from None
    plan.run_dir = str(folder)  # the folder may have moved since
    return plan


def resume_plan(path: str | os.PathLike, typed: dict[str, Any]) -> Plan:
    """The plan at `path` with the options that resume honours (data, results_dir) taken from `typed` (the options
    given on the command line); any other option given with a value other than the plan's is refused."""
    plan = load_plan(path)
    _refuse_changes(plan, typed)
    if "data" in typed:
        plan.job.data = typed["data"]
    if "results_dir" in typed:
        plan.job.results_dir = typed["results_dir"]
    _check_folders(plan.job)
    return plan


def _refuse_changes(plan: Plan, typed: dict[str, Any]) -> None:
    from attnbench.attention import parse_names

    planned_cfg = make_config(plan.job.preset, **plan.overrides)
    job_fields = {f.name for f in fields(TrainJob)}
    for name, value in typed.items():
        if name in RESUME_MAY_CHANGE:
            continue
        if name == "attn":
            same = parse_names(value) == plan.attns
            planned = ",".join(plan.attns)
        elif name == "checkpoints_dir":
            same = Path(value).resolve() == Path(plan.run_dir).resolve().parent
            planned = str(Path(plan.run_dir).parent)
        elif name in job_fields:
            planned = getattr(plan.job, name)
            same = value == planned
        elif name in TRAIN_FIELDS:
            planned = getattr(planned_cfg, name)
            same = value == planned
        else:
            same, planned = False, "not an option of a resumed run"
        if not same:
            raise AttnbenchError(f"--{flag(name)} {value}: --resume continues the run as planned ({planned}); "
                                 f"start a new run to change it")


def check_flavour(attn: str, c) -> None:
    """The paper preset builds the authors' layer, which only an attention reading `flavour` (and, for relative
    ones, the learned tables) has: any other is refused in one line rather than trained as something else."""
    from attnbench.attention import get, unused_settings

    ignored = unused_settings(get(attn), {"flavour": c.flavour})
    if ignored:
        raise AttnbenchError(f"--preset paper builds the RCMHA authors' labml layer; attention {attn!r} has no such "
                             f"flavour (it reads no {', '.join(ignored)} setting)")
