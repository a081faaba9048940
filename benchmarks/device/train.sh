#!/usr/bin/env bash
# residuals train on one GPU: --recipe d2l-resnet18 (the d2l chapter: ResNet-18, Fashion-MNIST
# at 96x96, 10 epochs; the article reports test acc 0.893, 5032.7 examples/sec) beside the
# chapter's own loop (benchmarks/d2l_reference.py) on the same GPU, then --recipe tf-preact-elu
# (the TensorFlow article's BN-ELU net with Adam) on Fashion-MNIST. 90 s in all.
#
#   bash benchmarks/device/train.sh RESULTS_DIR                         # on a CUDA machine
#   SMOKE=1 DATA_DIR=DIR bash benchmarks/device/train.sh /tmp/x   # tiny, on the CPU
#
# Run from the repository root with PYTHONPATH=. and fashion-mnist's files in $DATA_DIR
# (default: data/fashion-mnist/). Each step has its own timeout and one failed step never
# stops the others; run folders keep every finished epoch even when a step is cut short.
# Writes RESULTS_DIR/runs/<run folders>, d2l_reference.{csv,json}, train_vs_d2l.{csv,json}
# and train.log (plus one log per step).
set -u
out=${1:?usage: train.sh RESULTS_DIR}
mkdir -p "$out/runs"
export PYTHONPATH=${PYTHONPATH:-.} OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
data=${DATA_DIR:-data}
log="$out/train.log"
say() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$log"; }
step() {  # step NAME SECONDS COMMAND...
  local name=$1 budget=$2; shift 2
  say "start $name (timeout ${budget}s): $*"
  local start; start=$(date +%s)
  timeout -k 3 "$budget" "$@" >"$out/$name.log" 2>&1
  say "end $name rc=$? in $(( $(date +%s) - start ))s"
  tail -n 4 "$out/$name.log" | tee -a "$log"
}

if [ "${SMOKE:-0}" = 1 ]; then
  ours=(--device cpu --dataset digits --resize 32 --epochs 1 --batch-size 64)
  ref=(--device cpu --limit 256 --epochs 1 --workers 0 --resize 32 --batch-size 64 --skip 1)
  tf=(--device cpu --dataset digits --epochs 1)
  t_ours=240 t_ref=240 t_tf=120
else
  ours=(--device cuda)
  ref=(--device cuda --seconds 8)
  tf=(--device cuda --epochs 2)
  t_ours=47 t_ref=16 t_tf=16
fi

step d2l-resnet18 "$t_ours" python3 -m residuals train --recipe d2l-resnet18 "${ours[@]}" \
  --data-dir "$data" --out "$out/runs" --no-report
step d2l-reference "$t_ref" python3 benchmarks/d2l_reference.py "${ref[@]}" \
  --data-dir "$data" --out "$out"
step tf-preact-elu "$t_tf" python3 -m residuals train --recipe tf-preact-elu "${tf[@]}" \
  --data-dir "$data" --out "$out/runs" --no-report
step summary 8 python3 benchmarks/train_vs_d2l.py --runs "$out/runs" \
  --reference "$out/d2l_reference.csv" --out "$out"
