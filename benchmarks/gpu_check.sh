#!/usr/bin/env bash
# GPU acceptance check: everything that needs CUDA, as one command of at most 8 minutes on one
# H100/H200 (the step limits below add up to 470 s). Writes every benchmark's JSON + markdown and a summary into OUT.
#
#   bash benchmarks/gpu_check.sh OUT [--darts-dir PATH] [--pcdarts-dir PATH] [--wheels DIR]
#
# Steps (each under its own time limit; a failing step is recorded and the next one runs):
#   install   the project without dependencies (+ wheels from --wheels, e.g. optuna, pytest)
#   tests     the `gpu`-marked tests
#   ops       operator benchmark, bf16 autocast, C=36/64
#   fused     supernet steps: reference MixedOp vs fused vs fused+compile
#   peers     official DARTS / PC-DARTS against ours, batch 64 (when the checkouts are given)
#   train     DARTS_V2 retraining: ours (bf16; plain, and channels_last + compile) vs a DataLoader fp32 loop
#   e2e       1-epoch search (13-op space, K=4, CIFAR-shaped synthetic data, 25k+25k images) and
#             a 1-epoch retrain, both bf16 + compile: wall times give the 50-epoch estimate
# OUT/summary.json lists each step's status, seconds and log file.
set -u
OUT=${1:?usage: gpu_check.sh OUT [--darts-dir PATH] [--pcdarts-dir PATH] [--wheels DIR]}
shift
DARTS_DIR="" PCDARTS_DIR="" WHEELS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --darts-dir) DARTS_DIR=$2; shift 2 ;;
    --pcdarts-dir) PCDARTS_DIR=$2; shift 2 ;;
    --wheels) WHEELS=$2; shift 2 ;;
    *) echo "error: unknown argument $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python}
SUMMARY="$OUT/summary.tsv"
: > "$SUMMARY"
START=$(date +%s)

step() {  # step NAME LIMIT_S COMMAND...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s) rc
  echo "== $name (limit ${limit}s, $(( $(date +%s) - START ))s elapsed)" >&2
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >> "$SUMMARY"
  tail -n 25 "$OUT/$name.log" >&2
}

if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "error: CUDA is not available to $PY" >&2; exit 2
fi
$PY - <<'EOF' > "$OUT/env.txt" 2>&1
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
print("device", torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0).total_memory // 2**20, "MiB")
EOF

install() {
  if [ -n "$WHEELS" ]; then
    $PY -m pip install -q --no-index --find-links "$WHEELS" "$WHEELS"/*.whl || return 1
  fi
  $PY -m pip install -q --no-deps --no-build-isolation -e . || return 1
  $PY -c "import nas, nas.search, nas.evaluate; print('nas', nas.__version__)"
}
step install 35 install

step tests 45 $PY -m pytest -q -m gpu -p no:cacheprovider tests
step ops 40 $PY benchmarks/ops.py --device cuda --amp --channels 36 64 --sizes 32 16 \
  --batch 96 --out "$OUT"
step fused 60 $PY benchmarks/fused.py --device cuda --compile \
  --cases darts-k1-first full-k4-edgenorm-first --out "$OUT"
PEER_ARGS=()
[ -n "$DARTS_DIR" ] && PEER_ARGS+=(--darts-dir "$DARTS_DIR")
[ -n "$PCDARTS_DIR" ] && PEER_ARGS+=(--pcdarts-dir "$PCDARTS_DIR")
if [ ${#PEER_ARGS[@]} -gt 0 ]; then
  step peers 60 $PY benchmarks/peers.py --device cuda --amp "${PEER_ARGS[@]}" --out "$OUT"
fi
step train 60 $PY benchmarks/train.py --device cuda --variants plain channels_last+compile \
  --steps 30 --warmup 5 --out "$OUT"

SYNTH="data.name=synthetic data.options.num_samples=50000 data.options.image_size=32"
SYNTH="$SYNTH data.options.channels=3 data.options.num_classes=10 runtime.progress=false"
step e2e_search 110 $PY -m nas search pcdarts_cifar10 $SYNTH optim.epochs=1 \
  arch.warmup_epochs=0 runtime.compile=true runtime.amp=true run_dir="$OUT/e2e_search"
step e2e_train 60 $PY -m nas train darts_cifar10 $SYNTH optim.epochs=1 eval_every=1 \
  runtime.compile=true runtime.amp=true runtime.channels_last=true run_dir="$OUT/e2e_train"

$PY - "$SUMMARY" "$OUT/summary.json" <<'EOF'
import json, sys
rows = [dict(zip(("step", "exit", "seconds"), line.rstrip("\n").split("\t")))
        for line in open(sys.argv[1]) if line.strip()]
for r in rows:
    r["exit"], r["seconds"] = int(r["exit"]), int(r["seconds"])
    r["status"] = "ok" if r["exit"] == 0 else ("timeout" if r["exit"] in (124, 137) else "failed")
json.dump({"steps": rows, "total_seconds": sum(r["seconds"] for r in rows)},
          open(sys.argv[2], "w"), indent=2)
for r in rows:
    print(f"{r['step']:<12} {r['status']:<8} {r['seconds']:>5} s")
EOF
echo "total $(( $(date +%s) - START )) s; results in $OUT" >&2
