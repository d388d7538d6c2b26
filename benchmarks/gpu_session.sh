#!/usr/bin/env bash
# One lease on a lent CUDA GPU, as a single prepared command: the CUDA tests, then each benchmark
# on the GPU, then a full-recipe smoke run with --device cuda. Every step has its own time limit
# and the whole script a deadline (BUDGET_S), so a slow step cannot eat the rest.
#
#   OUT=/tmp/gpu BUDGET_S=420 bash benchmarks/gpu_session.sh
#   STEPS="tests unet" bash benchmarks/gpu_session.sh     # some steps only
#   STEPS="tests pipeline_graph grid grid_compile" BUDGET_S=540 bash benchmarks/gpu_session.sh
#
# Logs and JSON go to $OUT (session.log holds every step's output). Packages the GPU machine lacks
# can be put as wheels in .whl/ (ignored by git); they are installed to /tmp/site first.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/contrastlocal_gpu}
BUDGET_S=${BUDGET_S:-420}
STEPS=${STEPS:-"tests pipeline pipeline_graph global_loss local_loss unet data acdc_smoke grid pipeline_compile grid_compile"}
mkdir -p "$OUT"
LOG="$OUT/session.log"
START=$(date +%s)
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"

step() {  # step NAME LIMIT_S COMMAND...
  local name=$1 limit=$2 left
  shift 2
  case " $STEPS " in *" $name "*) ;; *) return ;; esac
  left=$((BUDGET_S - ($(date +%s) - START)))
  if [ "$left" -lt 20 ]; then
    echo "== $name: skipped (${left} s of the budget left)" | tee -a "$LOG"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit} s)" >> "$LOG"
  local t0=$(date +%s)
  timeout "$limit" "$@" >> "$LOG" 2>&1
  local rc=$?
  echo "== $name: rc=$rc in $(( $(date +%s) - t0 )) s" | tee -a "$LOG"
}

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__,
torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'NO CUDA')"
} 2>&1 | tee -a "$LOG"

step tests 150 python3 -m pytest -q -p no:cacheprovider -o addopts="" -rs \
  --junitxml="$OUT/tests.xml" tests/test_gpu.py tests/test_train_step.py \
  tests/training/test_step_mode.py tests/data/test_augment.py tests/functional -k "cuda or cupy"
step pipeline 120 python3 benchmarks/bench_pipeline.py --device cuda --iterations 200 \
  --json "$OUT/pipeline.json"
step pipeline_graph 150 python3 benchmarks/bench_pipeline.py --device cuda --iterations 300 \
  --step-mode cuda_graph --json "$OUT/pipeline_graph.json"
step global_loss 60 python3 benchmarks/bench_global_loss.py --device cuda --repeat 20 \
  --json "$OUT/global_loss.json"
step local_loss 60 python3 benchmarks/bench_local_loss.py --device cuda --rows 80 512 \
  --repeat 20 --json "$OUT/local_loss.json"
step unet 110 python3 benchmarks/bench_unet.py --device cuda --repeat 10 --json "$OUT/unet.json"
step data 60 python3 benchmarks/bench_data.py --device cuda --json "$OUT/data.json"
step acdc_smoke 90 python3 examples/acdc_full.py --smoke --device cuda
step grid 150 python3 benchmarks/bench_grid.py --device cuda --json "$OUT/grid.json"
step pipeline_compile 180 python3 benchmarks/bench_pipeline.py --device cuda --iterations 200 \
  --step-mode compile --json "$OUT/pipeline_compile.json"
step grid_compile 240 python3 benchmarks/bench_grid.py --device cuda --compile --concurrent 8 \
  --repeat 100 --json "$OUT/grid_compile.json"
echo "total $(( $(date +%s) - START )) s" | tee -a "$LOG"
