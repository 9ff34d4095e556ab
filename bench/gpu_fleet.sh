#!/usr/bin/env bash
# The GPU run of `specfleet bench fleet` (issue 5): the bundled pair served by one replica
# on one GPU (a replica per GPU, as in service), off / on(K) / hand-tuned / auto.
#
#   bash bench/gpu_fleet.sh                  # from the repo root; results into $OUT
#   NAME=fleet-cuda-x bash bench/gpu_fleet.sh --seconds 3    # extra args pass through
#
# Needs torch (CUDA) and the server's packages (fastapi, uvicorn, pydantic, ...): carry a
# wheelhouse in .whl/ where they are missing. REPLICAS=2 shares the GPU between two.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results}"
PYTHON="${PYTHON:-python3}"
REPLICAS="${REPLICAS:-1}"
NAME="${NAME:-fleet-cuda}"
mkdir -p "$OUT"
NEED="torch pydantic fastapi uvicorn httpx typer rich safetensors tokenizers matplotlib jinja2 prometheus_client"
source bench/gpu_env.sh
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.memory --format=csv > "$OUT/$NAME.nvidia-smi.csv" || true
fi
"$PYTHON" -m specfleet.cli bench fleet --device cuda --replicas "$REPLICAS" --out "$OUT" --name "$NAME" "$@" \
  2>&1 | tee "$OUT/$NAME.txt"
