#!/usr/bin/env bash
# The RCMHA paper's table and ablation (issues 12 and 19), one attention per device call: `--preset paper` is 156,850
# training and 17,420 validation steps (10 labml epochs), and the seeds of an attention train together as one stacked
# model (training/members.py), so one call trains every seed of one attention and its test passes within the device's
# 10-minute limit. A run that reaches the limit is stopped by SIGINT at a batch boundary and keeps partial records and
# a checkpoint in $CKPT (default checkpoints/paper, git-ignored, so kept on the device between calls while the machine
# stays warm); the next `run` of the same ATTN SEEDS ACT continues from it with --resume. A machine that was given
# back has lost it: the stage then starts over.
#   bash scripts/gpu_paper.sh run ATTN [SEEDS] [ACT]   # seeds 0..SEEDS-1 (default 5); ACT relu (the paper's) or relu2
#   RESULTS=... the results folder (default results/scratch/paper); commit the records under results/h200/paper/
# The table: mha, mdha, rmha, rcmha at relu; the ablation adds the same at relu2. Then:
#   attnbench report results/h200/paper   (paper table, Welch + Holm claims, the 2×2×2 ablation)
set -euo pipefail
cd "$(dirname "$0")/.."
export ATTNBENCH_DATA="${ATTNBENCH_DATA:-$(pwd)/../shared/data/tinyshakespeare/input.txt}"
RESULTS="${RESULTS:-results/scratch/paper}"
stage="${1:?stage: run ATTN [SEEDS] [ACT]}"
case "$stage" in
  run)
    attn="${2:?ATTN}" seeds="${3:-5}" act="${4:-relu}"
    ckpt="${CKPT:-checkpoints/paper}" mark="${CKPT:-checkpoints/paper}/run-$attn-$seeds-$act"
    mkdir -p "$ckpt"
    if [ -s "$mark" ] && [ -d "$(cat "$mark")" ]; then
      args=(--resume "$(cat "$mark")" --results-dir "$RESULTS")
    else
      args=(--preset paper --attn "$attn" --seeds "$seeds" --act "$act" --device "${DEVICE:-cuda}" --results-dir "$RESULTS"
            --checkpoints-dir "$ckpt" --format markdown)
    fi
    set +e
    timeout -s INT "${LIMIT_S:-570}" python -m attnbench train "${args[@]}"
    rc=$?
    set -e
    if [ "$rc" = 0 ]; then rm -f "$mark"
    elif [ ! -s "$mark" ]; then ls -td "$ckpt"/*/ 2>/dev/null | head -1 | sed 's:/$::' > "$mark"; fi
    exit "$rc" ;;
  *) echo "unknown stage $stage (run ATTN [SEEDS] [ACT])" >&2; exit 2 ;;
esac
