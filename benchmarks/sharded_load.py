"""Sharded (pipeline, accelerate `device_map`) loading of the Llama-3-8B-shaped model across 2 GPUs: build the random
bf16 model on GPU 0, record its logits on a 5-shot MMLU prompt and its `score_mmlu` records on a few subjects,
`save_pretrained` it (safetensors) to a temporary folder on local disk, free it, reload it with
`AutoModelForCausalLM.from_pretrained(dir, device_map="auto", max_memory={0: "10GiB", 1: "40GiB"}, dtype=bfloat16)`
so that it MUST split over both GPUs, and report
  * save / load seconds and checkpoint size; `hf_device_map` spread (modules and decoder blocks per device);
    memory allocated per GPU;
  * logits of the sharded model vs the single-GPU model on the prompt (max abs diff, argmax agreement);
  * `score_mmlu` on the sharded model for the subjects: runs or not, time, and prediction agreement / max |dlogp|
    with the single-GPU records.
With fewer than 2 GPUs it says so, writes results.json with `skipped` and exits 0. `--smoke`: tiny model on CPU,
exercises save / reload (device_map='auto' onto the CPU alone: no split), logits and score_mmlu.

Usage (repo root, PYTHONPATH=/tmp/site:$PWD):
    python3 benchmarks/sharded_load.py --tok .gpu/common/smol_tok --out OUT/sharded [--tmp /tmp]
        [--max_memory 0=10GiB,1=40GiB] [--subjects astronomy virology high_school_physics] [--keep]
    python3 benchmarks/sharded_load.py --smoke --tok .gpu/common/smol_tok --out /tmp/sharded_smoke
"""
import argparse, gc, json, shutil, sys, tempfile, time, traceback
from collections import Counter
from pathlib import Path
import torch
from transformers import AutoModelForCausalLM
from bench_common import build_model, env_info, load_tok, mem, now, write_json, GIB
from mka_alpha.data import load_mmlu, split_mmlu, format_prompt
from mka_alpha.scoring import score_mmlu, select_questions

