#!/usr/bin/env bash
# The RCMHA paper's table and ablation (issue 12), one full run per device call: `--preset paper` is 156,850
# training and 17,420 validation steps (10 labml epochs), 282 s (mha) to 466 s (rcmha) captured on an H200
# (results/h200/paper/step-bench.txt), so one run and its test pass fit the device's 10-minute limit. A run
# that reaches the limit is stopped by SIGINT at a batch boundary and keeps a partial record and a checkpoint;
# the checkpoint lives on the device and is lost when the machine is returned, so rerun the stage in that case.
#   bash scripts/gpu_paper.sh run ATTN SEED [ACT]   # ACT relu (the paper's, default) or relu2 (the ablation)
#   OUT=... the results folder (default results/scratch/paper); commit the records under results/h200/paper/
# The table: mha, mdha, rmha, rcmha × seeds 0-4 at relu; the ablation adds the same at relu2. Then:
#   attnbench report results/h200/paper   (paper table, Welch + Holm claims, the 2×2×2 ablation)
set -euo pipefail
cd "$(dirname "$0")/.."
export ATTNBENCH_DATA="${ATTNBENCH_DATA:-$(pwd)/../shared/data/tinyshakespeare/input.txt}"
OUT="${OUT:-results/scratch/paper}"
stage="${1:?stage: run ATTN SEED [ACT]}"
case "$stage" in
  run)
    attn="${2:?ATTN}" seed="${3:?SEED}" act="${4:-relu}"
    timeout -s INT "${LIMIT_S:-570}" python -m attnbench train --preset paper --attn "$attn" --seed "$seed" \
      --act "$act" --device cuda --results-dir "$OUT" --checkpoints-dir "${CKPT:-/tmp/attnbench-paper}" \
      --format markdown ;;
  *) echo "unknown stage $stage (run ATTN SEED [ACT])" >&2; exit 2 ;;
esac
