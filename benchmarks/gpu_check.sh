#!/usr/bin/env bash
# GPU acceptance check: everything that needs CUDA, as one command of under 9 minutes on one
# H100/H200 (the step limits below add up to 540 s). Writes every benchmark's JSON + markdown
# and a summary into OUT.
#
#   bash benchmarks/gpu_check.sh OUT [--device cuda|cpu] [--smoke] [--darts-dir PATH]
#        [--pcdarts-dir PATH] [--wheels DIR]
#
# Steps (each under its own time limit; a failing step is recorded and the next one runs):
#   install   the project without dependencies (+ wheels from --wheels, e.g. optuna, pytest)
#   tests     the `gpu`-marked tests (only the files holding them are collected: the lean
#             device environment has no optuna, hypothesis or ray)
#   ops       operator benchmark, bf16 autocast, C=36/64
#   fused     supernet steps: reference MixedOp vs fused vs fused+compile vs CUDA graphs
#   peers     official DARTS / PC-DARTS against ours, batch 64 (when the checkouts are given)
#   train     DARTS_V2 retraining: ours (bf16; plain, and channels_last + compile) vs a DataLoader fp32 loop
#   dispatch  ATen operator calls of one search step (benchmarks/dispatch.py)
#   e2e       1-epoch search (13-op space, K=4, CIFAR-shaped synthetic data, 25k+25k images) and
#             a 1-epoch retrain, both bf16 + compile: wall times give the 50-epoch estimate
#
# --device cpu runs the same steps on the CPU; with --smoke every step runs at tiny sizes
# (seconds each; install only checks the imports instead of reinstalling) - the CI test
# tests/test_gpu_check_script.py runs `--device cpu --smoke`.
# Every benchmark rewrites its JSON after each row, so a step stopped by its limit keeps
# the rows it had. OUT/summary.tsv (step, exit, seconds) and OUT/summary.json list every
# step; the script exits 1 when a step failed or timed out (2 on bad arguments).
set -u
USAGE="usage: gpu_check.sh OUT [--device cuda|cpu] [--smoke] [--darts-dir PATH] [--pcdarts-dir PATH] [--wheels DIR]"
OUT=${1:?$USAGE}
shift
DARTS_DIR="" PCDARTS_DIR="" WHEELS="" DEVICE=cuda SMOKE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --darts-dir) DARTS_DIR=${2:?$USAGE}; shift 2 ;;
    --pcdarts-dir) PCDARTS_DIR=${2:?$USAGE}; shift 2 ;;
    --wheels) WHEELS=${2:?$USAGE}; shift 2 ;;
    --device) DEVICE=${2:?$USAGE}; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    *) echo "error: unknown argument $1 ($USAGE)" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in
  cuda|cpu) ;;
  *) echo "error: --device must be cuda or cpu, got $DEVICE" >&2; exit 2 ;;
esac
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python}
export PY WHEELS SMOKE
SUMMARY="$OUT/summary.tsv"
: > "$SUMMARY"
START=$(date +%s)

# step NAME LIMIT_S COMMAND... : COMMAND (a program or a function of this script) under
# its time limit, output in OUT/NAME.log, one line in OUT/summary.tsv.
step() {
  local name=$1 limit=$2; shift 2
  local t0 rc
  t0=$(date +%s)
  echo "== $name (limit ${limit}s, $(( $(date +%s) - START ))s elapsed)" >&2
  if declare -F "$1" > /dev/null; then  # `timeout` runs programs: give the function to bash
    timeout --kill-after=10 "$limit" bash -c "$(declare -f "$1"); $(printf '%q ' "$@")" \
      > "$OUT/$name.log" 2>&1
  else
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  fi
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >> "$SUMMARY"
  tail -n 25 "$OUT/$name.log" >&2
}

if [ "$DEVICE" = cuda ]; then
  if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: CUDA is not available to $PY (use --device cpu for a CPU run)" >&2; exit 2
  fi
