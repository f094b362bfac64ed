"""Alpha-training cost on the Llama-3-8B shape (random bf16 weights, 32 blocks): 14 merged pairs (removing 14 of 32
blocks), trained with the library's `train_alpha_parameters` (KD loss = KL to the dense model, which the library runs
by swapping the original blocks back in; gradient checkpointing and bf16 autocast at the library's CUDA defaults,
prefix blocks before the first merged pair skipped and their output cached per batch), batch 4 x 512 random tokens.

For each (plan, mode) it reports
  * seconds per step (median after warm-up), separately for first-pass steps (prefix forward computed for a new batch)
    and repeat steps (prefix cached: every later epoch over the calibration batches), and tokens/s;
  * the library's own `TrainHistory.seconds_per_step` (mean over all steps, warm-up included);
  * peak GPU memory (torch.cuda.max_memory_allocated) against 80 GB and the device's capacity;
  * trainable parameters, and that only alphas train: requires_grad only on the alphas, the Adam optimizer holds only
    alphas and has no state for frozen weights (state tensors counted), no frozen weight has a .grad
    (`check_only_alphas_have_grads`);
  * an estimate of a full run (default 500 steps over 250 calibration batches, the CLI's defaults).
Plans: `mka_backward` (the paper's chain (30,31),(29,30),...,(17,18)) and `pairs` (disjoint consecutive pairs
(3,4),(5,6),...,(29,30)). Modes: `simple` (scalar alpha blending block outputs), `weight` (alpha blending the weights,
block run on the fused weights), also `weight_tensor` (alpha per weight tensor) and `mlp`.
Step times come from a global optimizer step post-hook (after a device sync), so they are the library's own steps.

Usage (repo root, PYTHONPATH=/tmp/site:$PWD):
    python3 benchmarks/train_gpu.py --out OUT/train [--plans mka_backward pairs] [--modes simple weight]
        [--steps 12 --warmup 2 --distinct 6] [--checkpointing auto|on|off]
    python3 benchmarks/train_gpu.py --smoke --out /tmp/train_smoke      # tiny shapes on CPU: checks the script only
Writes OUT/results.json; prints one JSON line per run and a summary.
"""
import argparse, gc, json, statistics, sys, time, traceback
from pathlib import Path
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from bench_common import build_model, default_device, env_info, mem, now, reset_peak, sync, write_json, GIB
from mka_alpha.plans import MergePlan, mka_backward
from mka_alpha.training import (replace_layers_with_mergeable, train_alpha_parameters, alpha_parameters,
                                check_only_alphas_have_grads, DEFAULT_LR, DEFAULT_MLP_LR, DEFAULT_STEPS)
from mka_alpha.mergeable import is_mergeable
from mka_alpha.models import get_layers
from mka_alpha.utils import n_params

def consecutive_pairs(num_layers, n) -> MergePlan:
    "`n` disjoint consecutive pairs ending at block L-2: (L-1-2n, L-2n), ..., (L-3, L-2)."
    start = num_layers - 1 - 2 * n
    if start < 0: raise ValueError(f"{n} disjoint pairs do not fit in {num_layers} blocks")
    return MergePlan([(start + 2 * i, start + 2 * i + 1) for i in range(n)], num_layers, "consecutive_pairs")

def make_plan(name, L, n): return mka_backward(L, n) if name == "mka_backward" else consecutive_pairs(L, n)

class StepClock:
    "Times every optimizer step (global post-hook, device-synced) and keeps a reference to the optimizer."
    def __init__(self, dev): self.dev, self.times, self.opt, self.h = dev, [], None, None
    def __enter__(self):
        def hook(opt, args, kwargs): self.opt = opt; self.times.append(now(self.dev))
        self.h = register_optimizer_step_post_hook(hook); return self
    def __exit__(self, *e): self.h.remove()

