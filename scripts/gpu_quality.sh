#!/usr/bin/env bash
# GPU runs of issue 13, one stage per device call (each must fit the device's 10-minute limit; every stage is a
# plain `attnbench train` that --resume can continue when a call ends early).
#   bash scripts/gpu_quality.sh probe          # one mqar run per width at seed 0, mha only: seconds per run
#   bash scripts/gpu_quality.sh width W SEED   # mqar, 2 layers, d_model W (64|128|256|512), every attention, one seed
#   bash scripts/gpu_quality.sh extrapolate SEED   # default preset, every attention, one seed, --eval-ctx 256…2048
# The mqar setting is the Zoology paper's Figure 2 point (T, pairs) = (256, 16) (arXiv 2312.04927; tasks.py); its
# step budget (STEPS, default 3000 at batch 128) is ours and must be read off `probe` before the sweep.
# Then: attnbench report "$RESULTS" (the width plot, the extrapolation table, the retention ratios).
set -euo pipefail
cd "$(dirname "$0")/.."
export ATTNBENCH_DATA="${ATTNBENCH_DATA:-$(pwd)/../shared/data/tinyshakespeare/input.txt}"
RESULTS="${RESULTS:-results/scratch/quality}"
CKPT="${CKPT:-/tmp/attnbench-ckpt}"
STEPS="${STEPS:-3000}"
stage="${1:?stage: probe | width W SEED | extrapolate SEED}"
train() { python -m attnbench train --device cuda --results-dir "$RESULTS" --checkpoints-dir "$CKPT" --format markdown "$@"; }
mqar() {
  train --task mqar --task-opt "seq_len=256,num_kv_pairs=16" --layers 2 --heads 4 --d-model "$1" --dropout 0 \
    --batch 128 --steps "$STEPS" --lr 3e-3 --min-lr 3e-4 --warmup 200 --eval-every 1000 "${@:2}"
}
case "$stage" in
  probe) for w in 64 128 256 512; do mqar "$w" --attn mha --steps 500; done ;;
  width) mqar "${2:?W}" --attn all --seed "${3:?SEED}" ;;
  extrapolate) train --preset default --attn all --seed "${2:?SEED}" --eval-ctx 256,512,1024,2048 ;;
  *) echo "unknown stage $stage (probe | width W SEED | extrapolate SEED)" >&2; exit 2 ;;
esac
