"""Measurement records: one JSON object per line, one file per run, never overwritten.

Schema (``SCHEMA``), shared by every command that measures something:

    schema    "attnbench.record/1"
    kind      "speed" | "memory" | "train" | "params"
    command   the command line that produced the record
    time_utc  ISO 8601, UTC
    attn      registry name (or None for non-attention rows such as a bare SDPA baseline)
    config    every setting needed to rerun: attention settings, shape, dtype, mode, impl, ...
    status    "ok" | "oom" | "n/a" | "error"
    reason    why, when status is not "ok"
    metrics   name -> number (units in the name: *_ms, *_mib, *_s, ...)
    env       environment() of the process that measured
    extra keys are allowed (e.g. "samples", "curves")
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from attnbench import __version__
from attnbench.config import RESULTS_DIR
from attnbench.errors import AttnbenchError

SCHEMA = "attnbench.record/1"
KINDS = ("speed", "memory", "train", "params")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def git_commit() -> str | None:
    """The commit of the attnbench checkout, with '+dirty' when it has uncommitted changes; ATTNBENCH_GIT_COMMIT
    when set (a copy of the tree without its history, as on a remote GPU machine); None when unknown."""
    if os.environ.get("ATTNBENCH_GIT_COMMIT"):
        return os.environ["ATTNBENCH_GIT_COMMIT"]
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", "--quiet", "HEAD^{commit}"],
                             capture_output=True, text=True, timeout=5)
        sha = out.stdout.strip()
        if out.returncode != 0 or len(sha) != 40:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _nvml_driver() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            v = pynvml.nvmlSystemGetDriverVersion()
            return v.decode() if isinstance(v, bytes) else v
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVIDIA driver, no library: not an error, just unknown
        return None


def environment(device: str | None = None) -> dict[str, Any]:
    """What a measurement depends on: device, driver, CUDA, torch, attnbench, commit, math settings, threads."""
    import torch

    env: dict[str, Any] = {
        "attnbench": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "time_utc": utc_now(),
    }
    use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if use_cuda:
        idx = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        env.update(
            device="cuda",
            device_name=props.name,
            device_memory_mib=props.total_memory / 2**20,
            sm_count=props.multi_processor_count,
            capability=f"{props.major}.{props.minor}",
            driver=_nvml_driver(),
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
            sdpa_flash=torch.backends.cuda.flash_sdp_enabled(),
            sdpa_mem_efficient=torch.backends.cuda.mem_efficient_sdp_enabled(),
            sdpa_math=torch.backends.cuda.math_sdp_enabled(),
            sdpa_cudnn=getattr(torch.backends.cuda, "cudnn_sdp_enabled", lambda: None)(),
        )
    else:
        env.update(device="cpu", device_name=platform.processor() or platform.machine(), driver=None,
                   cpu_count=os.cpu_count())
    return env


def make_record(kind: str, attn: str | None, command: str, config: dict[str, Any], metrics: dict[str, Any],
                env: dict[str, Any], status: str = "ok", reason: str | None = None, **extra: Any) -> dict[str, Any]:
    if kind not in KINDS:
        raise ValueError(f"unknown record kind {kind!r}")
    rec = {"schema": SCHEMA, "kind": kind, "command": command, "time_utc": utc_now(), "attn": attn,
           "config": config, "status": status, "reason": reason, "metrics": metrics, "env": env}
    rec.update(extra)
    return rec


def command_line() -> str:
    """The command as the user typed it (best effort)."""
    prog = Path(sys.argv[0]).name if sys.argv else "attnbench"
    if prog in ("__main__.py", "-m", "-c", ""):
        prog = "python -m attnbench"
    return " ".join([prog, *sys.argv[1:]])


def check_writable_dir(folder: str | os.PathLike, option: str) -> Path:
    """`folder` if this process can write into it, or create it (its nearest existing parent is a writable folder);
    else one line naming `option` (exit 2). Checked before anything is measured, so that no run is lost to a folder
    it cannot write; nothing is created here."""
    d = Path(folder)
    probe = d
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe == d and not d.is_dir():
        raise AttnbenchError(f"{option} {d}: is a file, not a folder")
    if not probe.is_dir():
        raise AttnbenchError(f"{option} {d}: cannot create the folder ({probe} is a file)")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "the folder is not writable" if probe == d else f"cannot create the folder ({probe} is not writable)"
        raise AttnbenchError(f"{option} {d}: {what}")
    return d


def new_run_path(kind: str, results_dir: str | os.PathLike = RESULTS_DIR) -> Path:
    """A fresh JSON Lines file for one run: <results_dir>/<kind>-<UTC stamp>-<pid>.jsonl, created empty now (so
    that a folder that cannot be written is found before anything is measured); never an existing file."""
    d = check_writable_dir(results_dir, "--results-dir")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AttnbenchError(f"--results-dir {d}: cannot create the folder ({e.strerror})") from None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    base = f"{kind}-{stamp}-{os.getpid()}"
    path, n = d / f"{base}.jsonl", 1
    while True:
        try:
            with open(path, "x", encoding="utf-8"):
                return path
        except FileExistsError:
            path, n = d / f"{base}-{n}.jsonl", n + 1
        except OSError as e:
            raise AttnbenchError(f"--results-dir {d}: cannot create a record file ({e.strerror})") from None


def append(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one record and push it to disk at once, so that a crash or Ctrl-C loses nothing measured."""
    line = json.dumps(record, sort_keys=True, default=str)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def fallback_dir() -> Path:
    """Where a record goes when its own folder cannot be written any more: the system's temporary folder."""
    import tempfile

    return Path(tempfile.gettempdir()) / "attnbench-records"


def append_or_fallback(path: str | os.PathLike, record: dict[str, Any]) -> Path:
    """append(), or, when that fails, append to the same file name in fallback_dir(): a finished measurement is
    never lost to a folder that stopped being writable. Returns the file written."""
    try:
        append(path, record)
        return Path(path)
    except OSError:
        other = fallback_dir() / Path(path).name
        other.parent.mkdir(parents=True, exist_ok=True)
        append(other, record)
        return other


def read(paths: Iterable[str | os.PathLike]) -> tuple[list[dict[str, Any]], list[str]]:
    """Records from JSON Lines files (folders are searched for *.jsonl); malformed lines are skipped and named."""
    records: list[dict[str, Any]] = []
    problems: list[str] = []
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(p.rglob("*.jsonl")) if p.is_dir() else [p])
    for f in files:
        try:
            lines = f.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            problems.append(f"{f}: cannot read ({e.strerror})")
            continue
        except UnicodeDecodeError:
            problems.append(f"{f}: not UTF-8 text (a binary file?)")
            continue
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"{f}:{i}: malformed JSON ({e.msg})")
                continue
            if not isinstance(rec, dict) or rec.get("schema") != SCHEMA or rec.get("kind") not in KINDS:
                problems.append(f"{f}:{i}: not an {SCHEMA} record")
                continue
            rec["_source"] = f"{f}:{i}"
            records.append(rec)
    return records, problems
