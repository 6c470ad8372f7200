"""A training group's records: one per member (results.py's record, kind "train"), written as soon as the member
is done (finished, stopped by a non-finite loss, or interrupted), so that nothing measured is lost; and the records
of earlier sessions of a plan, and of a group that crashed.

Time and memory of a stacked group are the group's: `wall_s` is the group's wall time (`run_share_s` its share per
member), and allocator, NVML and resident memory of a group of several members carry the prefix `group_` (a
per-run figure comes from a run trained alone: config.ensemble 1).
"""

from __future__ import annotations

import math
import os
import resource
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from attnbench import kernels, results
from attnbench.device import resolve_device
from attnbench.errors import classify

MEMORY_KEYS = ("alloc_peak_mib", "reserved_peak_mib", "nvml_peak_mib", "nvml_avg_mib", "nvml_note")
# In a plan's run folder: a copy of each finished member's record (JSON Lines; not *.jsonl, so that `report` over a
# folder that holds checkpoints does not read every record twice)
RUN_RECORDS = "finished.ndjson"


def config(g, resume: dict | None, graph_note: str) -> dict[str, Any]:
    """The config every member's record shares (the seed is added per member)."""
    c, proc = g.cfg, g.proc
    out = {"preset_fields": asdict(c), "attn": g.attn, "total_steps": g.schedule.total, **g.source.config(),
           "attn_config": asdict(c.attn_config()), "device": str(g.device),
           "amp": "bf16" if (c.amp and g.device.type == "cuda") else "fp32",
           "resumed_from_step": resume["pos"]["step"] if resume is not None else None,
           "resumed_world_size": resume.get("world_size", 1) if resume is not None else None,
           "world_size": proc.world, "global_batch": c.batch, "per_rank_batch": c.batch // proc.world,
           "cuda_graph": graph_note, "ensemble": g.members.n, "group": list(g.members.seeds)}
    if g.schedule.info:
        out["schedule"] = g.schedule.info
    return out


def cpu_peak_rss_mib() -> float:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if os.uname().sysname == "Darwin" else r / 2**10


def nvml_sampler(device: torch.device):
    """attnbench.measure.nvml's background sampler on a GPU; else None (n/a)."""
    if device.type != "cuda":
        return None
    from attnbench.measure.nvml import NvmlSampler

    return NvmlSampler(device.index or 0, interval_s=0.05)


def metrics(g, st, i: int, test: dict[str, Any] | None, nv: dict[str, Any] | None) -> dict[str, Any]:
    ms, n = st.members[i], g.members.n
    steps = ms.steps if ms.steps is not None else st.pos.step
    tokens = st.tokens if ms.steps is None else round(st.tokens * ms.steps / max(1, st.pos.step))
    wall = st.seconds + g.setup_s + g.elapsed()
    m: dict[str, Any] = {"params": g.members.n_params, "attn_params": g.members.attn_params, "steps": steps,
                         "tokens": tokens, "wall_s": wall, "setup_s": g.setup_s, "train_s": st.train_s,
                         "eval_s": st.eval_s, "tokens_per_s": tokens / st.train_s if st.train_s > 0 else None,
                         "train_loss": ms.last_loss if math.isfinite(ms.last_loss) else None,
                         "val_loss_best": ms.best_val}
    if n > 1:
        m["run_share_s"] = wall / n
    if g.counter is not None:
        m["paper_acc"], m["paper_scored"] = int(g.counter[i]) / max(1, st.scored), st.scored
    m.update({k: v for k, v in (test or {}).items() if k != "sample"})
    mem: dict[str, Any] = {"alloc_peak_mib": None}
    if g.device.type == "cuda":
        mem["alloc_peak_mib"] = torch.cuda.max_memory_allocated(g.device) / 2**20
        mem["reserved_peak_mib"] = torch.cuda.max_memory_reserved(g.device) / 2**20
    nv = nv or {"nvml_peak_mib": None, "nvml_avg_mib": None, "nvml_note": "n/a: no GPU"}
    mem.update({k: v for k, v in nv.items() if k.startswith("nvml_") and k != "nvml_scope"})
    m.update(mem if n == 1 else {f"group_{k}": v for k, v in mem.items()})
    m["cpu_peak_rss_mib"] = cpu_peak_rss_mib()
    return m


def write_member(g, st, i: int, test: dict[str, Any] | None, on, *, partial: bool,
                 nvml: dict | None = None) -> dict[str, Any]:
    """Member i's record, appended to the plan's record file by rank 0 (or to the fallback folder when that write
    fails); `on("done")` says where it went. Returns the record."""
    ms = st.members[i]
    cfg = {**g.config, "seed": ms.seed, "stacked_fallbacks": sorted(kernels.STACKED_FALLBACKS)}
    rec = results.make_record("train", g.attn, g.command, cfg, metrics(g, st, i, test, nvml),
                              results.environment(str(g.device)), status=ms.status, reason=ms.reason,
                              curves=ms.curves, sample=(test or {}).get("sample"), checkpoint=str(g.ckpt_path),
                              nvml_scope=(nvml or {}).get("nvml_scope"), **({"partial": True} if partial else {}))
    written = results.append_or_fallback(g.record_path, rec) if g.proc.is_main else None
    if g.proc.is_main and not partial:  # the run folder's copy: it travels with the checkpoints (finished())
        results.append_or_fallback(Path(g.ckpt_path).parent / RUN_RECORDS, rec)
    ms.recorded = not partial
    on("done", record=rec, written=written)
    return rec


def finished(plan) -> dict[tuple[str, int], dict[str, Any]]:
    """The complete records (not partial) of earlier sessions of this plan, by (attention, seed): from its record
    files, and from the run folder's own copy (RUN_RECORDS) where a record file is not here (a run folder carried to
    another machine without its results folder). A record found only in the run folder carries `_carried`: the
    session copies it into its own record file. Without that copy a resumed plan trained nothing again but ran each
    finished run's test pass once more, and its record then held the memory and time of that test pass alone (on an
    H200: 347 MiB of allocator peak instead of 1,831 for mha, results/h200/extrapolation/README.md)."""
    def complete(files: list[Path]) -> dict[tuple[str, int], dict[str, Any]]:
        recs, _ = results.read([p for p in files if p.is_file()])
        return {(r["attn"], r["config"].get("seed")): r for r in recs if r["kind"] == "train" and not r.get("partial")}

    out = complete([Path(p) for p in plan.records])
    carried = complete([Path(plan.run_dir) / RUN_RECORDS]) if plan.run_dir else {}
    out.update({k: {**{f: v for f, v in r.items() if f != "_source"}, "_carried": True}
                for k, r in carried.items() if k not in out})
    return out


def crash(attn: str, seed: int, cfg, e: Exception, record_path: Path, command: str) -> tuple[dict[str, Any], Path]:
    """A run that raised (a bug in one attention, or out of memory): an error record with its traceback."""
    status, reason = classify(e)
    rec = results.make_record("train", attn, command, {"preset_fields": asdict(cfg), "attn": attn, "seed": seed}, {},
                              results.environment(str(resolve_device(cfg.device))), status=status,
                              reason=f"crashed: {reason}" if status == "error" else reason,
                              traceback="".join(traceback.format_exception(e)))
    return rec, results.append_or_fallback(record_path, rec)
