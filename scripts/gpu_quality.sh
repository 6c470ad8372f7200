#!/usr/bin/env bash
# GPU runs of issue 20 (MQAR at the scale where attentions separate, length extrapolation), one stage per device
# call (each fits the device's 10-minute limit; every stage is a plain `attnbench train` that --resume continues).
#   bash scripts/gpu_quality.sh probe              # mha only, seed 0: the step budget and learning rate (LRS x WIDTHS)
#   bash scripts/gpu_quality.sh width W [SEEDS]    # mqar, d_model W (64|128|256|512), every attention, seeds stacked
#   bash scripts/gpu_quality.sh extrapolate [SEEDS]    # default preset, every attention, --eval-ctx 256…2048
# The MQAR point (T, PAIRS), vocabulary 8192, 2 layers, batch BATCH, STEPS steps, learning rate LR: settable here
# (env) until the probe has fixed them; Zoology's Figure 2 grid (arXiv 2312.04927; its configs in HazyResearch/zoology,
# zoology/experiments/paper_configs/iclr24_zoology_figure2/configs.py) trains 2-layer models on 100,000 examples for
# up to 64 epochs at batch 512 (T <= 128), learning rates logspace(-4, -2, 4), random_non_queries False, and stops
# early at validation accuracy 0.99.
# Then: attnbench report "$RESULTS" (the width plot, the extrapolation table, the retention ratios).
set -euo pipefail
cd "$(dirname "$0")/.."
export ATTNBENCH_DATA="${ATTNBENCH_DATA:-$(pwd)/../shared/data/tinyshakespeare/input.txt}"
RESULTS="${RESULTS:-results/scratch/quality}"
CKPT="${CKPT:-/tmp/attnbench-ckpt}"
T="${T:-64}" PAIRS="${PAIRS:-16}" BATCH="${BATCH:-256}" STEPS="${STEPS:-4000}" LR="${LR:-1e-3}"
stage="${1:?stage: probe | width W [SEEDS] | extrapolate [SEEDS]}"
train() { python -m attnbench train --device cuda --results-dir "$RESULTS" --checkpoints-dir "$CKPT" --format markdown "$@"; }
mqar() {  # mqar W LR [more train options]
  train --task mqar --task-opt "seq_len=$T,num_kv_pairs=$PAIRS,random_non_queries=false" --layers 2 --heads 4 \
    --d-model "$1" --dropout 0 --batch "$BATCH" --steps "$STEPS" --lr "$2" --min-lr 0 --warmup 200 \
    --weight-decay 0.1 --eval-every 500 "${@:3}"
}
case "$stage" in
  probe) for lr in ${LRS:-1e-3 3e-3}; do for w in ${WIDTHS:-64 128 256}; do
           start=$(date +%s); mqar "$w" "$lr" --attn mha; echo "probe T=$T pairs=$PAIRS d=$w lr=$lr: $(( $(date +%s) - start )) s"
         done; done ;;
  width) mqar "${2:?W}" "$LR" --attn all --seeds "${3:-3}" ;;
  extrapolate) train --preset default --attn all --seeds "${2:-3}" --eval-ctx 256,512,1024,2048 ;;
  *) echo "unknown stage $stage (probe | width W [SEEDS] | extrapolate [SEEDS])" >&2; exit 2 ;;
esac
