"""Bad input through the real CLI (issue 14): one table, each case a line that once ended in a traceback, ran with
nothing, or was accepted without a word. Every case: one line on stderr, no traceback, the documented exit code
(errors.py: 1 a run failed, 2 bad input, 130 interrupted), and nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from attnbench import cli
from attnbench.attention import get
from attnbench.config import RESULTS_DIR, BenchSettings, ParamsSettings, ReportSettings, TrainJob
from attnbench.errors import classify

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
MEMORY = ["--attn", "mha", "--seq-len", "16", "--batch", "1", "--heads", "2", "--d-model", "16", "--no-baseline"]
SPEED = [*MEMORY, "--max-time", "0.05"]
TRAIN = ["--preset", "tiny", "--device", "cpu"]
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
settings_declared = pytest.mark.skipif(not hasattr(get("mha"), "settings"),
                                       reason="the attentions do not declare their settings yet")

# (command line, exit code, what the one line says). {file}: a regular file; {below}: a path below it;
# {ro}: a folder this process may not write (os.access says so); {bin}: a binary file; {text}: a file of text.
BAD = [
    # --attn that names nothing
    (["train", *TRAIN, "--attn", " , "], 2, "names no attention"),
    (["params", "--attn", ","], 2, "names no attention"),
    (["speed", "--attn", " , ", "--device", "cpu"], 2, "names no attention"),
    # folders that cannot hold the records
    (["speed", *SPEED, "--device", "cpu", "--results-dir", "{file}"], 2, "is a file, not a folder"),
    (["speed", *SPEED, "--device", "cpu", "--results-dir", "{below}"], 2, "cannot create the folder"),
    (["speed", *SPEED, "--device", "cpu", "--results-dir", "{ro}"], 2, "the folder is not writable"),
    (["memory", *MEMORY, "--device", "cpu", "--results-dir", "{ro}"], 2, "the folder is not writable"),
    (["train", *TRAIN, "--results-dir", "{file}"], 2, "is a file, not a folder"),
    (["train", *TRAIN, "--results-dir", "{below}"], 2, "cannot create the folder"),
    (["train", *TRAIN, "--results-dir", "{ro}"], 2, "the folder is not writable"),
    (["train", *TRAIN, "--checkpoints-dir", "{below}"], 2, "--checkpoints-dir"),
    (["params", "--save", "--results-dir", "{file}"], 2, "is a file, not a folder"),
    (["params", "--save", "--results-dir", "{below}"], 2, "cannot create the folder"),
    (["params", "--save", "--results-dir", "{ro}"], 2, "the folder is not writable"),
    (["report", "{text}", "--out", "{file}"], 2, "--out"),
    (["report", "{text}", "--out", "{below}"], 2, "--out"),
    (["report", "{text}", "--out", "{ro}"], 2, "the folder is not writable"),
    # files that are not records
    (["report", "{bin}", "--out", "{out}"], 2, "not UTF-8 text"),
    (["report", "{text}", "--out", "{out}"], 2, "no attnbench records"),
    # sizes that cannot be built
    (["params", "--d-model", "1000000000000", "--heads", "1"], 2, "too large to build"),
    # non-finite numbers and settings that contradict each other or would be ignored
    (["speed", *SPEED, "--device", "cpu", "--max-time", "nan"], 2, "--max-time must be a finite number"),
    (["train", *TRAIN, "--grad-clip", "nan"], 2, "--grad-clip must be a finite number"),
    (["train", *TRAIN, "--lr", "inf"], 2, "--lr must be a finite number"),
    (["train", *TRAIN, "--epochs", "nan"], 2, "--epochs must be a finite number"),
    (["train", *TRAIN, "--min-lr", "0.1", "--lr", "0.01"], 2, "min-lr (0.1) is above lr (0.01)"),
    (["train", *TRAIN, "--compile"], 2, "--compile needs a CUDA GPU"),
    (["train", *TRAIN, "--cuda-graph"], 2, "--cuda-graph needs a CUDA GPU"),
    (["speed", *SPEED, "--device", "cpu", "--compile"], 2, "--compile needs a CUDA GPU"),
    (["speed", *SPEED, "--device", "cpu", "--flush-l2"], 2, "--flush-l2 needs a CUDA GPU"),
    pytest.param(["train", *TRAIN, "--attn", "mha", "--pos", "learned"], 2, "--pos learned: not a setting of mha",
                 marks=settings_declared),
    pytest.param(["train", *TRAIN, "--attn", "mha,sha", "--kv-heads", "2"], 2, "--kv-heads 2: not a setting of",
                 marks=settings_declared),
    (["train", *TRAIN, "--seeds", "0"], 2, "seeds must be positive"),
    # no GPU: the same code in every command
    pytest.param(["speed", "--device", "cuda"], 2, "no CUDA GPU", marks=no_gpu),
    pytest.param(["speed", "--device", "cuda:0"], 2, "no CUDA GPU", marks=no_gpu),
    pytest.param(["memory", "--device", "cuda"], 2, "no CUDA GPU", marks=no_gpu),
    pytest.param(["train", "--device", "cuda"], 2, "no CUDA GPU", marks=no_gpu),
    pytest.param(["train", "--device", "cuda:1"], 2, "no CUDA GPU", marks=no_gpu),
    (["speed", "--device", "tpu"], 2, "unknown device 'tpu'"),
    (["train", "--device", "tpu"], 2, "unknown device 'tpu'"),
]

# Typer's own usage errors (a box of several lines): the same code, 2, in every command.
USAGE = [["params", "--heads", "1.5"], ["speed", "--heads", "1.5"], ["memory", "--heads", "x"],
         ["train", "--heads", "1.5"], ["report", "--plots", "maybe"], ["spead"], ["train", "--no-such-flag"]]


def _paths(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "file").write_text("x")
    (tmp_path / "bin.jsonl").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "text.jsonl").write_text("the cat sat on the mat\n")
    return {"file": str(tmp_path / "file"), "below": str(tmp_path / "file" / "sub"), "ro": str(tmp_path / "ro"),
            "bin": str(tmp_path / "bin.jsonl"), "text": str(tmp_path / "text.jsonl"), "out": str(tmp_path / "out")}


@pytest.mark.parametrize("args, code, line", BAD, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_input_is_one_line_and_a_documented_code(args, code, line, tmp_path, monkeypatch):
    paths = _paths(tmp_path)
    (tmp_path / "ro").mkdir()
    real = os.access  # running as root, chmod does not stop writes: the folder says it is read-only instead
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path / "ro" else real(p, mode))
    monkeypatch.chdir(tmp_path)  # anything written by mistake lands here, and is seen below
    before = sorted(tmp_path.rglob("*"))
    r = runner.invoke(cli.app, [a.format(**paths) for a in args])
    out = r.output.strip()
    assert r.exit_code == code, out
    assert line in out and "Traceback" not in out and len(out.splitlines()) == 1, out
    assert sorted(tmp_path.rglob("*")) == before  # nothing measured, nothing written


@pytest.mark.parametrize("args", USAGE, ids=" ".join)
def test_usage_mistakes_exit_2_in_every_command(args):
    r = runner.invoke(cli.app, args)
    assert r.exit_code == 2 and "Traceback" not in r.output


@pytest.mark.parametrize("args, code, line", [
    (["train", "--attn", " , "], 2, "names no attention"),
    (["params", "--d-model", "1000000000000", "--heads", "1"], 2, "too large to build"),
    (["spead"], 2, "No such command"),
])
def test_the_real_entry_point_agrees(args, code, line, tmp_path):
    """`python -m attnbench` (main()), not only the in-process runner: the same code and line."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    p = subprocess.run([sys.executable, "-m", "attnbench", *args], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path, env=env)
    assert p.returncode == code and line in p.stderr and "Traceback" not in p.stderr + p.stdout, p.stderr
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_is_130_in_every_command(monkeypatch):
    from attnbench import params

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(params, "param_table", interrupted)
    r = runner.invoke(cli.app, ["params"])
    assert r.exit_code == 130 and r.output.strip().startswith("error: interrupted")


