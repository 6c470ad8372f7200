#!/usr/bin/env bash
# The RCMHA paper's table and ablation (issues 12 and 19), one attention per stage: `--preset paper` is 156,850
# training and 17,420 validation steps (10 labml epochs), and the seeds of an attention train together as one stacked
# model (training/members.py).
#   bash scripts/gpu_paper.sh run ATTN [SEEDS] [ACT]   # seeds 0..SEEDS-1 (default 5); ACT relu (the paper's) or relu2
#   bash scripts/gpu_paper.sh next                     # every cell and probe not yet in DONE and RESULTS, in turn
#   bash scripts/gpu_paper.sh memory "ATTN ..." [ACT]  # one run alone each, STEPS steps (3000): the per-run memory
#     of a stacked cell, which `report` shows as (solo) (memory peaks in the first round; not timed yet:
#     3000 steps at the 1.7-2.9 ms solo steps of step-bench.txt, plus setup)
#   RESULTS=... the results folder (default results/scratch/paper); commit the records under results/h200/paper/
#   LIMIT_S=... the call's time for this stage (default 570); DATA=... another corpus (a CPU trial of the stage)
# A run longer than one device call (rcmha x 5: about 830 s of training) is continued in the next call, and nothing
# may depend on the machine staying warm between the two (it goes back 30 s after a call): `run` stops the run with
# `train --stop-after` at the last epoch boundary that leaves time (exit 75; an epoch of rcmha x 5 is about 83 s),
# where its checkpoint holds no Transformer-XL memory (about 52 MB for rcmha x 5, 48 MB for mha x 5); with
# COPY_TO=$OUT the run's folder comes back in 15 MiB pieces, $OUT/ck-ATTN-SEEDS-ACT.tar.*. Copy them into ckpt-in/
# here (git-ignored), carry it (the run tool's carry: ["ckpt-in"]) and repeat the same `run`: it unpacks them and
# continues with --resume (CARRIED=... another folder). A hard stop (timeout's SIGINT, 30 s after --stop-after)
# keeps a checkpoint wherever the run stands, in $CKPT (default checkpoints/paper, git-ignored).
# Not as concurrent processes: four under MPS ran 3.7-6 times slower in all than alone (results/h200/mqar-lanes/).
# `next` is the one command every device call of the sweep repeats: it reads which cells DONE (default
# results/h200/paper, where the records that came back are copied before the next call) and RESULTS already hold
# SEEDS finished full runs of, runs the first missing cell (resuming it from ckpt-in/ when its pieces are there), then
# the next, while at least MIN_S (150) seconds are left; then the memory probes of the cells without one while PROBE_S
# (60) are left. Exit 0: nothing is missing; 75: stopped by the call's time (the cell in flight in pieces in COPY_TO).
# CELLS: the cells as ATTN:ACT (default the table's four at relu, then the four at relu2).
#   bash scripts/gpu_paper.sh collect FROM   # here, between two calls: what a call brought back (its files folder)
# copies the record files whose every run finished (status ok) into DONE, never a partial one (the cell in flight),
# and puts the pieces of the cell in flight into ckpt-in/ (CARRIED) in place of the last ones, or empties it: the
# step that must come before the next call, or `next` trains again a cell whose records stayed behind.
# The table: mha, mdha, rmha, rcmha at relu; the ablation adds the same at relu2. Then:
#   attnbench report results/h200/paper   (paper table, Welch + Holm claims, the 2×2×2 ablation)
set -euo pipefail
cd "$(dirname "$0")/.."
self="$PWD/scripts/gpu_paper.sh"  # this script, for the stages that run others
export ATTNBENCH_DATA="${ATTNBENCH_DATA:-$(pwd)/../shared/data/tinyshakespeare/input.txt}"
RESULTS="${RESULTS:-results/scratch/paper}"
stage="${1:?stage: run ATTN [SEEDS] [ACT] | next | memory "ATTN ..." [ACT] | collect FROM}"
case "$stage" in
  run)
    attn="${2:?ATTN}" seeds="${3:-5}" act="${4:-relu}"
    ckpt="${CKPT:-checkpoints/paper}" mark="${CKPT:-checkpoints/paper}/run-$attn-$seeds-$act"
    parts="ck-$attn-$seeds-$act.tar."  # a stopped run's folder, in pieces a device call can bring back and carry
    mkdir -p "$ckpt" "$RESULTS"
    if compgen -G "${CARRIED:-ckpt-in}/$parts*" >/dev/null; then  # brought back from the last call: continue it
      top=$(cat "${CARRIED:-ckpt-in}/$parts"* | tar -tf - | awk -F/ 'NR == 1 {print $1}')  # awk reads to the end: head's early exit would SIGPIPE tar (pipefail)
      cat "${CARRIED:-ckpt-in}/$parts"* | tar -C "$ckpt" -xf - && echo "$ckpt/$top" >"$mark"
    fi
    if [ -s "$mark" ] && [ -d "$(cat "$mark")" ]; then
      args=(--resume "$(cat "$mark")" --results-dir "$RESULTS")
    else
      args=(--preset paper --attn "$attn" --seeds "$seeds" --act "$act" --device "${DEVICE:-cuda}" --results-dir "$RESULTS"
            --checkpoints-dir "$ckpt" --format markdown)
    fi
    [ -n "${DATA:-}" ] && args+=(--data "$DATA")  # another corpus (a small one for a CPU trial of the stages)
    limit="${LIMIT_S:-570}"
    set +e
    # --stop-after: stop at the last epoch boundary that leaves time (exit 75; its checkpoint holds no memory);
    # timeout: the hard stop, 30 s later (Ctrl-C's path: a checkpoint wherever it stands)
    timeout -s INT "$limit" python -m attnbench train "${args[@]}" --stop-after "$((limit - 30))"
    rc=$?
    set -e
    if [ "$rc" = 0 ]; then rm -f "$mark"
    elif [ ! -s "$mark" ]; then ls -td "$ckpt"/*/ 2>/dev/null | head -1 | sed 's:/$::' > "$mark"; fi
    if [ "$rc" != 0 ] && [ -n "${COPY_TO:-}" ] && [ -s "$mark" ]; then  # the run's folder, in 15 MiB pieces
      mkdir -p "$COPY_TO"
      tar -C "$(dirname "$(cat "$mark")")" --exclude auto.pt -cf - "$(basename "$(cat "$mark")")" \
        | split -b 15m - "$COPY_TO/$parts"
      echo "checkpoint folder $(cat "$mark") in $(ls "$COPY_TO/$parts"* | wc -l) pieces: $COPY_TO/$parts*"
    fi
    exit "$rc" ;;
  next)
    cells="${CELLS:-mha:relu mdha:relu rmha:relu rcmha:relu mha:relu2 mdha:relu2 rmha:relu2 rcmha:relu2}"
    limit="${LIMIT_S:-570}" seeds="${SEEDS:-5}"
    missing() {  # what DONE and RESULTS lack of $cells: "unfinished ATTN:ACT" and "unprobed ATTN:ACT" lines
      python - "$seeds" "${DONE:-results/h200/paper}" "$RESULTS" $cells <<'EOF'
import sys
from pathlib import Path

from attnbench.report import paper
from attnbench.results import read

seeds, folders, wanted = int(sys.argv[1]), sys.argv[2:4], [tuple(c.split(":")) for c in sys.argv[4:]]
records, _ = read([f for f in folders if Path(f).is_dir()])
for what, todo in (("unfinished", paper.unfinished(records, wanted, seeds)), ("unprobed", paper.unprobed(records, wanted))):
    print("".join(f"{what} {attn}:{act}\n" for attn, act in todo), end="")
EOF
    }
    for cell in $(missing | awk '$1 == "unfinished" {print $2}'); do
      left=$((limit - SECONDS))
      if [ "$left" -lt "${MIN_S:-150}" ]; then echo "next: $cell not started ($left s left)"; break; fi
      echo "next: $cell, $left s left"
      LIMIT_S="$left" bash "$self" run "${cell%%:*}" "$seeds" "${cell##*:}" || exit $?  # 75: stopped, in pieces
    done
    plan=$(missing)
    for act in relu relu2; do
      attns=$(echo "$plan" | awk -v act="$act" '$1 == "unprobed" {split($2, c, ":"); if (c[2] == act) printf "%s ", c[1]}')
      left=$((limit - SECONDS))
      if [ -z "$attns" ] || [ "$left" -lt "${PROBE_S:-60}" ]; then continue; fi
      echo "next: memory probes $attns at $act, $left s left"
      timeout -s INT "$left" bash "$self" memory "$attns" "$act" || true  # a probe cut short is measured next call
      probed=1
    done
    [ -z "${probed:-}" ] || plan=$(missing)  # after the probes: ask again
    if [ -z "$plan" ]; then echo "next: every cell and probe is done"; exit 0; fi
    echo "next: left for the next call:" $plan
    exit 75 ;;
  memory)
    mkdir -p "$RESULTS"
    for attn in ${2:?ATTNS, e.g. "mha mdha rmha rcmha"}; do
      args=(--preset paper --attn "$attn" --act "${3:-relu}" --seeds 1 --ensemble off --steps "${STEPS:-3000}"
            --device "${DEVICE:-cuda}" --results-dir "$RESULTS" --checkpoints-dir /tmp/attnbench-memory --format markdown)
      [ -n "${DATA:-}" ] && args+=(--data "$DATA")
      python -m attnbench train "${args[@]}"
    done ;;
  collect)
    from="${2:?FROM: the folder the files of a device call came back in}" done_dir="${DONE:-results/h200/paper}"
    carried="${CARRIED:-ckpt-in}"
    mkdir -p "$done_dir" "$carried"
    python - "$from" "$done_dir" <<'EOF' || clash=1  # a record of that name with other contents: exit 1 at the end
import filecmp
import json
import shutil
import sys
from pathlib import Path

src, done = Path(sys.argv[1]), Path(sys.argv[2])
clash = 0
for f in sorted(src.rglob("train-*.jsonl")):
    status = [json.loads(line).get("status") for line in f.read_text().splitlines() if line.strip()]
    if not status or any(s != "ok" for s in status):
        print(f"collect: left {f.name} ({', '.join(sorted(set(map(str, status)))) or 'empty'}: a cell in flight or failed)")
    elif (done / f.name).exists():
        same = filecmp.cmp(f, done / f.name, shallow=False)
        clash += not same
        print(f"collect: {f.name} is already in {done}" + ("" if same else ", with other contents: not replaced"))
    else:
        shutil.copy(f, done / f.name)
        print(f"collect: {f.name} ({len(status)} runs ok) -> {done}")
sys.exit(1 if clash else 0)
EOF
    rm -f "$carried"/ck-*.tar.*
    if compgen -G "$from/ck-*.tar.*" >/dev/null; then
      cp "$from"/ck-*.tar.* "$carried"/
      echo "collect: $carried holds" $(cd "$carried" && ls ck-*.tar.*)
    else
      echo "collect: $carried emptied (no cell in flight)"
    fi
    exit "${clash:-0}" ;;
  *) echo "unknown stage $stage (run ATTN [SEEDS] [ACT] | next | memory \"ATTN ...\" [ACT] | collect FROM)" >&2
     exit 2 ;;
esac
