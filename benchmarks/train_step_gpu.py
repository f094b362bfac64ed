"""One alpha-training step alone, on the default model (issue 23): where a trained run's time goes, and what the
training loop's defaults change. SmolLM2-135M (the sweeps' model, bf16 on the GPU), plan `bi_merge` at `--k`, the
sweeps' real calibration batches (MMLU questions, batch 4, at most 512 tokens), KD loss, bf16 autocast.

Variants, each on a fresh copy of the dense model wrapped for the mode (`learned`: simple, `learned_mlp`: mlp,
`learned_weight`: weight):
  * `before`: gradient checkpointing on (the old CUDA default) and a host sync after every step (the old loop's
    `loss.item()` and `alpha_summary()` per step), emulated with an optimizer-step hook;
  * `ckpt_off_sync`: checkpointing off, still a sync a step;
  * `default`: the library's defaults now (`gradient_checkpointing=None`: decided from the activations' size,
    off here; no host sync inside the loop).
Each variant: `--warmup` steps, then `--steps` timed steps (device-synchronised wall clock), seconds a step and the
estimate for 500 steps. Then `torch.profiler` over `--prof_steps` steps of `default` (learned): CUDA kernel time and
kernel count a step against the step's wall time, i.e. the GPU's busy fraction in one process.

`--concurrency 1 4 8`: that many worker processes at once (each loads the model, waits at a barrier, then trains
`--conc_steps` steps of `default` learned), `nvidia-smi` utilization sampled meanwhile: seconds a step per worker,
steps a second together, GPU busy fraction.

`--mmlu`: one dense MMLU pass at the grid's size (`--questions`, the CUDA defaults: packed scoring) twice (the first
compiles FlexAttention) and the held-out measures (65,536 tokens), timed.

Usage (repo root; PYTHONPATH=/tmp/site:$PWD:$PWD/benchmarks, HF_HUB_OFFLINE=1):
    python3 benchmarks/train_step_gpu.py --out OUT/step [--modes learned learned_mlp learned_weight]
        [--concurrency 1 4 8] [--mmlu]
    python3 benchmarks/train_step_gpu.py --smoke --out /tmp/step_smoke    # tiny model on CPU: checks the script
Writes OUT/results.json and OUT/results.md; prints a table last.
"""
import argparse, copy, json, os, statistics, subprocess, sys, time
from pathlib import Path
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from sweep_profile_gpu import GpuSampler
from mka_alpha.experiments import RunConfig, TRAINED, similarity_assets, make_plan, dense_assets
from mka_alpha.data import prepare_calibration_dataloader
from mka_alpha.models import get_layers
from mka_alpha.training import replace_layers_with_mergeable, train_alpha_parameters
from mka_alpha.evaluation import evaluate_model
from mka_alpha.heldout import heldout_measures


def setup(a):
    "The model, tokenizer, plan, similarity and the sweeps' calibration dataloader."
    kw = dict(model_path="tiny-llama", similarity_samples=16, calibration_samples=16) if a.smoke else {}
    cfg = RunConfig(output_dir=str(Path(a.out)/"shared"), plan="bi_merge", num_layer=a.k, **kw)
    model, tok = cfg.load(); splits = cfg.splits()
    S, bi = similarity_assets(cfg, model, tok, splits)
    plan = make_plan(cfg, S, len(get_layers(model)), bi)
    dl = prepare_calibration_dataloader(tok, splits.flat("calibration"), cfg.calibration_samples,
                                        cfg.calibration_batch_size, cfg.max_length, cfg.seed)
    return cfg, model, tok, splits, S, plan, dl


def sync():
    if torch.cuda.is_available(): torch.cuda.synchronize()


def wrapped(model, plan, S, method, cfg):
    m = copy.deepcopy(model)
    return replace_layers_with_mergeable(m, plan.steps, TRAINED[method], cfg.alpha_init_strategy, similarity=S)


def timed(model, dl, steps, ckpt, sync_each, lr):
    "Seconds of `steps` training steps (device-synchronised), and the history."
    h = register_optimizer_step_post_hook(lambda *_: sync()) if sync_each else None
    try:
        sync(); t0 = time.perf_counter()
        hist = train_alpha_parameters(model, dl, steps, lr, gradient_checkpointing=ckpt, progress=False)
        sync(); return time.perf_counter() - t0, hist
    finally:
        if h: h.remove()