@pytest.mark.parametrize("e, status", [
    (RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory: you tried to "
                  "allocate 1099511627776 bytes. Error code 12 (Cannot allocate memory)"), "oom"),
    (MemoryError(), "oom"),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "oom"),
    (NotImplementedError("no fused kernel"), "n/a"),
    (RuntimeError("No available kernel. Aborting execution."), "n/a"),
    (ValueError("shapes differ"), "error"),
])
def test_one_failure_classifier(e, status):
    assert classify(e)[0] == status


# ---------------------------------------------------------------------------------------------- where records go
def test_new_records_go_to_the_ignored_scratch_folder_by_default():
    assert BenchSettings.results_dir == ParamsSettings.results_dir == TrainJob.results_dir == RESULTS_DIR
    assert RESULTS_DIR == "results/scratch" and ReportSettings.out.startswith(RESULTS_DIR + "/")
    for path in (f"{RESULTS_DIR}/x.jsonl", f"{ReportSettings.out}/report.md"):
        ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", path], capture_output=True)
        assert ignored.returncode == 0, path  # ignored by git


def test_report_from_the_repository_root_leaves_the_committed_report_alone(tmp_path, monkeypatch):
    """`attnbench report` with no --out reads results/ and writes results/scratch/report; results/report (the
    committed one) changes only when named with --out."""
    r = runner.invoke(cli.app, ["params", "--attn", "mha", "--save", "--results-dir", str(tmp_path / "results")])
    assert r.exit_code == 0, r.output
    committed = tmp_path / "results" / "report" / "report.md"
    committed.parent.mkdir(parents=True)
    committed.write_text("committed")
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(cli.app, ["report", "--no-plots"])
    assert r.exit_code == 0, r.output
    assert committed.read_text() == "committed" and (tmp_path / ReportSettings.out / "report.md").is_file()
    r = runner.invoke(cli.app, ["report", "--no-plots", "--out", "results/report"])
    assert r.exit_code == 0 and committed.read_text() != "committed"


# ---------------------------------------------------------------------------------------------- structure
def test_no_import_cycle_between_the_sweeps_and_the_memory_worker():
    """bench.py imports measure/memory.py; the fresh-process memory worker builds its workload from workload.py,
    so memory.py imports nothing of bench.py (not even inside a function)."""
    import ast

    src = (ROOT / "attnbench" / "measure" / "memory.py").read_text()
    imported = {n.module for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ImportFrom)}
    assert "attnbench.bench" not in imported and "attnbench.workload" in imported


def test_every_config_dataclass_lives_in_config_py():
    import ast
    import dataclasses

    from attnbench import config

    outside = []
    for f in (ROOT / "attnbench").rglob("*.py"):
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.ClassDef) and (n.name.endswith("Config") or n.name.endswith("Settings")):
                outside += [] if f.name == "config.py" else [f"{f.name}:{n.name}"]
    assert outside == []
    assert all(dataclasses.is_dataclass(getattr(config, c)) for c in
               ("AttnConfig", "ModelConfig", "TrainConfig", "TrainJob", "BenchSettings", "ParamsSettings",
                "ReportSettings"))
