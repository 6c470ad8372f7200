#!/usr/bin/env bash
# The whole test suite on a GPU machine, in one go (issue 14): every CPU test, the GPU-only tests (CUDA-graph training
# step and `speed --cuda-graph`, the NaN stop under the graphed step), and the Triton interpreter tests, which
# tests/test_interpreted.py runs in a process of their own (with the GPU hidden from them).
#   - pytest's whole output goes to the screen and, when OUT is set, to $OUT/gpu-tests.txt;
#   - $OUT/gpu-tests-summary.txt: machine, versions, commit, the command, the skip reasons and failures, pytest's
#     summary line and exit code (the file to commit under results/);
#   - pytest's summary line is the last line printed; the exit code is pytest's.
# Tests that train on Tiny Shakespeare look for it as tests/testdata.py says ($ATTNBENCH_TEST_CORPUS,
# ../shared/data/tinyshakespeare/input.txt, or shared/data/tinyshakespeare/input.txt inside the repository); without
# it they are skipped, and the summary says so.
# The commit: ATTNBENCH_GIT_COMMIT when the copy has no .git (as on a lent GPU machine).
# Usage, from the repository root:  bash scripts/gpu_tests.sh [more pytest arguments]
set -u
PY=${PYTHON:-python}
cd "$(dirname "$0")/.." || exit 2

missing=$($PY - <<'EOF'
import importlib.util as u
print(" ".join(m for m in ("torch", "pytest", "hypothesis", "typer", "rich", "tabulate", "pynvml", "numpy", "triton")
               if u.find_spec(m) is None))
EOF
)
if [ -n "$missing" ]; then
  echo "error: not installed here: $missing (pip install -e '.[test]'; triton comes with torch's CUDA wheels)" >&2
  exit 2
fi
if ! $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "error: torch sees no CUDA GPU; this script is for a GPU machine (on CPU: python -m pytest)" >&2
  exit 2
fi

header=$(PYTHONPATH="$PWD:$PWD/tests${PYTHONPATH:+:$PYTHONPATH}" $PY - <<'EOF'
import platform, sys

import numpy, torch, triton

from attnbench.results import git_commit
from testdata import CORPUS

names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
print(f"# attnbench test suite on a GPU machine (scripts/gpu_tests.sh)")
print(f"commit: {git_commit() or 'unknown (set ATTNBENCH_GIT_COMMIT)'}")
print(f"gpus: {torch.cuda.device_count()} x {', '.join(names)}")
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"triton {triton.__version__}, numpy {numpy.__version__}")
print(f"corpus: {CORPUS}" if CORPUS.is_file() else
      f"corpus: not found ({CORPUS}): the tests that train on it are skipped")
EOF
)
# pytest-xdist workers (-n N) share the host's cores: each worker's torch would otherwise start one thread per core
# (8 x 16 threads on 16 cores under -n 8, the likely reason that run crawled), so each gets its share unless
# OMP_NUM_THREADS is set.
workers=$(printf '%s\n' "$@" | sed -n 's/^-n\([0-9]\+\)$/\1/p; /^-n$/{n;s/^\([0-9]\+\)$/\1/p}' | tail -1)
if [ -n "$workers" ] && [ "$workers" -gt 0 ] && [ -z "${OMP_NUM_THREADS:-}" ]; then
  export OMP_NUM_THREADS=$(( $(nproc) / workers > 0 ? $(nproc) / workers : 1 ))
fi
log=$(mktemp)
cmd=("$PY" -m pytest -rs -p no:cacheprovider "$@")
threads="OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}"
echo "$header"
echo "command: $threads ${cmd[*]}"
"${cmd[@]}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
# pytest's summary line: decorated with '=' by default, bare under -q
summary=$(grep -E '^(=+ )?[0-9]+ (passed|failed|skipped|error).*( in [0-9.]+s.*|no tests ran)( =+)?$' "$log" | tail -1 |
          sed -E 's/^=+ //; s/ =+$//')
[ -n "$summary" ] || summary="no summary line (pytest exit code $rc)"

if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  cp "$log" "$OUT/gpu-tests.txt"
  {
    echo "$header"
    echo "command: $threads ${cmd[*]}"
    echo
    sed -n '/short test summary info/,$p' "$log" | grep -E '^(SKIPPED|FAILED|ERROR|XFAIL|XPASS)' || true
    echo
    echo "exit code: $rc"
    echo "$summary"
  } > "$OUT/gpu-tests-summary.txt"
fi
rm -f "$log"
echo "$summary"
exit "$rc"