def random_batches(n, bs, seq, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [dict(input_ids=torch.randint(0, vocab, (bs, seq), generator=g), attention_mask=torch.ones(bs, seq, dtype=torch.long)) for _ in range(n)]

def med(xs): return statistics.median(xs) if xs else float("nan")

def only_alphas_report(model, opt) -> dict:
    "Which parameters train, what the optimizer holds, and whether any frozen weight got a gradient or optimizer state."
    ap = alpha_parameters(model); aid = {id(p) for p in ap.values()}
    rg = [n for n, p in model.named_parameters() if p.requires_grad]
    frozen_rg = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in aid]
    frozen_grad = [n for n, p in model.named_parameters() if id(p) not in aid and p.grad is not None]
    r = dict(n_alpha_tensors=len(ap), trainable_params=sum(p.numel() for p in ap.values()),
             requires_grad_tensors=len(rg), frozen_with_requires_grad=frozen_rg[:5], frozen_with_grad=frozen_grad[:5],
             total_params=n_params(model))
    try: check_only_alphas_have_grads(model); r["check_only_alphas_have_grads"] = "passed"
    except RuntimeError as e: r["check_only_alphas_have_grads"] = f"FAILED: {e}"
    if opt is not None:
        op = [p for g in opt.param_groups for p in g["params"]]
        st = [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]
        r |= dict(optimizer=type(opt).__name__, optimizer_params=len(op), optimizer_param_numel=sum(p.numel() for p in op),
                  optimizer_frozen_params=sum(id(p) not in aid for p in op),
                  optimizer_state_entries=len(opt.state), optimizer_state_for_frozen=sum(id(p) not in aid for p in opt.state),
                  optimizer_state_tensors=len(st), optimizer_state_bytes=sum(t.numel() * t.element_size() for t in st))
    r["only_alphas_train"] = (not frozen_rg and not frozen_grad and r["check_only_alphas_have_grads"] == "passed"
                              and (opt is None or (r["optimizer_frozen_params"] == 0 and r["optimizer_state_for_frozen"] == 0)))
    return r

