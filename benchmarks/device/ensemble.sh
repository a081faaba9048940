#!/usr/bin/env bash
# `residuals bench ensemble --preset fashion-mnist` on one GPU, sized to about a minute.
#
#   bash benchmarks/device/ensemble.sh RESULTS_DIR          # on a CUDA machine
#   SMOKE=1 bash benchmarks/device/ensemble.sh /tmp/x       # the same logic, tiny, on the CPU
#
# Run from the repository root with fashion-mnist's official files in data/fashion-mnist/.
# The preset (ResNet-56, its plain twin, the stagewise ResNet-56, a 500-iteration booster,
# 15 epochs on 60k images) takes longer than this script's budget (BUDGET_S, 65 s), so it is run
# with smaller sizes given on the command line (every other setting is the preset's):
# 15k training images (a seeded subset; the 10k test images stay whole), 5 epochs for the
# end-to-end nets, 1 epoch per block for the stagewise net (27 blocks: 27 trainer calls, the
# longest family), a booster of 40 iterations of depth-3 trees (GPU hist fits measured
# 50 ms a tree at 1M x 50 on this machine), 5 random draws per number of deleted blocks,
# one seed, the four families trained at once (--jobs 4). The bench writes its tables after every finished model, so
# a run cut short by the time limit still leaves the finished models' tables, and the
# report is (re)built from them at the end.
set -u
results=${1:?usage: ensemble.sh RESULTS_DIR}
mkdir -p "$results"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
log="$results/ensemble.log"
say() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$log"; }

# the caller's budget (BUDGET_S seconds, default 65: benchmarks/device/all.sh gives 70 - 5);
# 12 s of it are kept for rebuilding the report of a run cut short
total=${BUDGET_S:-65}
if [ "${SMOKE:-0}" = 1 ]; then
  total=${BUDGET_S:-200}
  sizes=(--device cpu --jobs 2 --depth 8 --train-size 1000 --test-size 500 --epochs 2
         --stage-epochs 1 --n-estimators 5 --max-depth 2 --draws 2)
else
  sizes=(--device cuda --jobs 4 --train-size 15000 --epochs 5 --stage-epochs 1
         --n-estimators 40 --max-depth 3 --draws 5)
fi
budget=$(( total - 12 ))
say "commit ${RESIDUALS_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}, smoke=${SMOKE:-0}, bench budget ${budget}s"

start=$(date +%s)
timeout -k 3 "$budget" python3 -m residuals bench ensemble --preset fashion-mnist \
  --data-dir data --out "$results/reports" "${sizes[@]}" >>"$log" 2>&1
say "bench rc=$? in $(( $(date +%s) - start ))s"

run=$(ls -d "$results"/reports/*-ensemble-* 2>/dev/null | tail -n 1)
if [ -z "$run" ]; then
  say "no run folder was written"; exit 1
fi
# a run stopped by the time limit has its finished models' tables but no page yet
if [ ! -f "$run/index.html" ] || ! grep -q '"status": "complete"' "$run/meta.json"; then
  timeout -k 1 9 python3 -m residuals report build "$run" >>"$log" 2>&1 \
    || say "report build failed"
fi
for table in lesions staged contributions models; do
  cp "$run/$table.csv" "$results/" 2>/dev/null || say "no $table.csv"
done
cp "$run/meta.json" "$results/meta.json" 2>/dev/null
rm -rf "$run/checkpoints"   # model weights: not results
python3 - "$run" >>"$log" 2>&1 <<'EOF' || say "summary failed"
import json, sys
meta = json.load(open(f"{sys.argv[1]}/meta.json"))
print("status:", meta.get("status"), "wall_s:", meta.get("wall_s"))
print("headline:", meta.get("headline"))
EOF
say "done"
