#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): decoding and RL-step benchmarks at the real Qwen2.5-VL-3B/7B shapes with
# random weights on one CUDA GPU, offline; the CPU fallback at tiny size without CUDA or with --tiny.
#   bash benchmarks/gpu_check.sh [--sizes 3b 7b] [--tiny] [--out outputs/gpu_check.json]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
exec "$PYTHON" benchmarks/gpu_check.py "$@"