VARIANTS = dict(before=(True, True), ckpt_off_sync=(False, True), default=(None, False))


def run_variant(a, cfg, model, plan, S, dl, method, name):
    ckpt, sync_each = VARIANTS[name]
    m = wrapped(model, plan, S, method, cfg); lr = cfg.learning_rate(method)
    timed(m, dl, a.warmup, ckpt, sync_each, lr)  # warm-up: kernels, allocator, the prefix cache's first batches
    if torch.cuda.is_available(): torch.cuda.reset_peak_memory_stats()
    sec, hist = timed(m, dl, a.steps, ckpt, sync_each, lr)
    on = sum(bool(getattr(l, "checkpointing", False) or getattr(l, "gradient_checkpointing", False))
             for l in get_layers(m))
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    r = dict(method=method, variant=name, steps=a.steps, seconds=sec, step_s=sec / a.steps,
             est_500_s=500 * sec / a.steps, checkpointed_blocks=on, peak_gib=peak, loss_last=hist.loss[-1])
    print(json.dumps(r), flush=True); del m; return r


def profile_steps(a, cfg, model, plan, S, dl):
    "CUDA kernel time and count a step of `default` learned, against the step's wall time."
    from torch.profiler import profile, ProfilerActivity
    m = wrapped(model, plan, S, "learned", cfg); lr = cfg.learning_rate("learned")
    timed(m, dl, a.warmup, None, False, lr)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=acts) as prof:
        sec, _ = timed(m, dl, a.prof_steps, None, False, lr)
    ev = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    kern = sum(e.device_time for e in ev) / 1e6  # microseconds -> s (overlapping kernels would count twice)
    r = dict(steps=a.prof_steps, wall_s_per_step=sec / a.prof_steps, kernel_s_per_step=kern / a.prof_steps,
             kernels_per_step=len(ev) / a.prof_steps, gpu_busy=kern / sec if sec else None,
             top=prof.key_averages().table(sort_by="cuda_time_total" if ev else "cpu_time_total", row_limit=12))
    print(r["top"], flush=True); return r


def worker(a):
    "One process of `--concurrency`: set up, wait for the others, train, print its figures."
    cfg, model, tok, splits, S, plan, dl = setup(a)
    m = wrapped(model, plan, S, "learned", cfg); lr = cfg.learning_rate("learned")
    timed(m, dl, a.warmup, None, False, lr)
    bar = Path(a.barrier); (bar/f"ready{a.worker}").touch()
    while len(list(bar.glob("ready*"))) < a.workers: time.sleep(0.05)
    sec, _ = timed(m, dl, a.conc_steps, None, False, lr)
    print("RESULT " + json.dumps(dict(worker=a.worker, seconds=sec, step_s=sec / a.conc_steps)), flush=True)


def concurrency(a, n) -> dict:
    bar = Path(a.out)/f"barrier{n}"; bar.mkdir(parents=True, exist_ok=True)
    for f in bar.glob("*"): f.unlink()
    args = [sys.executable, __file__, "--out", a.out, "--k", str(a.k), "--warmup", str(a.warmup), "--conc_steps",
            str(a.conc_steps), "--barrier", str(bar), "--workers", str(n)] + (["--smoke"] if a.smoke else [])
    env = os.environ | dict(OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 2) // n)))
    procs = [subprocess.Popen(args + ["--worker", str(i)], stdout=subprocess.PIPE, text=True, env=env)
             for i in range(n)]
    while len(list(bar.glob("ready*"))) < n and all(p.poll() is None for p in procs): time.sleep(0.05)
    t0 = time.perf_counter()
    with GpuSampler(100) as g:
        outs = [p.communicate()[0] for p in procs]
    wall = time.perf_counter() - t0
    res = [json.loads(l[7:]) for o in outs for l in o.splitlines() if l.startswith("RESULT ")]
    step = statistics.median(r["step_s"] for r in res) if res else float("nan")
    r = dict(workers=n, finished=len(res), wall_s=wall, median_step_s=step, steps_per_s=n / step if res else None,
             gpu=g.busy())
    print(json.dumps(r), flush=True); return r


