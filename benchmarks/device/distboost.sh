#!/usr/bin/env bash
# The distributed hist booster's speed-up on a quiet many-core machine: 1 gloo rank
# against 2, 1M x 20 rows, each rank pinned to one of the cores 0 and 1.
#
#   bash benchmarks/device/distboost.sh RESULTS_DIR            # ~4 minutes on 16 cores
#   SMOKE=1 bash benchmarks/device/distboost.sh /tmp/distboost # tiny sizes: the logic only
#
# Run from the repository root with the C extension built (python setup.py build_ext
# --inplace). Writes RESULTS_DIR/STEP/boosting_distributed{.csv,-fits.csv,.json} and a log
# per step; a failed or stopped step never stops the next.
set -u
out=${1:?usage: distboost.sh RESULTS_DIR}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
log="$out/distboost.log"
say() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$log"; }

# step NAME SECONDS ARGS...: boosting_distributed.py ARGS --out RESULTS_DIR/NAME
step() {
  local name=$1 budget=$2
  shift 2
  say "$name: start (${budget}s): $*"
  timeout -k 5 "$budget" taskset -c 0,1 python3 benchmarks/boosting_distributed.py "$@" \
    --cores 0,1 --out "$out/$name" >"$out/$name.log" 2>&1
  say "$name: rc=$? (124: stopped at its deadline)"
  tail -n 4 "$out/$name.log" | tee -a "$log"
}

say "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(nproc) cores"
if [ "${SMOKE:-0}" = 1 ]; then
  step smoke 120 --rows 20000 --n-estimators 3 --repeats 1
else
  step 1m-x20 ${BUDGET_S:-300} --rows 1000000 --features 20 --n-estimators 50 --max-depth 6 \
    --repeats 3
fi
