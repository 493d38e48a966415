# The experiment pipeline both experiments/<name>/run.sh scripts source (not run directly):
# searches (search.yaml over 3 seeds, search_cost.yaml, and search_plain.yaml over 3 seeds
# where the experiment has one) -> compare (searched cells, baselines, random cells under
# one recipe) -> report; then the committable results are copied out of the runs.
#
# Inputs (set by run.sh): HERE (the experiment folder with search.yaml, search_cost.yaml,
# compare.yaml), RUNS, RESULTS, NAS, SEARCH_ARGS / COMPARE_ARGS (arrays of overrides),
# SEARCH_SEEDS (search.yaml's seeds, default [0,1,2]), PART_SECONDS (0: no limit; else stop cleanly after that many seconds, status 3, and
# resume on the next call: every step reuses finished work).

mkdir -p "$RUNS" "$RESULTS"
SEARCH_SEEDS="${SEARCH_SEEDS:-[0,1,2]}"
NAS_BIN="$(command -v "$NAS")" || { echo "no $NAS command: pip install -e . first" >&2; exit 2; }
PYTHON="${PYTHON:-$(dirname "$NAS_BIN")/python}"  # the interpreter nas runs in
[[ -x "$PYTHON" ]] || PYTHON=python3
COMMANDS="$RESULTS/commands.txt"
TIMES="$RESULTS/wall_times.tsv"
START=$SECONDS
[[ -f "$TIMES" ]] || printf 'step\tseconds\tstatus\n' > "$TIMES"

step() {  # step NAME CMD...: run within what is left of the part, log command and time
  local name="$1"; shift
  local line="$*"
  line="${line//"$HERE/"/}"  # paths relative to the experiment folder, which is "."
  echo "${line//"$HERE"/.}" >> "$COMMANDS"
  local t0=$SECONDS rc=0
  if (( PART_SECONDS > 0 )); then
    local left=$(( PART_SECONDS - (SECONDS - START) ))
    if (( left < 30 )); then
      echo "part time used up before $name: run the same command again to go on"; exit 3
    fi
    timeout -s TERM -k 60 "$left" "$@" || rc=$?
  else
    "$@" || rc=$?
  fi
  printf '%s\t%d\t%s\n' "$name" $((SECONDS - t0)) "$rc" >> "$TIMES"
  if (( rc == 124 || rc == 143 )); then
    echo "part time used up during $name (checkpointed): run the same command again to go on"
    exit 3
  fi
  (( rc == 0 )) || { echo "step $name failed with status $rc" >&2; exit "$rc"; }
}

{  # the machine, best effort: a missing tool must not stop the experiment
  set +e
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "git: $(git -C "$HERE" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | xargs)"
  echo "cores: $(nproc 2>/dev/null)"
  echo "memory: $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo 2>/dev/null)"
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | sed 's/^/gpu: /'
  "$PYTHON" -c 'import platform, torch; print("python:", platform.python_version()); print("torch:", torch.__version__, "threads:", torch.get_num_threads())'
  echo "overrides: ${SEARCH_ARGS[*]} | ${COMPARE_ARGS[*]}"
  set -e
} >> "$RESULTS/machine.txt"

step search_seeds "$NAS" -q search "$HERE/search.yaml" "seeds=$SEARCH_SEEDS" \
  "run_dir=$RUNS/search" "${SEARCH_ARGS[@]}"
step search_cost "$NAS" -q search "$HERE/search_cost.yaml" \
  "run_dir=$RUNS/search_cost" "${SEARCH_ARGS[@]}"
if [[ -f "$HERE/search_plain.yaml" ]]; then  # plain DARTS, the group the default must beat
  step search_plain "$NAS" -q search "$HERE/search_plain.yaml" "seeds=[0,1,2]" \
    "run_dir=$RUNS/search_plain" "${SEARCH_ARGS[@]}"
fi
source "$(dirname "${BASH_SOURCE[0]}")/render_compare.sh"
render_compare > "$RUNS/compare.yaml"
# Committed results name files relative to the experiment folder, never by this machine's
# absolute paths (compare.csv, report.html).
step compare "$NAS" -q compare "$RUNS/compare.yaml" "run_dir=$RUNS/compare" \
  "paths_relative_to=$HERE" "${COMPARE_ARGS[@]}"
step report "$NAS" -q report "$RUNS/compare" --out "$RESULTS/report.html" \
  --paths-relative-to "$HERE"

# What to commit: small text and images, no checkpoints.
cp "$RUNS/compare/compare.md" "$RUNS/compare/compare.csv" "$RUNS/compare"/pareto_*.png "$RESULTS/"
# significance.md exists only when there is something to test (two training seeds or groups)
[[ -f "$RUNS/compare/significance.md" ]] && cp "$RUNS/compare/significance.md" "$RESULTS/"
cp "$RUNS/search/summary.md" "$RUNS/search/summary.json" "$RESULTS/"
if [[ -f "$RUNS/search_plain/summary.md" ]]; then
  cp "$RUNS/search_plain/summary.md" "$RESULTS/summary_plain.md"
  cp "$RUNS/search_plain/summary.json" "$RESULTS/summary_plain.json"
fi
mkdir -p "$RESULTS/genotypes"
for d in "$RUNS"/search/seed* "$RUNS"/search_cost "$RUNS"/search_cost/seed* \
         "$RUNS"/search_plain/seed*; do
  [[ -f "$d/genotype.yaml" ]] || continue  # a multi-seed folder itself, or no such search
  case "$d" in
    "$RUNS"/search/*) name="searched_$(basename "$d")" ;;
    "$RUNS"/search_cost) name="searched_cost" ;;
    "$RUNS"/search_cost/*) name="searched_cost_$(basename "$d")" ;;
    *) name="plain_darts_$(basename "$d")" ;;
  esac
  cp "$d/genotype.yaml" "$RESULTS/genotypes/$name.yaml"
  cp "$d/genotype_normal.png" "$RESULTS/genotypes/${name}_normal.png"
  cp "$d/genotype_reduce.png" "$RESULTS/genotypes/${name}_reduce.png"
done
echo "done: $RESULTS (total $((SECONDS - START)) s this call)"
cat "$RESULTS/compare.md"
[[ -f "$RESULTS/significance.md" ]] && cat "$RESULTS/significance.md"
exit 0  # the test above is false with one seed; that is not a failure
