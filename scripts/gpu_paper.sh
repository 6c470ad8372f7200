#!/usr/bin/env bash
# The RCMHA paper's table and ablation (issues 12 and 19), one attention per device call: `--preset paper` is 156,850
# training and 17,420 validation steps (10 labml epochs), and the seeds of an attention train together as one stacked
# model (training/members.py), so one call trains every seed of one attention and its test passes within the device's
# 10-minute limit. A run that reaches the limit is stopped by SIGINT at a batch boundary and keeps partial records and
# a checkpoint in $CKPT (default checkpoints/paper, git-ignored, so kept on the device between calls while the machine
# stays warm); the next `run` of the same ATTN SEEDS ACT continues from it with --resume. A machine that was given
# back has lost it: the stage then starts over.
#   bash scripts/gpu_paper.sh run ATTN [SEEDS] [ACT]   # seeds 0..SEEDS-1 (default 5); ACT relu (the paper's) or relu2
#   RESULTS=... the results folder (default results/scratch/paper); commit the records under results/h200/paper/
# Several attentions at once, each a stacked group in a process of its own: one group of five seeds leaves most of an
# H200 idle (small float32 kernels), so the groups share it under MPS. They run in the background (setsid), so they
# outlive the device call that started them while the machine stays warm (30 s after a call), and the next call
# waits for them; none needs a checkpoint to cross calls.
#   LIMIT_S=1500 bash scripts/gpu_paper.sh start ATTN[,ATTN...] [SEEDS] [ACT]   # each one's `run`, stopped at LIMIT_S
#   COPY_TO=$OUT bash scripts/gpu_paper.sh wait SECONDS   # until all have ended or SECONDS passed; a progress line a
#                                                         # minute; then the records and logs are copied to COPY_TO
# The table: mha, mdha, rmha, rcmha at relu; the ablation adds the same at relu2. Then:
#   attnbench report results/h200/paper   (paper table, Welch + Holm claims, the 2×2×2 ablation)
set -euo pipefail
cd "$(dirname "$0")/.."
export ATTNBENCH_DATA="${ATTNBENCH_DATA:-$(pwd)/../shared/data/tinyshakespeare/input.txt}"
RESULTS="${RESULTS:-results/scratch/paper}"
stage="${1:?stage: run ATTN [SEEDS] [ACT] | start ATTN[,ATTN...] [SEEDS] [ACT] | wait SECONDS}"
case "$stage" in
  run)
    attn="${2:?ATTN}" seeds="${3:-5}" act="${4:-relu}"
    ckpt="${CKPT:-checkpoints/paper}" mark="${CKPT:-checkpoints/paper}/run-$attn-$seeds-$act"
    mkdir -p "$ckpt"
    if [ -s "$mark" ] && [ -d "$(cat "$mark")" ]; then
      args=(--resume "$(cat "$mark")" --results-dir "$RESULTS")
    else
      args=(--preset paper --attn "$attn" --seeds "$seeds" --act "$act" --device "${DEVICE:-cuda}" --results-dir "$RESULTS"
            --checkpoints-dir "$ckpt" --format markdown)
    fi
    set +e
    timeout -s INT "${LIMIT_S:-570}" python -m attnbench train "${args[@]}"
    rc=$?
    set -e
    if [ "$rc" = 0 ]; then rm -f "$mark"
    elif [ ! -s "$mark" ]; then ls -td "$ckpt"/*/ 2>/dev/null | head -1 | sed 's:/$::' > "$mark"; fi
    exit "$rc" ;;
  start)
    attns="${2:?ATTN[,ATTN...]}" seeds="${3:-5}" act="${4:-relu}"
    bg="${CKPT:-checkpoints/paper}/bg"
    mkdir -p "$bg"
    if [ "${MPS:-1}" = 1 ] && command -v nvidia-cuda-mps-control >/dev/null && [ "$(id -u)" = 0 ] \
       && ! pgrep -x nvidia-cuda-mps >/dev/null; then
      nvidia-cuda-mps-control -d && echo "MPS control daemon started"
    fi
    for attn in ${attns//,/ }; do
      log="$bg/run-$attn-$seeds-$act.log"
      setsid nohup bash "$0" run "$attn" "$seeds" "$act" >"$log" 2>&1 </dev/null &
      echo $! >"$bg/run-$attn-$seeds-$act.pid"
      echo "started $attn seeds 0-$((seeds - 1)) act $act (pid $!, stopped at ${LIMIT_S:-570} s), log $log"
    done ;;
  wait)
    limit="${2:?SECONDS}" bg="${CKPT:-checkpoints/paper}/bg" t0=$SECONDS
    alive() { for f in "$bg"/*.pid; do [ -e "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && return 0; done; return 1; }
    while alive && [ $((SECONDS - t0)) -lt "$limit" ]; do
      sleep 5
      if [ $(((SECONDS - t0) % 60)) -lt 5 ]; then
        for log in "$bg"/*.log; do
          echo "$(date -u +%T) $(basename "$log" .log): $(grep -E 'step [0-9]+:' "$log" | tail -1 | sed 's/^ *//')"
        done
      fi
    done
    for log in "$bg"/*.log; do echo "== $log"; tail -25 "$log"; done
    if [ -n "${COPY_TO:-}" ]; then mkdir -p "$COPY_TO/logs" && cp -r "$RESULTS" "$COPY_TO"/ && cp "$bg"/*.log "$COPY_TO/logs/"; fi
    if alive; then echo "still running after $limit s"; exit 3; fi ;;
  *) echo "unknown stage $stage (run ATTN [SEEDS] [ACT] | start ATTN[,ATTN...] [SEEDS] [ACT] | wait SECONDS)" >&2
     exit 2 ;;
esac
