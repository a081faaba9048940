#!/usr/bin/env bash
# Fused training on one GPU (issue 14): the fashion-mnist preset end to end with 3 seeds fused,
# then images/s and %peak of N = 1..24 ResNet-20s fused vs N processes vs one net at a time,
# with the bf16 matmul peak measured in the same run.
#
#   bash benchmarks/device/fused.sh RESULTS_DIR          # from the repository root, BUDGET_S s
#   SMOKE=1 bash benchmarks/device/fused.sh /tmp/fused   # tiny sizes on the CPU (logic check)
#
# Needs PYTHONPATH=. and fashion-mnist's official files in data/fashion-mnist/. Every step is
# guarded by `timeout`; a failed step is logged and the next one runs.
set -u
results=${1:?usage: fused.sh RESULTS_DIR}
mkdir -p "$results"
export OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
log="$results/fused.log"
say() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$log"; }
step() {  # step NAME SECONDS COMMAND...: run, time, log; never stop the script
  local name=$1 budget=$2; shift 2
  say "start $name (budget ${budget}s): $*"
  local start=$(date +%s.%N)
  timeout -k 5 "$budget" "$@" >"$results/$name.log" 2>&1
  local rc=$?
  local secs=$(python3 -c "import time; print(round(time.time() - $start, 1))")
  say "end $name rc=$rc in ${secs}s"
  echo "$name,$rc,$secs" >>"$results/steps.csv"
}
echo "step,rc,wall_s" >"$results/steps.csv"
say "commit ${RESIDUALS_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"

if [ "${SMOKE:-0}" = 1 ]; then
  device=cpu
  sweep=(--preset digits --depths 8,14 --seeds 1 --epochs 1)
  bench=(--depth 8 --image-shape 1 8 8 --members 1 2 --process-members 1 --steps 2 --repeats 1
         --batch-size 8 --peak-n 256)
  paper=(--steps 2 --repeats 1 --batch-size 8 --peak-n 256)
  sweep_budget=120; bench_budget=120; paper_budget=120
else
  device=cuda
  sweep=(--preset fashion-mnist --seeds 3 --data-dir data)
  bench=(--depth 20 --image-shape 1 28 28 --members 1 2 4 8 16 24 --process-members 1 2 4 8
         --steps 15 --repeats 2)
  paper=(--steps 10 --repeats 2)
  # the caller's budget (BUDGET_S, default 135 s) shared out: half to the sweep, a third to
  # the table, the rest to the projection
  total=${BUDGET_S:-135}
  sweep_budget=$(( total * 50 / 100 )); bench_budget=$(( total * 33 / 100 ))
  paper_budget=$(( total * 14 / 100 ))
fi

# 1. the goal: the fashion-mnist preset with 3 seeds (24 runs), fused, end to end (60 s or less)
step sweep "$sweep_budget" python3 -m residuals bench degradation "${sweep[@]}" --device "$device" \
  --fuse on --out "$results/sweep"
tail -n 3 "$results/sweep.log" | tee -a "$log"

# 2. the table: fused vs N processes vs one at a time, %peak of the measured matmul peak
#    (rounds are saved as they finish: throughput/fused_throughput-rounds.csv)
step throughput "$bench_budget" python3 benchmarks/fused_throughput.py "${bench[@]}" \
  --device "$device" --out "$results/throughput"
tail -n 25 "$results/throughput.log" | tee -a "$log"

# 3. the CIFAR-10 paper preset (plain + residual at 20/32/44/56/110), projected from fused
#    steps (goal: 10 minutes or less)
step paper "$paper_budget" python3 benchmarks/fused_throughput.py --paper-only "${paper[@]}" \
  --device "$device" --out "$results/paper"
tail -n 8 "$results/paper.log" | tee -a "$log"
say "done"
