#!/usr/bin/env bash
# The Fashion-MNIST experiment on a CPU: four β-DARTS searches over the 13-op space (seeds
# 0-3) and three cost-aware ones, then every cell retrained (a seeded 10k subset of the 60k
# for 3 epochs, the full 10k test set, training seeds 0-2) beside plain DARTS's committed
# cells, the DARTS baselines and eight random cells; a table, significance tests, Pareto
# plots and one HTML report (experiments/pipeline.sh).
#
#   bash experiments/fashion_mnist_cpu/run.sh            # one stream (run_parallel.sh: two, ~1 h 50 min)
#   bash experiments/fashion_mnist_cpu/run.sh --smoke    # the same pipeline, tiny (minutes)
#
# Resumable: every step reuses finished work; after a crash or Ctrl-C run it again.
# Runs: $RUNS (default experiments/fashion_mnist_cpu/runs, git-ignored). Committable
# results (tables, plots, genotypes, summaries, report, commands, wall times, machine):
# $RESULTS (default experiments/fashion_mnist_cpu/results).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NAS="${NAS:-nas}"
PART_SECONDS="${PART_SECONDS:-0}"
SEARCH_SEEDS="${SEARCH_SEEDS:-[0,1,2,3]}"  # four β-DARTS cells: 4 vs 3 can reach p < 0.05
SEARCH_ARGS=()
COMPARE_ARGS=()
[[ "${1:-}" == "--smoke" ]] && source "$HERE/smoke.sh"  # tiny; says nothing about the cells
RUNS="${RUNS:-$HERE/runs}"
RESULTS="${RESULTS:-$HERE/results}"
source "$HERE/../pipeline.sh"
