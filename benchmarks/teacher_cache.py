"""Alpha training and healing with and without the teacher cache (`training.TeacherCache`), on the default model.

Each variant trains from the same start on the same calibration batches (MMLU questions, batch 4): `steps` steps
over `batches` batches, so every batch after the first pass is served by the teacher's head alone when the cache
is on. Prints seconds a step with the cache off and on, the steps it served, whether the losses (and, for
training, the alphas) are equal bit for bit, and whether two cache-off runs are (else the device is not deterministic
there, and an unequal cache run says nothing about the cache).

    python benchmarks/teacher_cache.py [--device cpu|cuda] [--steps 12] [--batches 4] [--model default|llama8b]
    python benchmarks/teacher_cache.py --smoke      # the tiny model, a few steps (checks the script)
"""
import argparse, copy, json, time
import torch
from mka_alpha.models import DEFAULT_MODEL, TINY_MODEL, load_model
from mka_alpha.data import load_splits, prepare_calibration_dataloader
from mka_alpha.training import replace_layers_with_mergeable, train_alpha_parameters
from mka_alpha.healing import heal
from mka_alpha.plans import remove_layers

PLAN = [(2, 3), (12, 13), (12, 14), (16, 17)]  # bi_merge k = 4 on SmolLM2-135M (the grid's point)


def train(dense, dl, mode, steps, cache, dtype):
    m = replace_layers_with_mergeable(copy.deepcopy(dense), PLAN, mode)
    ac = dict(autocast=True) if dtype == torch.bfloat16 else {}
    t = time.perf_counter(); h = train_alpha_parameters(m, dl, steps=steps, progress=False, teacher_cache=cache, **ac)
    return time.perf_counter() - t, h.loss, h.alphas, h.teacher_cached


def healing(dense, dl, steps, cache):
    student = remove_layers(copy.deepcopy(dense), [3, 13, 14, 17])
    t = time.perf_counter(); _, h = heal(student, dense, dl, steps=steps, teacher_cache=cache)
    return time.perf_counter() - t, h.loss, None, h.teacher_cached


def main(a):
    if a.model == "llama8b" and not a.smoke:  # the second geometry: random weights of the Llama-3-8B shape, bf16
        from bench_common import build_random, llama8b_config, load_tok
        from mka_alpha.models import default_model_dir
        model, tok = build_random(llama8b_config(), a.device), load_tok(a.tok or default_model_dir())
    else: model, tok = load_model(TINY_MODEL if a.smoke else DEFAULT_MODEL, device=a.device)
    if a.smoke: PLAN[:] = [(0, 1)]
    dtype = next(model.parameters()).dtype
    splits = load_splits()
    dl = list(prepare_calibration_dataloader(tok, splits.flat("calibration"), num_samples=4 * a.batches, batch_size=4,
                                             max_length=512))
    cache_on = 2**30  # explicit: on a GPU the default is off
    rows = []
    for name, run in [(f"train {m}", lambda c, m=m: train(model, dl, m, a.steps, c, dtype)) for m in a.modes] + \
                     ([] if a.smoke else [("heal rank 8", lambda c: healing(model, dl, a.steps, c))]):
        warm = run(0)  # warm-up (allocations, first-call costs); also says whether cache-off runs repeat bit for bit
        off, on = run(0), run(cache_on)
        rows.append(dict(run=name, s_step_off=off[0] / a.steps, s_step_on=on[0] / a.steps, served=on[3],
                         same_loss=off[1] == on[1], same_alphas=off[2] == on[2], speedup=off[0] / on[0],
                         off_repeats=warm[1:3] == off[1:3]))
        print(f"{name:22} off {off[0] / a.steps:.3f} s/step  on {on[0] / a.steps:.3f} s/step  x{off[0] / on[0]:.2f}  "
              f"served {on[3]}/{a.steps}  same loss {off[1] == on[1]}  same alphas {off[2] == on[2]}  "
              f"off repeats {warm[1:3] == off[1:3]}", flush=True)
    print(json.dumps(dict(model=a.model, device=a.device, dtype=str(dtype), steps=a.steps, batches=a.batches, rows=rows)))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu"); p.add_argument("--steps", type=int, default=12)
    p.add_argument("--batches", type=int, default=4); p.add_argument("--model", default="default",
                                                                   choices=["default", "llama8b"])
    p.add_argument("--tok", default=None, help="tokenizer folder for llama8b (default: the default model's)")
    p.add_argument("--modes", nargs="+", default=["simple", "weight"]); p.add_argument("--smoke", action="store_true")
    a = p.parse_args()
    if a.smoke: a.steps, a.batches = 4, 2
    main(a)