fi
$PY - "$DEVICE" <<'EOF' > "$OUT/env.txt" 2>&1
import sys
import torch
print("torch", torch.__version__, "threads", torch.get_num_threads())
if sys.argv[1] == "cuda":
    print("cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
    print("device", torch.cuda.get_device_name(0),
          torch.cuda.get_device_properties(0).total_memory // 2**20, "MiB")
EOF

install() {
  if [ -n "$WHEELS" ]; then
    $PY -m pip install -q --no-index --find-links "$WHEELS" "$WHEELS"/*.whl || return 1
  fi
  if [ "$SMOKE" = 0 ]; then  # a smoke run must not reinstall the environment it runs in
    $PY -m pip install -q --no-deps --no-build-isolation -e . || return 1
  fi
  $PY -c "import nas, nas.search, nas.evaluate, nas.configs; print('nas', nas.__version__)"
}
step install 35 install

GPU_TESTS=()
while IFS= read -r f; do GPU_TESTS+=("$f"); done \
  < <(grep -rlE --include='test_*.py' 'pytest\.mark\.gpu' tests | sort)
step tests 45 $PY -m pytest -q -m gpu -p no:cacheprovider "${GPU_TESTS[@]}"

AMP=() COMPILE=()
if [ "$DEVICE" = cuda ]; then AMP=(--amp); COMPILE=(--compile); fi
if [ "$SMOKE" = 1 ]; then
  step ops 40 $PY benchmarks/ops.py --device "$DEVICE" "${AMP[@]}" --quick --ops 'c2sp*' \
    --out "$OUT"
  step fused 60 $PY benchmarks/fused.py --device "$DEVICE" --quick --cases darts-k1-first \
    --compile --cuda-graphs --compile-backend aot_eager --out "$OUT"
else
  step ops 40 $PY benchmarks/ops.py --device "$DEVICE" "${AMP[@]}" --channels 36 64 \
    --sizes 32 16 --batch 96 --out "$OUT"
  GRAPHS=()  # CUDA graphs (runtime.compile_mode=reduce-overhead) beside plain compile
  [ "$DEVICE" = cuda ] && GRAPHS=(--cuda-graphs)
  step fused 90 $PY benchmarks/fused.py --device "$DEVICE" "${COMPILE[@]}" "${GRAPHS[@]}" \
    --cases darts-k1-first full-k4-edgenorm-first --out "$OUT"
fi
PEER_ARGS=()
[ -n "$DARTS_DIR" ] && PEER_ARGS+=(--darts-dir "$DARTS_DIR")
[ -n "$PCDARTS_DIR" ] && PEER_ARGS+=(--pcdarts-dir "$PCDARTS_DIR")
[ "$SMOKE" = 1 ] && PEER_ARGS+=(--quick)
if [ -n "$DARTS_DIR$PCDARTS_DIR" ]; then
  step peers 60 $PY benchmarks/peers.py --device "$DEVICE" "${AMP[@]}" "${PEER_ARGS[@]}" \
    --out "$OUT"
fi
if [ "$SMOKE" = 1 ]; then
  step train 60 $PY benchmarks/train.py --device "$DEVICE" --quick --variants plain \
    --out "$OUT"
else
  VARIANTS=(plain channels_last+compile)
  [ "$DEVICE" = cpu ] && VARIANTS=(plain)  # compiling the network takes minutes on a CPU
  step train 60 $PY benchmarks/train.py --device "$DEVICE" --variants "${VARIANTS[@]}" \
    --steps 30 --warmup 5 --out "$OUT"
fi
DISPATCH_ARGS=()  # the official steps' counts too, when their checkouts are given
[ -n "$DARTS_DIR" ] && DISPATCH_ARGS+=(--darts-dir "$DARTS_DIR")
[ -n "$PCDARTS_DIR" ] && DISPATCH_ARGS+=(--pcdarts-dir "$PCDARTS_DIR")
[ "$SMOKE" = 1 ] && DISPATCH_ARGS+=(--quick)
step dispatch 40 $PY benchmarks/dispatch.py --device "$DEVICE" "${DISPATCH_ARGS[@]}" \
  --out "$OUT"

if [ "$SMOKE" = 1 ]; then  # 64 images (32 + 32 for the search), 8x8, C=4, 5 cells
  SYNTH="data.name=synthetic data.options.num_samples=64 data.options.image_size=8"
  SYNTH="$SYNTH data.batch_size=16 data.eval_batch_size=32 model.init_channels=4 model.layers=5"
else
  SYNTH="data.name=synthetic data.options.num_samples=50000 data.options.image_size=32"
fi
SYNTH="$SYNTH data.options.channels=3 data.options.num_classes=10 runtime.progress=false"
FAST="runtime.compile=true runtime.amp=true"
[ "$DEVICE" = cpu ] && FAST="runtime.compile=false runtime.amp=false"
step e2e_search 110 $PY -m nas search pcdarts_cifar10 $SYNTH optim.epochs=1 \
  arch.warmup_epochs=0 runtime.device=$DEVICE $FAST run_dir="$OUT/e2e_search"
step e2e_train 60 $PY -m nas train darts_cifar10 $SYNTH optim.epochs=1 eval_every=1 \
  runtime.device=$DEVICE $FAST runtime.channels_last=true run_dir="$OUT/e2e_train"

$PY - "$SUMMARY" "$OUT/summary.json" "$DEVICE" "$SMOKE" <<'EOF'
import json, sys
rows = [dict(zip(("step", "exit", "seconds"), line.rstrip("\n").split("\t")))
        for line in open(sys.argv[1]) if line.strip()]
for r in rows:
    r["exit"], r["seconds"] = int(r["exit"]), int(r["seconds"])
    r["status"] = "ok" if r["exit"] == 0 else ("timeout" if r["exit"] in (124, 137) else "failed")
    r["log"] = f"{r['step']}.log"
summary = {"device": sys.argv[3], "smoke": sys.argv[4] == "1", "steps": rows,
           "failed": [r["step"] for r in rows if r["exit"] != 0],
           "total_seconds": sum(r["seconds"] for r in rows)}
json.dump(summary, open(sys.argv[2], "w"), indent=2)
for r in rows:
    print(f"{r['step']:<12} {r['status']:<8} {r['seconds']:>5} s")
EOF
echo "total $(( $(date +%s) - START )) s; results in $OUT" >&2
if cut -f2 "$SUMMARY" | grep -qv '^0$'; then
  echo "error: failed or timed out: $(awk -F'\t' '$2 != 0 {printf "%s ", $1}' "$SUMMARY")" >&2
  exit 1
fi