def mmlu(a, cfg, model, tok, splits) -> dict:
    out = {}
    for i in range(2):
        sync(); t0 = time.perf_counter()
        res = evaluate_model(model, tok, splits, k=cfg.ntrain, subjects=cfg.subjects, limit=a.questions,
                             heldout=False, progress=False)
        sync(); out[f"mmlu_pass{i + 1}_s"] = time.perf_counter() - t0
    out["questions"], out["accuracy"] = res.get("n_questions"), res.get("average_accuracy")
    ref = dense_assets(cfg, model, tok, splits)
    sync(); t0 = time.perf_counter(); h = heldout_measures(model, tok, None, ref, cfg.max_length); sync()
    out["heldout_s"], out["heldout_kl"] = time.perf_counter() - t0, h.get("kl_to_dense")
    print(json.dumps(out), flush=True); return out


def table(R) -> str:
    lines = ["| method | variant | s a step | 500 steps (s) | checkpointed blocks | peak GiB |", "|---|---|---|---|---|---|"]
    for r in R["variants"]:
        pk = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        lines.append(f"| {r['method']} | {r['variant']} | {r['step_s']:.4f} | {r['est_500_s']:.1f} | "
                     f"{r['checkpointed_blocks']} | {pk} |")
    if R.get("profile"):
        p = R["profile"]
        lines += ["", f"profile (default, learned, {p['steps']} steps): {p['wall_s_per_step'] * 1e3:.1f} ms a step, "
                  f"{p['kernel_s_per_step'] * 1e3:.1f} ms of CUDA kernels in {p['kernels_per_step']:.0f} kernels: "
                  f"GPU busy {p['gpu_busy'] or 0:.0%} in one process"]
    if R.get("concurrency"):
        lines += ["", "| processes | s a step (median) | steps/s together | GPU util (nvidia-smi) |", "|---|---|---|---|"]
        for c in R["concurrency"]:
            u = c["gpu"]["mean_util"]
            lines.append(f"| {c['workers']} | {c['median_step_s']:.4f} | {c['steps_per_s'] or 0:.1f} | "
                         f"{'-' if u is None else f'{u:.0%}'} |")
    if R.get("mmlu"): lines += ["", "MMLU and held-out, dense: " + json.dumps(R["mmlu"])]
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True); p.add_argument("--k", type=int, default=4)
    p.add_argument("--modes", nargs="+", default=["learned", "learned_mlp", "learned_weight"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--steps", type=int, default=60); p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--prof_steps", type=int, default=5); p.add_argument("--conc_steps", type=int, default=100)
    p.add_argument("--concurrency", type=int, nargs="*", default=[]); p.add_argument("--mmlu", action="store_true")
    p.add_argument("--questions", type=int, default=5700); p.add_argument("--smoke", action="store_true")
    p.add_argument("--worker", type=int, default=None); p.add_argument("--workers", type=int, default=1)
    p.add_argument("--barrier", default=None)
    a = p.parse_args()
    if a.smoke: a.steps, a.warmup, a.prof_steps, a.conc_steps, a.questions = 3, 1, 2, 3, 16
    if a.worker is not None: return worker(a)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    cfg, model, tok, splits, S, plan, dl = setup(a)
    R = dict(device=torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", torch=torch.__version__,
             plan=plan.steps, k=a.k, batch=cfg.calibration_batch_size, variants=[])
    for method in a.modes:
        for v in a.variants: R["variants"].append(run_variant(a, cfg, model, plan, S, dl, method, v))
    R["profile"] = profile_steps(a, cfg, model, plan, S, dl)
    if a.mmlu: R["mmlu"] = mmlu(a, cfg, model, tok, splits)
    del model
    if torch.cuda.is_available(): torch.cuda.empty_cache()
    R["concurrency"] = [concurrency(a, n) for n in a.concurrency]
    (out/"results.json").write_text(json.dumps(R, indent=1)); (out/"results.md").write_text(table(R) + "\n")
    print(table(R))


if __name__ == "__main__": main()