def run_one(plan_name, mode, a, dev):
    model, src = build_model("llama8b", dev, smoke=a.smoke, num_layers=a.layers)
    L = model.config.num_hidden_layers; plan = make_plan(plan_name, L, a.num_layer)
    sync(dev); weights_gib = mem(dev)["allocated_gib"]
    kw = dict(per="tensor") if mode == "weight_tensor" else {}
    replace_layers_with_mergeable(model, plan.steps, mode.split("_")[0], alpha_inits="uniform", **kw)
    batches = random_batches(a.distinct, a.batch_size, a.seq_len, a.vocab or model.config.vocab_size)
    ck = dict(auto=None, on=True, off=False)[a.checkpointing]
    reset_peak(dev)
    with StepClock(dev) as clock:
        t0 = now(dev)
        hist = train_alpha_parameters(model, batches, steps=a.steps, lr=a.lr, loss="kd", mlp_lr=DEFAULT_MLP_LR,
                                      gradient_checkpointing=ck, progress=False, seed=0)
        t_end = now(dev)
    m = mem(dev)
    ts = [t0] + clock.times
    dur = [b - x for x, b in zip(ts, ts[1:])]
    if len(dur) != a.steps: print(f"warning: {len(dur)} optimizer steps timed for {a.steps} steps", flush=True)
    first = [d for i, d in enumerate(dur) if a.warmup <= i < a.distinct]
    rep = [d for i, d in enumerate(dur) if i >= max(a.warmup, a.distinct)]
    tok = a.batch_size * a.seq_len
    ckpt_layers = sum(bool(getattr(l, "checkpointing", False) or getattr(l, "gradient_checkpointing", False)) for l in get_layers(model))
    f, r_ = med(first), med(rep)
    n_first = min(a.full_batches, a.full_steps)
    est = n_first * f + (a.full_steps - n_first) * (r_ if rep else f)
    R = dict(plan=plan_name, plan_steps=plan.steps, removed=len(plan.steps), mode=mode, model=src, num_layers=L,
             batch_size=a.batch_size, seq_len=a.seq_len, steps=a.steps, warmup=a.warmup, distinct_batches=a.distinct,
             first_trained_block=min(min(p) for p in plan.steps),
             gradient_checkpointing=a.checkpointing, checkpointed_top_level_blocks=ckpt_layers, top_level_blocks=len(get_layers(model)),
             step_seconds=dur, median_step_s_first_pass=f, median_step_s_cached_prefix=r_,
             tokens_per_s_first_pass=tok / f if f == f else None, tokens_per_s_cached_prefix=tok / r_ if r_ == r_ else None,
             library_seconds_per_step_mean=hist.seconds_per_step, total_train_s=t_end - t0,
             full_run_estimate=dict(steps=a.full_steps, batches=a.full_batches, seconds=est,
                                    # the library caches one prefix state (B x T x hidden, model dtype) per calibration batch on the device for the whole run
                                    prefix_cache_gib=min(a.full_batches, a.full_steps) * a.batch_size * a.seq_len * model.config.hidden_size * 2 / GIB),
             weights_gib=weights_gib, peak_allocated_gib=m["peak_allocated_gib"], reserved_gib=m["reserved_gib"],
             device_total_gib=m["total_gib"], peak_frac_of_80GB=m["peak_allocated_gib"] * GIB / 80e9,
             fits_80GB=m["peak_allocated_gib"] * GIB < 80e9,
             loss_first=hist.loss[0], loss_last=hist.loss[-1], alphas_last=hist.alphas[-1])
    R |= only_alphas_report(model, clock.opt)
    del model, hist, clock; gc.collect()
    if dev.type == "cuda": torch.cuda.empty_cache()
    return R

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--plans", nargs="+", default=["mka_backward", "pairs"], choices=["mka_backward", "pairs"])
    p.add_argument("--modes", nargs="+", default=["simple", "weight"], choices=["simple", "weight", "weight_tensor", "mlp"])
    p.add_argument("--num_layer", type=int, default=14, help="merged pairs = blocks removed")
    p.add_argument("--batch_size", type=int, default=4); p.add_argument("--seq_len", type=int, default=512)
    p.add_argument("--steps", type=int, default=12); p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--distinct", type=int, default=6, help="distinct batches: steps < distinct compute the prefix, later steps reuse the cached one")
    p.add_argument("--lr", type=float, default=DEFAULT_LR)
    p.add_argument("--checkpointing", choices=["auto", "on", "off"], default="auto", help="auto = library default (on for CUDA)")
    p.add_argument("--vocab", type=int, default=None, help="random token ids below this (default: model vocab)")
    p.add_argument("--full_steps", type=int, default=DEFAULT_STEPS); p.add_argument("--full_batches", type=int, default=250)
    p.add_argument("--layers", type=int, default=None, help="override the number of blocks (default 32; smoke 6)")
    p.add_argument("--smoke", action="store_true", help="tiny model and shapes on CPU: checks the script, measures nothing")
    a = p.parse_args()
    if a.smoke: a.batch_size, a.seq_len, a.steps, a.warmup, a.distinct, a.num_layer = 2, 16, 5, 1, 3, 2
    dev = default_device()
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    R = dict(env=env_info(), args=vars(a), runs=[], errors=[])
    print(json.dumps(R["env"]), flush=True)
    for plan in a.plans:
        for mode in a.modes:
            try:
                r = run_one(plan, mode, a, dev); R["runs"].append(r)
                print("RUN", json.dumps({k: v for k, v in r.items() if k not in ("step_seconds", "plan_steps")}), flush=True)
            except Exception as e:
                traceback.print_exc(); R["errors"].append(dict(plan=plan, mode=mode, error=repr(e)))
                gc.collect(); torch.cuda.empty_cache() if dev.type == "cuda" else None
            write_json(out / "results.json", R)
    print(f"\n== SUMMARY train_gpu ({R['env'].get('gpus', ['cpu'])[0]}; batch {a.batch_size}x{a.seq_len}, {a.steps} steps, "
          f"first {a.warmup} warm-up, {a.distinct} distinct batches, checkpointing {a.checkpointing})")
    for r in R["runs"]:
        print(f"{r['plan']:>12} {r['mode']:<13} trains blocks {r['first_trained_block']}..: step {r['median_step_s_first_pass']:.3f} s first-pass / "
              f"{r['median_step_s_cached_prefix']:.3f} s cached ({r['tokens_per_s_first_pass'] or 0:.0f} / {r['tokens_per_s_cached_prefix'] or 0:.0f} tok/s; "
              f"library mean {r['library_seconds_per_step_mean']:.3f} s); peak {r['peak_allocated_gib']:.1f} GiB "
              f"({100 * r['peak_frac_of_80GB']:.0f}% of 80 GB, fits={r['fits_80GB']}; weights {r['weights_gib']:.1f} GiB); "
              f"{r['trainable_params']} trainable params in {r['n_alpha_tensors']} tensors; optimizer: {r.get('optimizer_params')} params, "
              f"{r.get('optimizer_state_tensors')} state tensors ({r.get('optimizer_state_bytes')} B), state for frozen {r.get('optimizer_state_for_frozen')}; "
              f"only alphas train: {r['only_alphas_train']}; full {r['full_run_estimate']['steps']}-step run ~{r['full_run_estimate']['seconds']:.0f} s "
              f"(+ its prefix cache of {r['full_run_estimate']['prefix_cache_gib']:.1f} GiB over {r['full_run_estimate']['batches']} batches, not in the peak above)")
    for e in R["errors"]: print(f"FAILED {e['plan']} {e['mode']}: {e['error']}")
    print(f"wrote {out/'results.json'}")
    sys.exit(1 if R["errors"] and not R["runs"] else 0)

if __name__ == "__main__": main()
