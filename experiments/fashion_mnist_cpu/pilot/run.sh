#!/usr/bin/env bash
# The pilot behind compare.yaml's recipe: DARTS_V2 and the first random cell, training
# seeds 0-2, on a seeded 10,000-image subset for 1, 3 and 5 epochs, as two one-thread
# streams (about 17 min on 2 cores); then the seed spread and what it lets the full run
# detect (../../seed_spread.py). Resumable: finished trainings are reused.
#
#   bash experiments/fashion_mnist_cpu/pilot/run.sh      # runs in RUNS (default pilot/runs)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NAS="${NAS:-nas}"
RUNS="${RUNS:-$HERE/runs}"
PYTHON="${PYTHON:-$(dirname "$(command -v "$NAS")")/python}"
mkdir -p "$RUNS"
train() {  # train EPOCHS: one compare run at that length
  OMP_NUM_THREADS=1 "$NAS" -q compare "$HERE/pilot.yaml" "train.optim.epochs=$1" \
    "run_dir=$RUNS/e$1" > "$RUNS/e$1.log" 2>&1
}
( train 5 ) & a=$!
( train 1 && train 3 ) & b=$!
wait "$a" && wait "$b"
"$PYTHON" "$HERE/../../seed_spread.py" "$RUNS"/e1 "$RUNS"/e3 "$RUNS"/e5 \
  --seeds 3 --groups 4:8 4:3 3:8 --out "$HERE/spread.md"
for e in 1 3 5; do cp "$RUNS/e$e/compare.csv" "$HERE/compare_e$e.csv"; done
