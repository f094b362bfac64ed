#!/usr/bin/env bash
# Issue 23's GPU runs on one H200 or H100, one step a device call (the machine stays warm between calls, so /tmp/site,
# the default model's GGUF and /tmp/grid persist from call to call).
# Usage (repo root): bash benchmarks/gpu_i23.sh STEP OUT [args]
#   setup, part N  as benchmarks/gpu_i22.sh (the wheels, and the default model's GGUF in parts: gpu_assets.py)
#   step ARGS      benchmarks/train_step_gpu.py: one training step alone, the defaults before/after, concurrency
#   cache ARGS     benchmarks/teacher_cache.py --device cuda: alpha training and healing with the teacher cache off and
#                  on (the GPU check its default waits for), e.g. `cache OUT --steps 60 --batches 20`, then
#                  `cache OUT --model llama8b --steps 20 --batches 8` (the second geometry)
#   mps ARGS       the same under NVIDIA MPS (one server: the kernels of several processes run side by side instead of
#                  time-sliced), e.g. `mps OUT --variants default --modes learned --concurrency 1 4 8 12`; MPS is
#                  stopped after; where it cannot start, says so and runs nothing. grid/heal/healabl/healboth start
#                  it (or find it running) for the sweep and stop nothing (the sweep outlives the call); MPS=0: without.
#                  Measured: the grid's runs 1.8-2.3x shorter than time-sliced (benchmarks/results/gpu_h100_i23_mps)
#   grid SECONDS [mka-evaluate flags]
#                  the full grid (3 plans x k 2 4 6 8 x every method x seeds 0 1 2, each seed resampling the calibration
#                  set; 500 steps, 5,700 MMLU questions, 65,536 held-out tokens; a model another seed measured
#                  reuses those measures: --evaluation_cache /tmp/evals, shared by every preset: a model measured with
#                  the same settings in any of them is not measured again) into /tmp/grid, in the background
#                  (a call that finds it running only waits); waits up to SECONDS (at most 540: collecting takes up
#                  to a minute of a 600 s call, the predictions last), then collects into OUT:
#                  grid_status.txt, profile.json (experiments.sweep_profile), gpu.csv (nvidia-smi each second),
#                  grid_tables.tar.gz (every results.json, table, plot and output-free run.ipynb) and
#                  grid_predictions_*.tar.gz (the per-question predictions, gzipped parts of about 12 MB)
#   heal SECONDS [flags]     issue 24's healed curves the same way, into /tmp/heal: plans bi_merge and similar_pairs,
#                  k 4 6 8, drop drop_best fixed_05 mka_similarity learned learned_weight (+ dense), 500 healing steps
#   healabl SECONDS [flags]  issue 24's healing-steps ablation at bi_merge k = 4 (0 100 500 2000: one 2,000-step
#                  healing run a method, measured on the way; drop fixed_05 learned_weight), into /tmp/healabl
#   healboth SECONDS JOBS_HEAL JOBS_ABL  heal and healabl side by side, collected into OUT/heal and OUT/healabl
#                  (PREDS=0, here and for grid/heal/healabl: without the per-question predictions, e.g. for every call
#                  of a long sweep but the last; HEAL_PLANS, ABL_METHODS: fewer plans or
#                  methods; RUN_FLAGS: more mka-evaluate flags, e.g. --eval_limit 1710 --teacher_cache_mb 1024; not
#                  --heal_milestones with healabl, whose --heal_ablation steps are its milestones)
set -uo pipefail
step=$1; out=${2:-$OUT}; mkdir -p "$out"
export PYTHONPATH=/tmp/site:$PWD:$PWD/benchmarks HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export MKA_ALPHA_CACHE=/tmp/mka_cache
preset() {
  case $1 in
    grid) echo "--plans bi_merge similar_pairs mka_backward --num_layer 2 4 6 8 --seeds 0 1 2 --resample_calibration
      --methods dense mka_similarity fixed_05 fixed_07 learned learned_mlp learned_weight drop drop_best shortgpt
      --evaluation_cache /tmp/evals" ;;
    heal) echo "--plans ${HEAL_PLANS:-bi_merge similar_pairs} --num_layer 4 6 8 --heal_steps 500 --methods dense drop
      drop_best fixed_05 mka_similarity learned learned_weight --evaluation_cache /tmp/evals" ;;
    healabl) echo "--plan bi_merge --num_layer 4 --heal_ablation 0 100 500 2000 --methods
      ${ABL_METHODS:-drop fixed_05 learned_weight} --evaluation_cache /tmp/evals" ;;
  esac
}
start() {  # start preset $1 into $G in the background (a new process session: it outlives the call); once
  mkdir -p $G
  if [ -f $G/pid ] && kill -0 "$(cat $G/pid)" 2>/dev/null; then echo "$1 already running (pid $(cat $G/pid))"; return; fi
  [ -f $G/smi.pid ] || { setsid nohup nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used \
    --format=csv,noheader,nounits -l 1 >> $G/gpu.csv 2>/dev/null & echo $! > $G/smi.pid; }
  # one OpenMP thread a process, as torchrun does for several processes: twelve kernels' spinning thread pools of
  # 16 would take the cores that launch the GPU kernels (OMP_THREADS=N before the call sets another count)
  # shellcheck disable=SC2046
  OMP_NUM_THREADS=${OMP_THREADS:-1} setsid nohup \
    python3 -c "from mka_alpha.cli import evaluate_methods_main as m; m()" --output_dir $G/runs \
    $(preset "$1") --num_training_steps 500 --num_calibration_samples 1000 --eval_limit 5700 --eval_batch_size 64 \
    --heldout_tokens 65536 --no_save_model --warm_kernels ${RUN_FLAGS:-} "${@:2}" >> $G/log.txt 2>&1 &
  echo $! > $G/pid; echo "$1 started (pid $(cat $G/pid)) at $(date -u +%T)" | tee -a $G/starts.txt
}
mps_on() {  # start the MPS server (once) and check a CUDA context opens through it; else stop it, return 1
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps/pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps/log
  mkdir -p $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY
  [ -S $CUDA_MPS_PIPE_DIRECTORY/control ] || nvidia-cuda-mps-control -d || return 1
  if python3 -c "import torch; assert torch.ones(2, device='cuda').sum().item() == 2"; then
    echo "MPS on: $(echo get_server_list | nvidia-cuda-mps-control)"; return 0; fi
  echo "MPS started but no CUDA context opened through it:"; tail -5 $CUDA_MPS_LOG_DIRECTORY/*.log
  echo quit | nvidia-cuda-mps-control; return 1
}
wait_for() {  # wait up to $1 seconds while any of the pid files $2... names a running process
  local end=$(( $(date +%s) + $1 )) f busy=1
  while [ $busy = 1 ] && [ "$(date +%s)" -lt "$end" ]; do
    busy=0; for f in "${@:2}"; do kill -0 "$(cat "$f")" 2>/dev/null && busy=1; done; [ $busy = 1 ] && sleep 5; done
  for f in "${@:2}"; do kill -0 "$(cat "$f")" 2>/dev/null && echo "$f: still running" || echo "$f: finished"; done
}
t0=$(date +%s)
case $step in
  setup|part) bash benchmarks/gpu_i22.sh "$@" ;;
  step)
    python3 benchmarks/train_step_gpu.py --out "$out/step" "${@:3}" 2>&1 | tee "$out/step.log" ;;
  cache)
    python3 benchmarks/teacher_cache.py --device cuda "${@:3}" 2>&1 | tee -a "$out/teacher_cache.log" ;;
  mps)
    if mps_on; then python3 benchmarks/train_step_gpu.py --out "$out/step_mps" "${@:3}" 2>&1 | tee "$out/step_mps.log"
      echo quit | nvidia-cuda-mps-control; else echo "MPS could not start here: nothing run"; fi ;;
  grid|heal|healabl|healboth)
    [ "${MPS:-1}" = 1 ] && { mps_on || echo "MPS=1 but MPS could not start: the sweep runs without it"; } ;;&
  grid|heal|healabl|healboth)  # collecting takes up to a minute of a 600 s call: wait at most 540 s
    if [ "$3" -gt 540 ]; then echo "SECONDS $3 > 540: waiting 540 s, so that collecting fits the call"
      set -- "$1" "$2" 540 "${@:4}"; fi ;;&
  grid|heal|healabl)
    G=/tmp/$step; start $step "${@:4}"; wait_for "$3" $G/pid
    python3 benchmarks/grid_collect.py $G "$out" "${PREDS:-1}" ;;
  healboth)  # healabl (JOBS_ABL jobs) and heal (JOBS_HEAL jobs) side by side, collected into OUT/healabl and OUT/heal
    G=/tmp/healabl; start healabl --jobs "$5"; G=/tmp/heal; start heal --jobs "$4"
    wait_for "$3" /tmp/heal/pid /tmp/healabl/pid
    for s in heal healabl; do python3 benchmarks/grid_collect.py /tmp/$s "$out/$s" "${PREDS:-1}"; done ;;
esac
echo "step $step: $(( $(date +%s) - t0 )) s"
