#!/usr/bin/env bash
# Issue 5 figures on one H100: the fused relative path (rmha, rcmha) beside SDPA MHA, bf16, B=4, n=16, d=64,
# causal, fwd+bwd; at the default sinusoid width (d_pos = d = 64) and at d_pos = 32; T up to 32768.
# Usage: bash scripts/gpu_relpos.sh [results-dir]      (from the repository root)
set -u
OUT=${1:-results/h100}
mkdir -p "$OUT"
PY=${PYTHON:-python}
SHAPE=(--device cuda --dtype bf16 --batch 4 --heads 16 --d-model 1024 --mode fwd+bwd --format markdown --results-dir "$OUT")
run() { echo "+ $*" | tee -a "$OUT/commands.txt"; "$@" || echo "command failed (rc=$?), going on: $*" | tee -a "$OUT/commands.txt"; }
run $PY -m attnbench speed "${SHAPE[@]}" --attn mha,rmha,rcmha --seq-len 1024,4096,16384,32768
run $PY -m attnbench speed "${SHAPE[@]}" --attn mha,rmha,rcmha --d-pos 32 --no-baseline --seq-len 4096,16384
run $PY -m attnbench memory "${SHAPE[@]}" --attn mha,rmha,rcmha --seq-len 1024,4096,16384,32768
