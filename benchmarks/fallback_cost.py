"""What each fallback of the MMLU scoring costs (issue 22), on this machine's CPU or a GPU.

A random 4-block Llama (8 query heads over 4 KV heads of 64, the geometry whose short packs crashed FlexAttention's
decoding kernel) scores the same questions (all 57 subjects, `--per_subject` each) by each exact path directly
(packed, cascade, expanded prefix cache, plain loop), and then with failures forced at each automatic path: the
failing path runs its real work for the subject and then raises (the worst case: nothing of it is kept), so each
row's extra time over the path that takes over is the price of the attempt. Packing is asked for explicitly here
(a CPU does not pick it by itself), so the run treats it as automatic: an explicit request would raise instead. Records must equal those of the path
that takes over. A real kernel failure (a compile that finds no configuration) also pays the attempted compile,
which this CPU run does not have; `short_packs_gpu.py` gives the first-run (compile) times on a GPU.

Usage: PYTHONPATH=$PWD:$PWD/benchmarks python benchmarks/fallback_cost.py --tok .gpu/common/smol_tok --out DIR
"""
import argparse, time, warnings
from pathlib import Path
import torch
from transformers import LlamaConfig
from mka_alpha import scoring as ev  # the module that owns score_mmlu, _run_batches and _fast_options
from mka_alpha.data import load_mmlu, split_mmlu
from bench_common import build_random, env_info, load_tok, write_json

PATHS = dict(packed=dict(pack=True), cascade=dict(pack=False, cascade=True),
             prefix=dict(pack=False, cascade=False), plain=dict(plain=True))
CHAINS = {"packed -> cascade": ({"packed"}, "cascade"), "packed -> cascade -> prefix": ({"packed", "cascade"}, "prefix"),
          "packed -> cascade -> prefix -> plain": ({"packed", "cascade", "prefix"}, "plain")}

def failing(fail):
    "`_run_batches` that runs a failing mode's real work, then raises."
    real = ev._run_batches
    def run(model, mode, *args, **kw):
        out = real(model, mode, *args, **kw)
        if mode in fail: raise RuntimeError(f"forced failure of the {mode} path")
        return out
    return real, run

def timed(model, tok, splits, n, **kw):
    if not kw.get("plain"): ev.score_mmlu(model, tok, splits, per_subject=n, progress=False, **kw)  # warm-up
    t = time.perf_counter(); recs, st = ev.score_mmlu(model, tok, splits, per_subject=n, progress=False, **kw)
    return recs, st, time.perf_counter() - t

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tok", required=True); p.add_argument("--out", type=Path, required=True)
    p.add_argument("--per_subject", type=int, default=2); p.add_argument("--hidden_heads", type=int, default=8)
    a = p.parse_args(argv)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    tok, splits = load_tok(a.tok), split_mmlu(load_mmlu(), k=5)
    cfg = LlamaConfig(hidden_size=512, num_hidden_layers=4, intermediate_size=1024, num_attention_heads=8,
                      num_key_value_heads=4, head_dim=64, vocab_size=len(tok), max_position_embeddings=4096)
    m = build_random(cfg, dev, torch.float32)
    out, direct, rows = dict(env=env_info() | dict(device=dev), per_subject=a.per_subject), {}, []
    for name, kw in PATHS.items():
        recs, st, s = timed(m, tok, splits, a.per_subject, **kw)
        direct[name] = (recs, s); rows.append(dict(run=name, seconds=s, paths=st.get("subjects_by_mode")))
        print(rows[-1], flush=True)
    for chain, (fail, target) in CHAINS.items():
        real, run = failing(fail)
        ev._run_batches, opts = run, ev._fast_options
        ev._fast_options = lambda *a, **k: opts(*a, **k) | dict(strict=())  # pack=True as if chosen automatically
        try:
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always"); recs, st, s = timed(m, tok, splits, a.per_subject, **PATHS["packed"])
        finally: ev._run_batches, ev._fast_options = real, opts
        ref, s_ref = direct[target]
        d = max(abs(x - y) for r1, r2 in zip(recs, ref) for x, y in zip(r1["logprobs"], r2["logprobs"]))
        rows.append(dict(run=f"forced {chain}", seconds=s, over_target_s=s - s_ref, target=target, max_abs_dlogp=d,
                         paths=st["subjects_by_mode"], fallbacks=sum(map(len, st["fallbacks"].values())),
                         warnings=len({str(x.message) for x in w if "scoring failed" in str(x.message)})))
        print(rows[-1], flush=True)
    out["rows"] = rows; a.out.mkdir(parents=True, exist_ok=True); write_json(a.out / "fallback_cost.json", out)
    md = ["| run | seconds | over the path that takes over | paths | fallbacks | warnings | max dlogp vs that path |",
          "|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['run']} | {r['seconds']:.2f} | " + (f"+{r['over_target_s']:.2f} s ({r['target']}) | "
                  f"{r['paths']} | {r['fallbacks']} | {r['warnings']} | {r['max_abs_dlogp']:.1e} |"
                  if "target" in r else f"- | {r['paths']} | - | - | - |"))
    (a.out / "fallback_cost.md").write_text(f"# Fallback cost\n\n{out['env']}, {a.per_subject} questions a subject, "
                                            "57 subjects, float32\n\n" + "\n".join(md) + "\n")
    print("\n".join(md))

if __name__ == "__main__": main()
