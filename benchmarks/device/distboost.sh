#!/usr/bin/env bash
# The distributed hist booster's speed-up on a quiet many-core machine: 1 gloo rank
# against 2 on 1M x 20 rows, each rank one thread pinned to core 0 or 1
# (taskset -c 0,1), and the time of its multi-process tests on those two cores.
#
#   bash benchmarks/device/distboost.sh RESULTS_DIR             # BUDGET_S (150) seconds
#   SMOKE=1 bash benchmarks/device/distboost.sh /tmp/distboost  # tiny sizes: the logic only
#
# Run from the repository root with the C extension built (python setup.py build_ext
# --inplace). Writes RESULTS_DIR/STEP/boosting_distributed{.csv,-fits.csv,.json} and a log
# per step; every fit is printed as it ends, and a failed or stopped step never stops the next.
set -u
out=${1:?usage: distboost.sh RESULTS_DIR}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
log="$out/distboost.log"
budget=${BUDGET_S:-150}
deadline=$(( $(date +%s) + budget ))
say() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$log"; }

# step NAME SECONDS COMMAND...: at most SECONDS (less if the deadline comes first)
step() {
  local name=$1 seconds=$2 left
  shift 2
  left=$(( deadline - $(date +%s) ))
  (( seconds > left )) && seconds=$left
  if (( seconds < 20 )); then say "$name: skipped (${left}s left)"; return; fi
  say "$name: start (${seconds}s): $*"
  timeout -k 5 "$seconds" taskset -c 0,1 "$@" >"$out/$name.log" 2>&1
  say "$name: rc=$? (124: stopped at its deadline; the fits done are in $name.log)"
  tail -n 6 "$out/$name.log" | tee -a "$log"
}

say "commit ${RESIDUALS_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}, $(nproc) cores, budget ${budget}s"
bench=(python3 benchmarks/boosting_distributed.py --cores 0,1)
if [ "${SMOKE:-0}" = 1 ]; then
  step smoke 120 "${bench[@]}" --rows 20000 --n-estimators 3 --repeats 1 --out "$out/smoke"
else
  trees=$(( budget >= 150 ? 40 : 20 ))
  step 1m-x20 $(( budget - 70 )) "${bench[@]}" --rows 1000000 --features 20 --n-estimators "$trees" \
    --max-depth 6 --repeats 2 --out "$out/1m-x20"
  step tests 60 python3 -m pytest -q -p no:cacheprovider --durations=0 tests/test_boosting_distributed.py
fi
