#!/usr/bin/env bash
# GPU runs of issues 4 and 5, one stage per device call (each fits the device's 10-minute limit on an H100 with the
# CUDA-graph training step: about 45 s per mha run, 70 s per rcmha run, 170 s per reference rcmha run).
#   bash scripts/gpu_train.sh all        # default preset, all nine attentions, seed 0 (about 7 min)
#   bash scripts/gpu_train.sh table-a    # the paper's table, mha and mdha x 3 seeds (about 5 min)
#   bash scripts/gpu_train.sh table-b    # the paper's table, rmha and rcmha x 3 seeds (about 6.5 min)
#   bash scripts/gpu_train.sh reference  # rcmha on its reference path, seeds 0-2 (about 8.5 min): issue 5's curves
# Then: python scripts/compare_curves.py "$RESULTS" --attn rcmha
# Needs the corpus: ATTNBENCH_DATA, ../shared/data/tinyshakespeare/input.txt, the cache or the network.
set -euo pipefail
cd "$(dirname "$0")/.."
export ATTNBENCH_DATA="${ATTNBENCH_DATA:-$(pwd)/../shared/data/tinyshakespeare/input.txt}"
RESULTS="${RESULTS:-results}"
stage="${1:?stage: all | table-a | table-b | reference}"
shift
train() { python -m attnbench train --preset default --device cuda --results-dir "$RESULTS" --format markdown "$@"; }
case "$stage" in
  all) train --attn all "$@" | tee "$RESULTS/train-default-all.md" ;;
  table-a) train --attn mha,mdha --seeds 3 "$@" | tee "$RESULTS/train-table-a.md" ;;
  table-b) train --attn rmha,rcmha --seeds 3 "$@" | tee "$RESULTS/train-table-b.md" ;;
  reference) train --attn rcmha --impl reference --seeds 3 "$@" | tee "$RESULTS/train-rcmha-reference.md" ;;
  *) echo "unknown stage $stage (all | table-a | table-b | reference)" >&2; exit 2 ;;
esac
