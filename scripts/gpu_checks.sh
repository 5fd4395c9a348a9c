#!/usr/bin/env bash
# The short script of GPU checks to run when a GPU machine is lent (see README "GPU checks").
# Writes everything under ${OUT:-outputs/gpu_checks}; each step is bounded so the whole run fits in a
# few minutes of device time. Safe to run on CPU too (CUDA-only steps then report "skipped").
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_checks}
mkdir -p "$OUT"
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
{
  echo "== ev-info"; timeout 60 "$PY" -m enerverse.core.info
  echo "== nvidia-smi"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | head -3
  echo "== generator bench (CPU tiny/small + CUDA small/base with bf16)"
  timeout 300 "$PY" bench/generator.py --presets tiny --steps 5 --out "$OUT/bench_generator"
  echo "== rasteriser bench (CPU tile backend vs gsplat on CUDA)"
  timeout 240 "$PY" bench/rasterizer.py --repeats 3 --out "$OUT/bench_rasterizer"
  echo "== gpu-marked tests"
  timeout 240 "$PY" -m pytest -q -m gpu -p no:cacheprovider 2>&1 | tail -5
} 2>&1 | tee "$OUT/log.txt"
