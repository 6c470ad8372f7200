#!/usr/bin/env bash
# The RCMHA paper's table and ablation (issues 12 and 19), one attention per device call: `--preset paper` is 156,850
# training and 17,420 validation steps (10 labml epochs), and the seeds of an attention train together as one stacked
# model (training/members.py), so one call trains every seed of one attention and its test passes within the device's
# 10-minute limit. A run that reaches the limit is stopped by SIGINT at a batch boundary and keeps partial records and
# a checkpoint; the checkpoint lives on the device and is lost when the machine is returned, so rerun the stage then.
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
    timeout -s INT "${LIMIT_S:-570}" python -m attnbench train --preset paper --attn "$attn" --seeds "$seeds" \
      --act "$act" --device cuda --results-dir "$RESULTS" --checkpoints-dir "${CKPT:-/tmp/attnbench-paper}" \
      --format markdown ;;
  *) echo "unknown stage $stage (run ATTN [SEEDS] [ACT])" >&2; exit 2 ;;
esac
