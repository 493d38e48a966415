#!/usr/bin/env bash
# The Fashion-MNIST experiment in about half the wall time of run.sh on a 2-core CPU: two
# single-thread streams side by side, then run.sh once more to assemble (it reuses every
# finished search and training run, measures latency on the then-quiet machine, writes the
# table, plots and report).
#
# Why: at this size one training job gains little from a second thread (DARTS_V2, C=8,
# 4 cells, batch 128, 28x28: 380 img/s with 2 threads, 346 with 1, measured 2026-12-04),
# so two one-thread jobs do nearly twice the work of one two-thread job.
#
#   bash experiments/fashion_mnist_cpu/run_parallel.sh [--smoke]
#
# Stream A: the β-DARTS searches (4 seeds), then the searched and cost-aware cells, the
# plain-DARTS cells and DARTS_V2 (β-DARTS's cells are all convolutions: the slowest).
# Stream B: the cost-aware searches (3 seeds), then PC_DARTS, O_DARTS, DO_DARTS,
# C2SP_DARTS and the random cells.
# Each stream's commands and wall times go to $RESULTS/commands.txt and wall_times.tsv
# (steps A:... and B:...). Resumable like run.sh: run it again after a crash.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NAS="${NAS:-nas}"
SEARCH_SEEDS="${SEARCH_SEEDS:-[0,1,2,3]}"  # four β-DARTS cells: 4 vs 3 can reach p < 0.05
SEARCH_ARGS=()
COMPARE_ARGS=()
[[ "${1:-}" == "--smoke" ]] && source "$HERE/smoke.sh"
RUNS="${RUNS:-$HERE/runs}"
RESULTS="${RESULTS:-$HERE/results}"
export RUNS RESULTS SEARCH_SEEDS
mkdir -p "$RUNS" "$RESULTS"
TIMES="$RESULTS/wall_times.tsv"
[[ -f "$TIMES" ]] || printf 'step\tseconds\tstatus\n' > "$TIMES"

step() {  # step NAME CMD...: one thread, log the command and its wall time
  local name="$1"; shift
  local line="OMP_NUM_THREADS=1 $*"
  echo "${line//"$HERE/"/}" >> "$RESULTS/commands.txt"  # paths relative to the experiment
  local t0=$SECONDS rc=0
  OMP_NUM_THREADS=1 "$@" || rc=$?
  printf '%s\t%d\t%s\n' "$name" $((SECONDS - t0)) "$rc" >> "$TIMES"
  return "$rc"
}

# The same compare config run.sh uses, split by entry between the two streams; each
# (entry, seed) trains under <RUNS>/compare/<entry>/seed<N>, where run.sh finds it.
source "$HERE/../render_compare.sh"
compare_part() {  # compare_part REGEX: the entries whose name matches
  render_compare | awk -v keep="$1" \
      '/^  - \{name: / { n = $3; sub(/,$/, "", n); if (n !~ keep) next } { print }'
}
compare_part '^(searched|searched_cost|plain_darts|DARTS_V2)$' > "$RUNS/compare_a.yaml"
compare_part '^(PC_DARTS|O_DARTS|DO_DARTS|C2SP_DARTS|random)$' > "$RUNS/compare_b.yaml"
rm -f "$RUNS/.search_cost_done" "$RUNS/.search_cost_failed"

(
  step A:search_seeds "$NAS" -q search "$HERE/search.yaml" "seeds=$SEARCH_SEEDS" \
    "run_dir=$RUNS/search" "${SEARCH_ARGS[@]}"
  until [[ -f "$RUNS/.search_cost_done" ]]; do  # stream A's compare needs that genotype
    [[ -f "$RUNS/.search_cost_failed" ]] && exit 1
    sleep 10
  done
  step A:compare "$NAS" -q compare "$RUNS/compare_a.yaml" "run_dir=$RUNS/compare" \
    "${COMPARE_ARGS[@]}"
) > "$RUNS/stream_a.log" 2>&1 &
pid_a=$!
(
  step B:search_cost "$NAS" -q search "$HERE/search_cost.yaml" \
    "run_dir=$RUNS/search_cost" "${SEARCH_ARGS[@]}" || { touch "$RUNS/.search_cost_failed"; exit 1; }
  touch "$RUNS/.search_cost_done"
  step B:compare "$NAS" -q compare "$RUNS/compare_b.yaml" "run_dir=$RUNS/compare" \
    "${COMPARE_ARGS[@]}"
) > "$RUNS/stream_b.log" 2>&1 &
pid_b=$!
rc=0
wait "$pid_a" || rc=$?
wait "$pid_b" || rc=$?
(( rc == 0 )) || { echo "a stream failed ($rc): see $RUNS/stream_[ab].log" >&2; exit "$rc"; }
echo "both streams done; assembling with run.sh"
exec bash "$HERE/run.sh" "$@"
