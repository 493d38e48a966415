#!/usr/bin/env bash
# The Fashion-MNIST experiment on a CPU: three searches over the 13-op space (seeds 0-2),
# one cost-aware search, then every cell retrained on full Fashion-MNIST (60k/10k) with
# three training seeds against the DARTS baselines and five random cells; a table, Pareto
# plots and one HTML report (experiments/pipeline.sh).
#
#   bash experiments/fashion_mnist_cpu/run.sh            # the real run (about 2 h, 2 cores)
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
SEARCH_ARGS=()
COMPARE_ARGS=()
if [[ "${1:-}" == "--smoke" ]]; then  # proves the pipeline; says nothing about the cells
  RUNS="${RUNS:-$HERE/runs-smoke}"
  RESULTS="${RESULTS:-$HERE/runs-smoke/results}"
  SEARCH_ARGS=(data.name=fashion_mnist_sample data.limit=256 optim.epochs=1
               arch.warmup_epochs=0 model.layers=3 model.init_channels=4)
  COMPARE_ARGS=(train.data.name=fashion_mnist_sample train.data.limit=512
                train.data.test_limit=200 train.optim.epochs=1 train.model.layers=3
                train.model.init_channels=4 "seeds=[0,1]")
fi
RUNS="${RUNS:-$HERE/runs}"
RESULTS="${RESULTS:-$HERE/results}"
source "$HERE/../pipeline.sh"
