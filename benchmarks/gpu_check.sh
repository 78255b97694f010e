#!/usr/bin/env bash
# The GPU path of medsyn, end to end, in at most 8 minutes on one CUDA GPU:
#   1. the full preset's generator (cgan, 128 px, width 64) trained under `torchrun --nproc_per_node 1`, bf16;
#   2. the full preset's classifier (VGG16 at full width, 128 px) trained by `medsyn classify train`, bf16;
#   3. the full preset shrunk (few generator steps and epochs, 2 arms x 2 replicates, one size) through
#      `medsyn run --executor ray`, every GPU job reserving its share of the card from Ray;
#   4. steps 1 and 2 again on the CPU with a few steps, for images/s against the GPU's.
# Without a CUDA GPU it runs the CPU side (4) and step 3 on the CPU, says so, and exits 0: the tests run it so.
#
#   benchmarks/gpu_check.sh [OUT]      (default: gpu-check; OUT must not exist)
#   GPU_CHECK_TINY=1 benchmarks/gpu_check.sh OUT   smoke-sized settings at 28 px (the test of the CPU fallback)
#   PYTHON=...                          the interpreter with medsyn and torch (default: python3)
# What it measured is printed at the end and written to OUT/gpu_check.json (benchmarks/gpu_check.py summary).
set -euo pipefail
OUT=${1:-gpu-check}
PY=${PYTHON:-python3}
HERE=$(cd "$(dirname "$0")" && pwd)
if [ -e "$OUT" ]; then echo "gpu_check: $OUT exists; give a new folder" >&2; exit 2; fi
mkdir -p "$OUT"
log() { echo "== $(date +%T) $*"; }
FAILED=""  # a step that fails is reported and the others still run: one call on a lent GPU should say everything
timed() {
  local name=$1 t0; shift; t0=$(date +%s.%N)
  if "$@"; then echo "$name $t0 $(date +%s.%N)" >>"$OUT/seconds.txt"; else echo "$name FAILED"; FAILED="$FAILED $name"; fi
}

if [ "${GPU_CHECK_TINY:-0}" = 1 ]; then
  PRESET=smoke SIZE=28 GPU_STEPS=20 CPU_STEPS=4 GPU_EPOCHS=2 CPU_TRAIN=128 RUN_STEPS=20 RUN_EPOCHS=1 RUN_SIZE=200
else
  PRESET=full SIZE=128 GPU_STEPS=300 CPU_STEPS=2 GPU_EPOCHS=3 CPU_TRAIN=192 RUN_STEPS=300 RUN_EPOCHS=3 RUN_SIZE=400
fi
GPU=$($PY -c 'import torch; print(int(torch.cuda.is_available()))')

log "machine"
nvidia-smi -L 2>/dev/null || echo "nvidia-smi: none"
$PY -c 'import torch, os; print("torch", torch.__version__, "| CUDA", torch.version.cuda, "| GPU",
torch.cuda.get_device_name() if torch.cuda.is_available() else "none", "| bf16",
torch.cuda.is_available() and torch.cuda.is_bf16_supported(), "| CPU threads", torch.get_num_threads())'
[ "$GPU" = 1 ] || echo "no CUDA GPU is visible to torch: running the CPU side only"
$PY "$HERE/gpu_check.py" subset --train "$CPU_TRAIN" --size "$SIZE" --out "$OUT/small.npz"

if [ "$GPU" = 1 ]; then
  log "1. generator on the GPU: torchrun, 1 process, $GPU_STEPS steps"
  timed gan_cuda $PY -m torch.distributed.run --standalone --nproc_per_node 1 -m medsyn gan train \
    --preset "$PRESET" --size "$SIZE" --steps "$GPU_STEPS" --snapshot-every "$GPU_STEPS" --device cuda \
    --no-progress --out "$OUT/gan-cuda"
  log "2. classifier on the GPU: $GPU_EPOCHS epochs over the bundled train split"
  timed classify_cuda $PY -m medsyn classify train --preset "$PRESET" --size "$SIZE" --arm real \
    --epochs "$GPU_EPOCHS" --patience "$GPU_EPOCHS" --device cuda --out "$OUT/classify-cuda" >/dev/null
fi

log "4. the same commands on the CPU: $CPU_STEPS generator steps, one epoch over $CPU_TRAIN images"
timed gan_cpu $PY -m medsyn gan train --preset "$PRESET" --size "$SIZE" --steps "$CPU_STEPS" \
  --snapshot-every "$CPU_STEPS" --device cpu --no-progress --out "$OUT/gan-cpu"
timed classify_cpu $PY -m medsyn classify train --data "$OUT/small.npz" --preset "$PRESET" --size "$SIZE" \
  --arm real --epochs 1 --device cpu --out "$OUT/classify-cpu" >/dev/null

EXECUTOR=ray
$PY -c 'import ray' 2>/dev/null || { EXECUTOR=local; echo "Ray is not installed: medsyn run uses the local executor"; }
log "3. medsyn run --preset $PRESET shrunk, --executor $EXECUTOR"
timed run $PY -m medsyn run --preset "$PRESET" --size "$SIZE" --gan-steps "$RUN_STEPS" --epochs "$RUN_EPOCHS" \
  --arms real,real+synth@1 --seeds 0,1 --gan-seeds 1 --train-sizes "$RUN_SIZE" --executor "$EXECUTOR" \
  --out "$OUT/run"

log "summary"
$PY "$HERE/gpu_check.py" summary "$OUT"
if [ -n "$FAILED" ]; then echo "gpu_check: failed:$FAILED" >&2; exit 1; fi
