#!/usr/bin/env bash
# The paper-scale experiment on CIFAR-10, one GPU: four 50-epoch PC-DARTS-style searches
# with β-DARTS over the 13-op space (seeds 0-3), one cost-aware search and three plain-DARTS
# searches (seeds 0-2); then the DARTS recipe (36 channels, 20 cells, 600 epochs) for the
# searched cells, DARTS_V1/V2, PC-DARTS, P-DARTS, o-DARTS (42 channels), DO-DARTS,
# C2SP-DARTS and eight random cells, three training seeds each; a table, Pareto plots and
# one HTML report (experiments/pipeline.sh).
#
#   bash experiments/cifar10_gpu/run.sh           # one part: at most PART_SECONDS (480)
#   PART_SECONDS=0 bash experiments/cifar10_gpu/run.sh   # everything in one go
#
# CIFAR-10 must already be under data.root (torchvision layout; DATA_ROOT, default ./data)
# or downloadable. Each call works for at most PART_SECONDS, stops the running step
# cleanly (it checkpoints; SIGTERM), exits with status 3 while work remains and 0 when the
# whole experiment is done: call it again until it returns 0.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NAS="${NAS:-nas}"
PART_SECONDS="${PART_SECONDS:-480}"
SEARCH_SEEDS="${SEARCH_SEEDS:-[0,1,2,3]}"  # four β-DARTS cells: 4 vs 3 can reach p < 0.05
DATA_ROOT="${DATA_ROOT:-data}"
SEARCH_ARGS=("data.root=$DATA_ROOT")
COMPARE_ARGS=("train.data.root=$DATA_ROOT")
RUNS="${RUNS:-$HERE/runs}"
RESULTS="${RESULTS:-$HERE/results}"
source "$HERE/../pipeline.sh"