def agreement(r1, r2):
    k = lambda r: (r["subject"], r["index"])
    d1 = {k(r): r for r in r1}; common = [r for r in r2 if k(r) in d1]
    return dict(compared=len(common), agreement=sum(d1[k(r)]["pred"] == r["pred"] for r in common) / max(len(common), 1),
                max_abs_logprob_diff=max((abs(x - y) for r in common for x, y in zip(d1[k(r)]["logprobs"], r["logprobs"])), default=float("nan")))

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tok", required=True); p.add_argument("--data_dir", default=None); p.add_argument("--out", required=True)
    p.add_argument("--model", choices=["llama8b", "smollm2"], default="llama8b")
    p.add_argument("--tmp", default=tempfile.gettempdir(), help="local-disk folder for the temporary checkpoint (~16 GB)")
    p.add_argument("--max_memory", default="0=10GiB,1=40GiB", help="per-GPU caps forcing the split, 'gpu=size,...'")
    p.add_argument("--subjects", nargs="*", default=["astronomy", "virology", "high_school_physics"])
    p.add_argument("--per_subject", type=int, default=None); p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--max_shard_size", default="5GB"); p.add_argument("--keep", action="store_true", help="keep the checkpoint folder")
    p.add_argument("--smoke", action="store_true", help="tiny model on CPU: save/reload without a device_map split")
    a = p.parse_args()
    if a.smoke: a.subjects, a.per_subject, a.batch_size = ["astronomy", "virology"], 5, 4
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    R = dict(env=env_info(), args=vars(a)); ngpu = torch.cuda.device_count()
    print(json.dumps(R["env"]), flush=True)
    if not a.smoke and ngpu < 2:
        R["skipped"] = f"{ngpu} GPU(s) visible: sharded loading needs at least 2"
        write_json(out / "results.json", R)
        print(f"\n== SUMMARY sharded_load: skipped, {R['skipped']}"); return
    dev0 = torch.device("cuda", 0) if ngpu else torch.device("cpu")
    tok = load_tok(a.tok); splits = split_mmlu(load_mmlu(a.data_dir))
    sel = select_questions(splits, a.subjects, None, a.per_subject)
    s0 = next(iter(sel)); prompt = format_prompt(sel[s0][0], splits.fewshot[s0], 5)
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    # --- single-device reference
    t0 = time.perf_counter(); model, src = build_model(a.model, dev0, smoke=a.smoke, tok_dir=a.tok); R["build_s"] = time.perf_counter() - t0
    R |= dict(model=src, prompt_tokens=ids.shape[1], n_questions=sum(map(len, sel.values())))
    with torch.no_grad(): ref = model(input_ids=ids.to(dev0), use_cache=False).logits[0].float().cpu()
    score_mmlu(model, tok, splits, batch_size=a.batch_size, subjects=[s0], per_subject=min(8, len(sel[s0])), progress=False)  # warm-up
    recs1, st1 = score_mmlu(model, tok, splits, batch_size=a.batch_size, subjects=a.subjects, per_subject=a.per_subject, progress=False)
    R["single"] = dict(device=str(dev0), score_seconds=st1["seconds"], questions_per_s=st1["questions_per_s"], memory=mem(dev0) if ngpu else None)
    tmp = Path(tempfile.mkdtemp(dir=a.tmp, prefix="mka_sharded_"))
    try:
        t0 = now(); model.save_pretrained(tmp, max_shard_size=a.max_shard_size); R["save_s"] = time.perf_counter() - t0
        files = sorted(tmp.iterdir())
        R["checkpoint"] = dict(dir=str(tmp), files=[f.name for f in files], gib=sum(f.stat().st_size for f in files) / GIB,
                               safetensors=any(f.suffix == ".safetensors" for f in files))
        del model; gc.collect()
        if ngpu: torch.cuda.empty_cache()
        # --- sharded reload
        kw = {}
        if ngpu >= 2 and not a.smoke:
            kw = dict(device_map="auto", max_memory={int(k): v for k, v in (x.split("=") for x in a.max_memory.split(","))})
        elif a.smoke and not ngpu: kw = dict(device_map="auto", max_memory={"cpu": "2GiB"})  # exercises accelerate's dispatch, no split possible
        R["load_kwargs"] = {k: str(v) for k, v in kw.items()}
        t0 = now(); m2 = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.bfloat16, **kw).eval(); R["load_s"] = now() - t0
        if not kw.get("device_map"): m2.to(dev0)
        dm = getattr(m2, "hf_device_map", None) or {"": str(dev0)}
        blocks = Counter(str(v) for k, v in dm.items() if k.startswith("model.layers."))
        R["device_map"] = dict(modules_per_device=dict(Counter(str(v) for v in dm.values())), blocks_per_device=dict(blocks),
                               map=({k: str(v) for k, v in dm.items()}), split=len(set(map(str, dm.values()))) > 1,
                               parameter_devices=sorted({str(p.device) for p in m2.parameters()}))
        R["gpu_memory_gib"] = {i: mem(i)["allocated_gib"] for i in range(ngpu)}
        first = next(m2.parameters()).device
        with torch.no_grad(): lg = m2(input_ids=ids.to(first), use_cache=False).logits[0].float().cpu()
        R["logits"] = dict(max_abs_diff=(lg - ref).abs().max().item(), max_abs_logit=ref.abs().max().item(),
                           argmax_agreement=(lg.argmax(-1) == ref.argmax(-1)).float().mean().item())
        print("SHARDED", json.dumps({k: R[k] for k in ("save_s", "load_s", "checkpoint", "gpu_memory_gib", "logits")} | {"device_map": {k: v for k, v in R["device_map"].items() if k != "map"}}), flush=True)
        try:
            recs2, st2 = score_mmlu(m2, tok, splits, batch_size=a.batch_size, subjects=a.subjects, per_subject=a.per_subject, progress=False)
            R["sharded_score"] = dict(ok=True, n=len(recs2), score_seconds=st2["seconds"], questions_per_s=st2["questions_per_s"],
                                      vs_single=agreement(recs1, recs2), peak_gib={i: mem(i)["peak_allocated_gib"] for i in range(ngpu)})
        except Exception as e:
            traceback.print_exc(); R["sharded_score"] = dict(ok=False, error=repr(e))
    finally:
        if not a.keep: shutil.rmtree(tmp, ignore_errors=True)
    write_json(out / "results.json", R)
    d, lgd, sc = R["device_map"], R["logits"], R["sharded_score"]
    print(f"\n== SUMMARY sharded_load ({', '.join(R['env'].get('gpus', ['cpu']))}; {src})")
    print(f"save_pretrained {R['save_s']:.1f} s ({R['checkpoint']['gib']:.1f} GiB, {len(R['checkpoint']['files'])} files, safetensors={R['checkpoint']['safetensors']}); "
          f"from_pretrained({R['load_kwargs'] or 'no device_map (smoke)'}) {R['load_s']:.1f} s")
    print(f"device map split: {d['split']}; modules per device {d['modules_per_device']}; blocks per device {d['blocks_per_device']}; "
          f"GPU memory {', '.join(f'{i}: {g:.1f} GiB' for i, g in R['gpu_memory_gib'].items()) or 'n/a'}")
    print(f"logits vs single-device model on a {R['prompt_tokens']}-token prompt: max |diff| {lgd['max_abs_diff']:.3g} (max |logit| {lgd['max_abs_logit']:.3g}), "
          f"argmax agreement {100 * lgd['argmax_agreement']:.1f}%")
    if sc["ok"]:
        v = sc["vs_single"]
        print(f"score_mmlu on the sharded model: {sc['n']} q of {len(a.subjects)} subjects in {sc['score_seconds']:.1f} s ({sc['questions_per_s']:.1f} q/s; single "
              f"device {R['single']['questions_per_s']:.1f} q/s); predictions agree {100 * v['agreement']:.1f}%, max |dlogp| {v['max_abs_logprob_diff']:.3g}")
    else: print(f"score_mmlu on the sharded model FAILED: {sc['error']}")
    print(f"wrote {out/'results.json'}")
    if not sc["ok"]: sys.exit(1)

if __name__ == "__main__": main()
