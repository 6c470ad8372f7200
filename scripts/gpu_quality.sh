#!/usr/bin/env bash
# GPU runs of issue 20 (MQAR at the scale where attentions separate, length extrapolation), one stage per device
# call (each fits the device's 10-minute limit; every stage is a plain `attnbench train` that --resume continues).
#   bash scripts/gpu_quality.sh probe                  # mha, seed 0, learning rates LRS x widths WIDTHS (the budget)
#   bash scripts/gpu_quality.sh width W [SEEDS] [ATTNS]   # --preset mqar at d_model W, every attention (or ATTNS),
#                                                      # seeds stacked
#   bash scripts/gpu_quality.sh lrs W[,W...] ATTNS [SEEDS]  # the same at each learning rate of LRS (is a plateau
#                                                      # the lr's?), at each width given
#   bash scripts/gpu_quality.sh extrapolate [ATTNS] [SEEDS]   # default preset, --eval-ctx 256…2048 (all: 9 x 3
#                                                      # runs, not timed yet: 5000 steps at the 7.5 ms solo mha step of
#                                                      # results/h200/ensemble, plus evaluation: split ATTNS over calls)
# LANES=N: a stage's commands as N concurrent processes under MPS (lanes below).
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
stage="${1:?stage: probe | width W [SEEDS] [ATTNS] | lrs W[,W...] ATTNS [SEEDS] | extrapolate [ATTNS] [SEEDS]}"
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
# "all" as the registry's names where lanes split it, else the list as given
attns() { if [ "${LANES:-1}" -gt 1 ] && [ "$1" = all ]; then
            python -c "from attnbench.attention import names; print(','.join(names()))"; else echo "$1"; fi; }
# split "a,b,c,d,e" into K comma lists, round robin (each list one lane's command)
chunks() { tr , '\n' <<<"$2" | awk -v k="$1" '{l[(NR-1)%k] = l[(NR-1)%k] (l[(NR-1)%k] == "" ? "" : ",") $0}
                                              END {for (i = 0; i < k; i++) if (l[i] != "") print l[i]}'; }
# The job lines of stdin (train arguments), one after another, or with LANES=N as N concurrent processes (MPS on a
# GPU, so that their kernels overlap: an MQAR step of one small model leaves most of an H200 idle), lane l writing
# its records to $RESULTS/lane-l; a lane's output is printed when all are done. Wall times of concurrent runs are
# their own under contention: the stage's time over its runs is the share (printed last).
lanes() {
  local jobs=() n="${LANES:-1}" mps=off start=$SECONDS logs l k
  mapfile -t jobs
  [ "${#jobs[@]}" -le 7 ] || echo "note: ${#jobs[@]} record files; a device call brings back 8 files" >&2
  if [ "$n" -le 1 ]; then
    for k in "${!jobs[@]}"; do train ${jobs[k]}; done
    return
  fi
  if [ "${DEVICE:-cuda}" = cuda ] && command -v nvidia-cuda-mps-control >/dev/null && nvidia-cuda-mps-control -d; then
    mps=on
  fi
  logs=$(mktemp -d)
  echo "${#jobs[@]} commands in $n lanes, MPS $mps"
  for ((l = 0; l < n; l++)); do
    ( for ((k = l; k < ${#jobs[@]}; k += n)); do RESULTS="$RESULTS/lane-$l" train ${jobs[k]} || true; done ) \
      >"$logs/$l.log" 2>&1 &
  done
  wait
  for ((l = 0; l < n; l++)); do echo "=== lane $l"; cat "$logs/$l.log"; done
  [ "$mps" = off ] || echo quit | nvidia-cuda-mps-control
  echo "lanes: $((SECONDS - start)) s for ${#jobs[@]} commands"
}
case "$stage" in
  probe) for lr in ${LRS:-1e-3 3e-3}; do for w in ${WIDTHS:-64 128 256}; do
           start=$(date +%s); train --preset mqar --attn mha --d-model "$w" --lr "$lr"
           echo "probe d=$w lr=$lr: $(( $(date +%s) - start )) s"
         done; done ;;
  width) chunks "${LANES:-1}" "$(attns "${4:-all}")" | while read -r a; do
           echo "--preset mqar --attn $a --d-model ${2:?W} --seeds ${3:-3}"; done | lanes ;;
  lrs) widths=(${2//,/ }) rates=(${LRS:-3e-4 1e-3})
       per=$(( (${LANES:-1} + ${#widths[@]} * ${#rates[@]} - 1) / (${#widths[@]} * ${#rates[@]}) ))
       for w in "${widths[@]}"; do for lr in "${rates[@]}"; do chunks "$per" "${3:?ATTNS}" | while read -r a; do
         echo "--preset mqar --attn $a --d-model $w --seeds ${4:-3} --lr $lr"; done; done; done | lanes ;;
  extrapolate) chunks "${LANES:-1}" "$(attns "${2:-all}")" | while read -r a; do
           echo "--preset default --attn $a --seeds ${3:-3} --eval-ctx 256,512,1024,2048"; done | lanes ;;
  *) echo "unknown stage $stage (probe | width W [SEEDS] [ATTNS] | lrs W[,W...] ATTNS [SEEDS] |" \
          "extrapolate [ATTNS] [SEEDS])" >&2
     exit 2 ;;
esac
