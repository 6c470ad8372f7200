#!/usr/bin/env bash
# Issues 3 and 5 on one GPU, in one device call (about 7 minutes on an H100): bf16, B=4, n=16, d=64 (d_model 1024),
# causal, fwd+bwd, T = 1024, 4096, 16384; every attention plus the sdpa / sdpa+proj baselines.
#   1. the GPU tests (CUDA-graph training step and `speed --cuda-graph`) and the relative prologue's GPU check;
#   2. speed, eager calls (what a training loop without graphs pays, host overhead included);
#   3. speed, --cuda-graph: replays of each captured call, the GPU's work alone (at T=1024 the eager call is
#      host-bound: ~1 ms of Python and launches);
#   4. memory of mha and the convolution / relative attentions, T up to 32768.
# Each command appends its records to $OUT/<kind>-<stamp>.jsonl as it goes; a failing command does not stop the next.
# Usage: bash scripts/gpu_sweep.sh [results-dir]      (from the repository root)
set -u
OUT=${1:-results/h100}
mkdir -p "$OUT"
PY=${PYTHON:-python}
SHAPE=(--device cuda --dtype bf16 --batch 4 --heads 16 --d-model 1024 --format markdown --results-dir "$OUT")
status=0
run() {
  echo "+ $*" | tee -a "$OUT/commands.txt"
  "$@" || { echo "command failed (rc=$?), going on: $*" | tee -a "$OUT/commands.txt"; status=1; }
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/nvidia-smi.txt"
run $PY -m pytest -q tests/test_graphed_cuda.py
run $PY scripts/relpos_prologue_bench.py
run $PY -m attnbench speed "${SHAPE[@]}" --attn all --seq-len 1024,4096,16384
run $PY -m attnbench speed "${SHAPE[@]}" --attn all --seq-len 1024,4096,16384 --cuda-graph
run $PY -m attnbench memory "${SHAPE[@]}" --attn mha,mdha,rmha,rcmha --seq-len 1024,4096,16384,32768
exit $status
