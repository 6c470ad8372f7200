"""The paper preset's runs as concurrent solo processes on one GPU (issue 19), for device calls of 10 minutes.

One `--preset paper` run alone leaves an H200 waiting on launches (1.7 ms a step for mha, of which the GPU is busy a
fraction; results/h200/ensemble/), and seeds stacked as one model need checkpoints too large to carry between calls
(about 50 MB for five: one such group a call). Here every (attention, activation, seed) is a plain solo run, its own
process; LANES of them run at once under MPS (their kernels overlap); a solo checkpoint is about 10 MB, so the runs a
call cannot finish stop at an epoch boundary (`train --stop-after`) and travel to the next call (at most --carry of
them; a run that would not finish and cannot be carried is not started).

    python scripts/paper_lanes.py --lanes 8 --cells mha:relu,mha:relu2,mdha:relu --seeds 5 --limit-s 560 \\
        --results $OUT/paper --out $OUT [--done results/h200/paper] [--carried ckpt-in]

- jobs: every cell x seed 0..SEEDS-1, less those with a finished record in --done (status ok, every step of the
  preset) and those carried in (resumed first);
- order: carried runs, then the longest attention first (EST_S: solo wall seconds on an H200);
- $OUT/paper-records.tar: every record file this call wrote (one file: a call brings back 8); unpack it under
  results/h200/paper/. $OUT/ck-lanes.tar.*: the stopped runs' folders in 15 MiB pieces; copy them into ckpt-in/ and
  carry it to the next call (the run tool's carry: ["ckpt-in"]).
- the summary: each job's exit and wall, the runs finished, and the GPU time per finished run (the call's wall over
  them: the issue's "per-run share").
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

# solo wall seconds of a full run on one H200 (results/h200/paper/README.md; mdha not yet measured: between the two)
EST_S = {"mha": 285.0, "mdha": 330.0, "rmha": 362.0, "rcmha": 481.0}
FULL_STEPS = 156_850
PIECE = 15 * 2**20
CARRY_BYTES = 56 * 2**20  # what travels back: 64 MiB and 8 files a call, the records archive and the log beside it


def finished(done_dirs: list[str], steps: int) -> set[tuple[str, str, int]]:
    """(attn, act, seed) of every run under done_dirs that finished the paper preset (status ok, `steps` steps)."""
    out = set()
    for d in done_dirs:
        for f in glob.glob(os.path.join(d, "**", "*.jsonl"), recursive=True):
            for line in Path(f).read_text().splitlines():
                try:
                    r = json.loads(line)
                    c = r["config"]
                    if (r.get("kind") == "train" and r.get("status") == "ok" and c.get("preset") == "paper"
                            and (r.get("metrics") or {}).get("steps") == steps):
                        out.add((r["attn"], c["preset_fields"]["act"], int(c["seed"])))
                except (ValueError, KeyError, TypeError):
                    continue
    return out


def carried_runs(carried: str, ckpt: Path) -> list[tuple[tuple[str, str, int], Path]]:
    """Unpack the pieces brought from the last call into ckpt; each run folder with its (attn, act, seed)."""
    parts = sorted(glob.glob(os.path.join(carried, "ck-lanes.tar.*")))
    if not parts:
        return []
    ckpt.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as whole:
        for p in parts:
            whole.write(Path(p).read_bytes())
        whole.seek(0)
        with tarfile.open(fileobj=whole) as t:
            t.extractall(ckpt, filter="data") if sys.version_info >= (3, 12) else t.extractall(ckpt)
    return [(_job(plan), plan.parent) for plan in sorted(ckpt.glob("*/plan.json"))]


def mps(on: bool) -> bool:
    """Start (or stop) the MPS control daemon; whether it runs. Without it the processes time-slice the GPU."""
    if shutil.which("nvidia-cuda-mps-control") is None:
        return False
    if on:
        return subprocess.run(["nvidia-cuda-mps-control", "-d"]).returncode == 0
    subprocess.run(["nvidia-cuda-mps-control"], input=b"quit\n")
    return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lanes", type=int, default=8)
    ap.add_argument("--cells", required=True, help="attn:act,... e.g. mha:relu,rcmha:relu2")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--limit-s", type=float, default=560.0, help="this call's seconds for the whole stage")
    ap.add_argument("--results", default="results/scratch/paper")
    ap.add_argument("--done", action="append", default=[], help="folders of finished records (repeatable)")
    ap.add_argument("--carried", default="ckpt-in")
    ap.add_argument("--ckpt", default="checkpoints/lanes")
    ap.add_argument("--out", default=None, help="where the records archive and the checkpoint pieces go")
    ap.add_argument("--carry", type=int, default=4, help="at most this many unfinished runs go to the next call")
    ap.add_argument("--slowdown", type=float, default=1.5, help="a run's wall under concurrency over EST_S")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=None, help="fewer steps (a trial); default: the preset's")
    ap.add_argument("--data", default=None)
    a = ap.parse_args()
    start = time.monotonic()
    deadline = start + a.limit_s
    steps = a.steps or FULL_STEPS
    cells = [tuple(c.split(":")) for c in a.cells.split(",")]
    ckpt, results = Path(a.ckpt), Path(a.results)
    results.mkdir(parents=True, exist_ok=True)
    carried = carried_runs(a.carried, ckpt)
    done = finished(a.done + [str(results)], steps)
    todo = [(attn, act, s) for attn, act in cells for s in range(a.seeds) if (attn, act, s) not in done]
    in_flight = {job for job, _ in carried}
    queue = [(job, folder) for job, folder in carried if job not in done]
    queue += sorted(((j, None) for j in todo if j not in in_flight), key=lambda jf: -EST_S.get(jf[0][0], 400.0))
    print(f"{len(done)} runs already finished, {len(queue)} to run ({len(carried)} carried in), {a.lanes} lanes")
    mps_on = a.device.startswith("cuda") and mps(True)
    print(f"MPS {'on' if mps_on else 'off'}")
    running: dict[subprocess.Popen, tuple] = {}
    report, carry_left, stopping = [], a.carry, False
    logs = Path(tempfile.mkdtemp(prefix="lanes-"))
    try:
        while queue or running:
            while queue and len(running) < a.lanes:
                (attn, act, seed), folder = queue[0]
                left = deadline - time.monotonic()
                need = EST_S.get(attn, 400.0) * a.slowdown
                if left < 60 or (need > left and (folder is None and carry_left <= 0)):
                    queue.pop(0)
                    report.append(((attn, act, seed), "not started", 0.0))
                    continue
                if need > left:
                    carry_left -= 1
                queue.pop(0)
                cmd = [sys.executable, "-m", "attnbench", "train", "--results-dir", str(results),
                       "--stop-after", str(int(left - 30))]
                if folder is not None:
                    cmd += ["--resume", str(folder)]
                else:
                    cmd += ["--preset", "paper", "--attn", attn, "--act", act, "--seeds", "1", "--seed", str(seed),
                            "--ensemble", "off", "--device", a.device, "--checkpoints-dir", str(ckpt),
                            "--format", "markdown"]
                    cmd += ["--steps", str(a.steps)] if a.steps else []
                if a.data:
                    cmd += ["--data", a.data]
                log = open(logs / f"{attn}-{act}-{seed}.log", "w")
                running[subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)] = ((attn, act, seed),
                                                                                       time.monotonic(), log)
            time.sleep(0.5)
            for p in [p for p in running if p.poll() is not None]:
                job, t0, log = running.pop(p)
                log.close()
                report.append((job, {0: "finished", 75: "stopped (checkpoint)", 130: "interrupted (checkpoint)"}
                               .get(p.returncode, f"exit {p.returncode}"), time.monotonic() - t0))
            if time.monotonic() > deadline and not stopping:  # the hard stop: Ctrl-C's path keeps a checkpoint
                stopping = True                                     # where each run stands
                report += [(job, "not started", 0.0) for job, _ in queue]
                queue.clear()
                for p in running:
                    p.send_signal(signal.SIGINT)
    finally:
        if mps_on:
            mps(False)
    wall = time.monotonic() - start
    for job, status, secs in report:
        print(f"  {job[0]} {job[1]} seed {job[2]}: {status}" + (f" after {secs:.0f} s" if secs else ""))
    for f in sorted(logs.glob("*.log")):
        tail = f.read_text().splitlines()[-3:]
        print(f"=== {f.stem}\n" + "\n".join(tail))
    ok = sum(s == "finished" for _, s, _ in report)
    print(f"{ok} runs finished in {wall:.0f} s of this call" + (f": {wall / ok:.1f} s of GPU a run" if ok else ""))
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        with tarfile.open(out / "paper-records.tar", "w") as t:  # the files with a finished run: a stopped run's
            for f in sorted(results.glob("*.jsonl")):              # partial record stays behind (its next session
                if '"status": "ok"' in f.read_text():              # writes a file of its own)
                    t.add(f, arcname=f.name)
        ended = finished([str(results)], steps)  # read once: the records of every run this call finished
        unfinished = [f.parent for f in ckpt.glob("*/plan.json")
                      if any(f.parent.glob("*.pt")) and _job(f) not in ended]
        room, kept = CARRY_BYTES, []
        for d in sorted(unfinished, key=lambda d: d.stat().st_mtime):  # the earliest started first (most done)
            size = sum(f.stat().st_size for f in d.glob("*.pt") if f.name != "auto.pt")
            if size <= room:
                room -= size
                kept.append(d)
            else:
                print(f"  {d.name}: no room to carry it ({size / 2**20:.0f} MB); its progress is lost")
        unfinished = kept
        if unfinished:
            with tempfile.TemporaryFile() as whole:
                with tarfile.open(fileobj=whole, mode="w") as t:
                    for d in unfinished:
                        t.add(d, arcname=d.name, filter=lambda ti: None if ti.name.endswith("auto.pt") else ti)
                whole.seek(0)
                n = 0
                while chunk := whole.read(PIECE):
                    (out / f"ck-lanes.tar.{n:02d}").write_bytes(chunk)
                    n += 1
            print(f"{len(unfinished)} unfinished runs in {n} pieces: {out}/ck-lanes.tar.*")
    return 0


def _job(plan: Path) -> tuple[str, str, int]:
    """(attn, act, seed) of a run folder's plan.json."""
    p = json.loads(plan.read_text())
    return p["attns"][0], p["cfg"]["act"], int(p["cfg"]["seed"])


if __name__ == "__main__":
    sys.exit(main())
