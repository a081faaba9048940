#!/usr/bin/env bash
# The booster on a GPU machine: GPU fit times and memory, and the CPU thread-scaling table.
#
#   bash benchmarks/device/boosting.sh RESULTS_DIR            # BUDGET_S seconds (default 175)
#   SMOKE=1 bash benchmarks/device/boosting.sh /tmp/boosting  # tiny sizes on the CPU: the logic only
#
# Run from the repository root with the C extension built (python setup.py build_ext
# --inplace). Every step is benchmarks/boosting_speed.py under `timeout`, in priority
# order, within one overall deadline; each writes its CSV/JSON tables under RESULTS_DIR/STEP
# after every fit, so a step stopped by its deadline keeps what it measured, and a failed
# step never stops the next. LightGBM joins the comparisons when it can be imported.
set -u
out=${1:?usage: boosting.sh RESULTS_DIR}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
log="$out/boosting.log"
deadline=$(( $(date +%s) + ${BUDGET_S:-175} - 4 ))  # a step may overrun its timeout by 3 s
say() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$log"; }

# step NAME SECONDS ARGS...: boosting_speed.py ARGS --out RESULTS_DIR/NAME, for at most
# SECONDS (less if the overall deadline comes first)
step() {
  local name=$1 budget=$2 left
  shift 2
  left=$(( deadline - $(date +%s) ))
  (( budget > left )) && budget=$left
  if (( budget < 10 )); then say "$name: skipped (${left}s left)"; return; fi
  say "$name: start (${budget}s): $*"
  timeout -k 3 "$budget" python3 benchmarks/boosting_speed.py "$@" --markdown --out "$out/$name" \
    >"$out/$name.log" 2>&1
  say "$name: rc=$? (124: stopped at its deadline; the fits done are in $out/$name)"
}

# script NAME FILE SECONDS ARGS...: benchmarks/FILE ARGS --out RESULTS_DIR/NAME, for at most
# SECONDS (less if the overall deadline comes first)
script() {
  local name=$1 file=$2 budget=$3 left
  shift 3
  left=$(( deadline - $(date +%s) ))
  (( budget > left )) && budget=$left
  if (( budget < 10 )); then say "$name: skipped (${left}s left)"; return; fi
  say "$name: start (${budget}s): $file $*"
  timeout -k 3 "$budget" python3 "benchmarks/$file" "$@" --out "$out/$name" >"$out/$name.log" 2>&1
  say "$name: rc=$?"
}

say "commit ${RESIDUALS_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}, $(nproc) cores"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' >>"$log" 2>&1
python3 -c 'import triton; print("triton", triton.__version__)' >>"$log" 2>&1 || say "no triton: torch fallback"
if python3 -c 'import lightgbm' 2>/dev/null; then lgbm=,lightgbm; else lgbm=; say "no lightgbm"; fi

if [ "${SMOKE:-0}" = 1 ]; then  # the same steps, tiny, on the CPU
  step gpu-1m 60 --sizes 2000x10 --depths 3 --n-estimators 5 --methods hist --device cpu --threads 2 --repeats 2
  step gpu-10m 60 --sizes 3000x10 --depths 3 --n-estimators 5 --methods hist --device cpu --threads 2 --repeats 1
  step scaling 120 --sizes 2000x10 --depths 3 --n-estimators 5 --methods "hist,hgb$lgbm" --device cpu \
    --threads 1,2 --repeats 1
  step lightgbm-16 60 --sizes 2000 --depths 3 --n-estimators 5 --methods "hist,hgb$lgbm" --device cpu \
    --threads 2 --repeats 1
  script profile hist_profile.py 60 --rows 5k --features 10 --depth 4 --trees 5 --device cpu
  script parts hist_threads.py 60 --rows 20k --features 10 --depth 4 --trees 5 --threads 1,2 --repeats 1
else
  # the GPU goals: 1M x 50, depth 6, 100 trees in 0.5 s; 10M x 50 in 3 s; memory
  step gpu-1m 30 --sizes 1mx50 --depths 6 --methods hist --device cuda --threads 16 --repeats 2 --timeout 20
  # where the GPU fit's time goes: per op (torch.profiler) and per Python function (cProfile)
  script profile hist_profile.py 25 --rows 1m --features 50 --depth 6 --trees 20 --device cuda
  step gpu-10m 35 --sizes 10mx50 --depths 6 --methods hist --device cuda --threads 16 --repeats 1 --timeout 30
  # thread scaling at 1M x 50, depth 6 (10 trees: what the budget allows), every method
  step scaling 45 --sizes 1mx50 --depths 6 --n-estimators 10 --methods "hist,hgb$lgbm" --device cpu \
    --threads 1,2,4,8,16 --repeats 1 --timeout 12
  # 16 threads against LightGBM at 100k x 20 (100 trees), with the time left
  step lightgbm-16 20 --sizes 100k --depths 6,3 --methods "hist$lgbm" --device cpu --threads 16 \
    --repeats 1 --timeout 8
  # where a CPU fit's time goes at 1 and 16 threads: each C loop, and the serial rest
  script parts hist_threads.py 30 --rows 1m --features 50 --depth 6 --trees 10 --threads 1,16 \
    --repeats 1
fi
say "done"
