#!/usr/bin/env bash
# GPU runs of issue 20 (MQAR at the scale where attentions separate, length extrapolation), one stage per device
# call (each fits the device's 10-minute limit; every stage is a plain `attnbench train` that --resume continues).
#   bash scripts/gpu_quality.sh probe                  # mha, seed 0, learning rates LRS x widths WIDTHS (the budget)
#   bash scripts/gpu_quality.sh width W [SEEDS] [ATTNS]   # --preset mqar at d_model W, every attention (or ATTNS),
#                                                      # seeds stacked
#   bash scripts/gpu_quality.sh lrs W[,W...] ATTNS [SEEDS]  # the same at each learning rate of LRS (is a plateau
#                                                      # the lr's?), at each width given
#   bash scripts/gpu_quality.sh extrapolate [ATTNS] [SEEDS]   # default preset, --eval-ctx 256…2048, seeds one by
#                                                      # one (stacking does not pay under this preset); 35-50 s a run on
#                                                      # an H200, 9 x 3 runs about 1,150 s: two calls, the second a
#                                                      # `resume` (results/h200/extrapolation)
#   bash scripts/gpu_quality.sh resume [RUN_DIR|last]  # continue a stopped command from its run folder under $CKPT
#                                                      # (last: the newest; on the same warm machine, or carried there)
# `--preset mqar` (attnbench/config.py) is the point the probe fixed: Zoology's generator and 2-layer model at T=64,
# 16 pairs, vocabulary 8192, 3000 steps of batch 256 at lr 3e-3 (mha at D=128: test acc 0.9997). Zoology's Figure 2
# (arXiv 2312.04927; HazyResearch/zoology, zoology/experiments/paper_configs/iclr24_zoology_figure2/configs.py)
# trains up to 64 epochs at batch 512, sweeps lr over logspace(-4, -2, 4) and stops at validation accuracy 0.99.
# Then: attnbench report "$RESULTS" (the width plot, the extrapolation table, the retention ratios).
# On a lent GPU: a call brings back at most 8 files from $OUT, so give one stage many attentions (one `train`
# command writes one record file) rather than one command per attention (the records of a ninth file are lost), and
# LIMIT_S=... (seconds for the whole stage): each `train` gets `--stop-after` at what is left less 20 s (it stops at
# a group's chunk boundary, records of finished groups kept) and `timeout -s INT` at what is left (the hard stop).
set -euo pipefail
cd "$(dirname "$0")/.."
export ATTNBENCH_DATA="${ATTNBENCH_DATA:-$(pwd)/../shared/data/tinyshakespeare/input.txt}"
RESULTS="${RESULTS:-results/scratch/quality}"
CKPT="${CKPT:-/tmp/attnbench-ckpt}"
stage="${1:?stage: probe | width W [SEEDS] [ATTNS] | lrs W[,W...] ATTNS [SEEDS] | extrapolate [ATTNS] [SEEDS] | resume [DIR]}"
# DEVICE=cpu EXTRA="--steps 2 --batch 4 --task-opt train_examples=64,test_examples=16": a CPU trial of a stage
deadline=$((SECONDS + ${LIMIT_S:-0}))
train() {
  local hard=() soft=()
  if [ -n "${LIMIT_S:-}" ]; then
    local left=$((deadline - SECONDS))
    [ "$left" -gt 30 ] || { echo "not started (LIMIT_S: ${left} s left): train $*" >&2; return 75; }
    hard=(timeout -s INT "$left") soft=(--stop-after "$((left - 20))")
  fi
  "${hard[@]}" python -m attnbench train --device "${DEVICE:-cuda}" --results-dir "$RESULTS" --checkpoints-dir "$CKPT" \
    --format markdown "${soft[@]}" "$@" ${EXTRA:-}
}
# The job lines of stdin (train arguments), one after another. Not several at once: four concurrent processes under
# MPS (captured steps, D=128/256) ran 15-23 times slower each, 3.7-6 times slower in all, than runs alone
# (results/h200/mqar-lanes/README.md).
serial() { local job rc=0
          while read -r job; do train $job </dev/null || { rc=$?; echo "exit $rc: train $job" >&2; }; done
          return "$rc"; }
case "$stage" in
  probe) for lr in ${LRS:-1e-3 3e-3}; do for w in ${WIDTHS:-64 128 256}; do
           start=$(date +%s); train --preset mqar --attn mha --d-model "$w" --lr "$lr"
           echo "probe d=$w lr=$lr: $(( $(date +%s) - start )) s"
         done; done ;;
  width) echo "--preset mqar --attn ${4:-all} --d-model ${2:?W} --seeds ${3:-3}" | serial ;;
  lrs) widths=(${2//,/ }) rates=(${LRS:-3e-4 1e-3})
       for w in "${widths[@]}"; do for lr in "${rates[@]}"; do
         echo "--preset mqar --attn ${3:?ATTNS} --d-model $w --seeds ${4:-3} --lr $lr"; done; done | serial ;;
  extrapolate) echo "--preset default --attn ${2:-all} --seeds ${3:-3} --eval-ctx 256,512,1024,2048 --ensemble off" \
                 | serial ;;
  resume) run_dir="${2:-last}"
          [ "$run_dir" != last ] || run_dir=$(ls -td "$CKPT"/*/ 2>/dev/null | head -1)
          [ -d "${run_dir:-}" ] || { echo "no run folder to resume (${2:-last} under $CKPT)" >&2; exit 2; }
          echo "--resume ${run_dir%/}" | serial ;;
  *) echo "unknown stage $stage (probe | width W [SEEDS] [ATTNS] | lrs W[,W...] ATTNS [SEEDS] |" \
          "extrapolate [ATTNS] [SEEDS] | resume [RUN_DIR|last])" >&2
     exit 2 ;;
esac
