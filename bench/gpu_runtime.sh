#!/usr/bin/env bash
# The GPU run of `specfleet bench runtime` (issue 2): a random-weight 1.1B Llama
# (TinyLlama's shape, bf16), ngram speculation, speculation off vs K=1..4 at concurrency
# 1..64, plus the device's copy bandwidth and batch-1 decode against the bandwidth limit.
#
#   bash bench/gpu_runtime.sh            # from the repo root; results into $OUT
#   NAME=runtime-llama-1b-cuda-compiled bash bench/gpu_runtime.sh --compile   # extra args pass through
#
# Needs torch (CUDA), pydantic, typer, rich, safetensors, tokenizers, matplotlib, jinja2;
# no network and no install: the repo's packages are put on PYTHONPATH. DEVICE=cpu
# RANDOM_MODEL=llama-tiny CONCURRENCY=1,2 runs the same thing small, anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results}"
DEVICE="${DEVICE:-cuda}"
RANDOM_MODEL="${RANDOM_MODEL:-llama-1b}"
CONCURRENCY="${CONCURRENCY:-1,2,4,8,16,32,64}"
PYTHON="${PYTHON:-python3}"
NAME="${NAME:-runtime-${RANDOM_MODEL}-${DEVICE}}"
mkdir -p "$OUT"
NEED="torch pydantic typer rich safetensors tokenizers matplotlib jinja2"
source bench/gpu_env.sh
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.memory --format=csv > "$OUT/$NAME.nvidia-smi.csv" || true
fi
"$PYTHON" -m specfleet.bench.runtime_cli \
  --random-model "$RANDOM_MODEL" --method ngram --k-max 4 \
  --concurrency "$CONCURRENCY" --max-tokens 96 --prompt-chars 256 --max-model-len 512 \
  --repeats 2 --warmup-tokens 16 --device "$DEVICE" --out "$OUT" --name "$NAME" "$@" 2>&1 | tee "$OUT/$NAME.txt"
