#!/usr/bin/env bash
# Issue 3 figures on one H100: bf16, B=4, n=16, d=64 (d_model 1024), causal, fwd+bwd, T = 1024, 4096, 16384.
# Each command appends its records to a new results/h100/<kind>-<stamp>.jsonl as it goes; an OOM inside a sweep is a
# recorded cell, and a command that fails outright does not stop the next one (no `set -e`).
# Usage: bash scripts/gpu_bench.sh [results-dir]      (from the repository root)
set -u
OUT=${1:-results/h100}
mkdir -p "$OUT"
PY=${PYTHON:-python}
SHAPE=(--device cuda --dtype bf16 --batch 4 --heads 16 --d-model 1024)
status=0
run() {
  echo "+ $*" | tee -a "$OUT/commands.txt"
  "$@" || { echo "command failed (rc=$?), going on: $*" | tee -a "$OUT/commands.txt"; status=1; }
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/nvidia-smi.txt"

# 1. every attention (fast path) + the sdpa / sdpa+proj baselines: mha vs sdpa, mhe-* and mdha vs mha
run $PY -m attnbench speed "${SHAPE[@]}" --mode fwd+bwd --seq-len 1024,4096,16384 --impl fast \
    --format markdown --results-dir "$OUT"
# 2. the reference rmha / rcmha (and mha's reference for scale): measured, OOM recorded
run $PY -m attnbench speed "${SHAPE[@]}" --mode fwd+bwd --seq-len 1024,4096,16384 --impl reference \
    --attn mha,rmha,rcmha --no-baseline --format markdown --results-dir "$OUT"
# 3. run-to-run spread: the same command twice, mha at T=4096 (medians within 3 %)
for i in 1 2; do
  run $PY -m attnbench speed "${SHAPE[@]}" --mode fwd+bwd --seq-len 4096 --attn mha --format markdown \
      --results-dir "$OUT"
done
# 4. memory, fast and reference, every attention
run $PY -m attnbench memory "${SHAPE[@]}" --seq-len 1024,4096,16384 --impl both --format markdown \
    --results-dir "$OUT"
# 5. forward and backward apart, and with an L2 flush, for mha and the baselines
run $PY -m attnbench speed "${SHAPE[@]}" --mode fwd --seq-len 4096 --attn mha --flush-l2 --format markdown \
    --results-dir "$OUT"
run $PY -m attnbench speed "${SHAPE[@]}" --mode bwd --seq-len 4096 --attn mha --flush-l2 --format markdown \
    --results-dir "$OUT"
exit $status
