#!/usr/bin/env bash
# The GPU-only tests (pytest -m gpu: CUDA logits, graphs, compile, every decode path), run
# on the device machine, which has no network: carry a .whl/ wheelhouse with pytest,
# hypothesis and the server's packages where they are missing.
#
#   bash bench/gpu_tests.sh            # from the repo root; the log into $OUT
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"
NEED="torch pydantic fastapi pytest hypothesis safetensors tokenizers transformers"
source bench/gpu_env.sh
"$PYTHON" -m pytest -q -m gpu -p no:cacheprovider tests/runtime 2>&1 | tee "$OUT/gpu-tests.txt"
