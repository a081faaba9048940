#!/usr/bin/env bash
# Every GPU and many-core measurement of the project in one run, on one CUDA machine.
#
#   bash benchmarks/device/all.sh RESULTS_DIR
#
# Run from the repository root, with fashion-mnist's official files in data/fashion-mnist/
# and, optionally, wheels of packages the machine lacks (LightGBM) in .whl/. Each topic's
# script (benchmarks/device/TOPIC.sh) writes its tables and log under RESULTS_DIR/TOPIC and
# keeps to its own time budget (given to it as BUDGET_S seconds); one failed topic never stops the others. At the end the
# results are packed into RESULTS_DIR.tar.gz.
set -u
results=${1:?usage: all.sh RESULTS_DIR}
mkdir -p "$results"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
log="$results/all.log"
say() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$log"; }

if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl >>"$log" 2>&1 && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
export RESIDUALS_COMMIT=${RESIDUALS_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
say "commit $RESIDUALS_COMMIT"
{ nvidia-smi; nproc; python3 -c 'import torch, sklearn; print(torch.__version__, sklearn.__version__)'; } \
  >"$results/machine.txt" 2>&1
python3 setup.py build_ext --inplace >"$results/build.log" 2>&1 || say "C extension: build failed"

# topic  seconds
topics=${TOPICS:-"gpu-tests:90 boosting:140 fused:140 train:90 ensemble:70"}
for item in $topics; do
  topic=${item%%:*}; budget=${item##*:}
  mkdir -p "$results/$topic"
  say "start $topic (budget ${budget}s)"
  start=$(date +%s)
  if [ "$topic" = gpu-tests ]; then
    # -v: each test's verdict is written as it ends, so a run cut by its budget still says
    # which tests passed; a test's own limit keeps one hang from eating the budget
    timeout -k 5 "$budget" python3 -m pytest -v -m gpu -p no:cacheprovider -rfEs --tb=short \
      $(python3 -c 'import pytest_timeout' 2>/dev/null && echo --timeout=60) \
      >"$results/$topic/pytest.log" 2>&1
  elif [ -f "benchmarks/device/$topic.sh" ]; then
    BUDGET_S=$(( budget - 5 )) timeout -k 5 "$budget" bash "benchmarks/device/$topic.sh" "$results/$topic" \
      >"$results/$topic/run.log" 2>&1
  else
    echo "no script benchmarks/device/$topic.sh" >"$results/$topic/run.log"; false
  fi
  rc=$?
  say "end $topic rc=$rc in $(( $(date +%s) - start ))s"
done
tar czf "$results.tar.gz" -C "$(dirname "$results")" "$(basename "$results")"
say "packed $results.tar.gz"
