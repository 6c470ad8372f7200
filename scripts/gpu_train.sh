#!/usr/bin/env bash
# GPU figures of issue 4 (run on one H100 from the repository root; records land under results/).
#  1. default preset, all nine attentions, one seed: each run's wall_s should be <= 90 s, mha test_acc >= 0.578.
#  2. the paper's table: mha, mdha, rmha, rcmha x 3 seeds, default preset (paper: 0.566 / 0.557 / 0.555 / 0.572,
#     a running train+validation accuracy; ours is a held-out full-pass test accuracy).
# Needs ../shared/data/tinyshakespeare/input.txt (or ATTNBENCH_DATA / the cache / network).
set -euo pipefail
cd "$(dirname "$0")/.."
export ATTNBENCH_DATA="${ATTNBENCH_DATA:-$(pwd)/../shared/data/tinyshakespeare/input.txt}"
RESULTS="${RESULTS:-results}"
EXTRA=("$@")   # e.g. --compile, --steps 200 for a quick check

python -m attnbench train --attn all --preset default --device cuda --results-dir "$RESULTS" \
  --format markdown "${EXTRA[@]}" | tee "$RESULTS/train-default-all.md"
python -m attnbench train --attn mha,mdha,rmha,rcmha --seeds 3 --preset default --device cuda \
  --results-dir "$RESULTS" --format markdown "${EXTRA[@]}" | tee "$RESULTS/train-default-paper-table.md"
