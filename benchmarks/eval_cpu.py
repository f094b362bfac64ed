"""Dense 5-shot MMLU of the default model (SmolLM2-135M-Instruct, float32) on this CPU, full evaluation split.

Runs subject by subject and appends each subject's records to `<out>/partial.jsonl`, so it can be stopped and
resumed (already finished subjects are skipped). At the end writes `results.json` + `predictions.jsonl`.
Usage: python benchmarks/eval_cpu.py [--out benchmarks/results/cpu_smollm2_dense] [--batch_size 16]
"""
import argparse, json, time
from pathlib import Path
import torch
from mka_alpha.models import load_model
from mka_alpha.data import load_mmlu, split_mmlu
from mka_alpha.scoring import score_mmlu, summarize
from mka_alpha.heldout import heldout_measures, heldout_texts
from mka_alpha.utils import n_params
from mka_alpha.evaluation import save_run

p = argparse.ArgumentParser()
p.add_argument("--out", default="benchmarks/results/cpu_smollm2_dense"); p.add_argument("--batch_size", type=int, default=16)
p.add_argument("--threads", type=int, default=None, help="torch threads (1 helps when other jobs share the cores)")
p.add_argument("--note", default="mmlu_seconds sums the per-subject times", help="free text stored in results.json")
a = p.parse_args()
if a.threads: torch.set_num_threads(a.threads)
out = Path(a.out); out.mkdir(parents=True, exist_ok=True); part = out/"partial.jsonl"
model, tok = load_model(device="cpu", dtype="float32")
splits = split_mmlu(load_mmlu())
done = [json.loads(l) for l in part.read_text().splitlines()] if part.exists() else []
stats = {d["subject"]: d for d in done}
print(f"{torch.get_num_threads()} threads; {len(stats)} subjects already done", flush=True)
for s in splits.evaluation:
    if s in stats: continue
    recs, st = score_mmlu(model, tok, splits, k=5, batch_size=a.batch_size, subjects=[s], progress=False)
    row = dict(subject=s, records=recs, stats=st)
    with open(part, "a") as f: f.write(json.dumps(row) + "\n")
    stats[s] = row
    n = sum(len(r["records"]) for r in stats.values()); t = sum(r["stats"]["seconds"] for r in stats.values())
    print(f"{s}: {len(recs)} q in {st['seconds']:.0f} s; total {n} q, {t:.0f} s, {n/t:.2f} q/s", flush=True)
recs = [r for s in splits.evaluation for r in stats[s]["records"]]
secs = sum(r["stats"]["seconds"] for r in stats.values())
tokens = {k: sum(r["stats"][k] for r in stats.values()) for k in ("prefix_tokens", "question_tokens", "prompt_tokens")}
t0 = time.perf_counter(); ho = heldout_measures(model, tok, heldout_texts(splits)); ho_s = time.perf_counter() - t0
res = summarize(recs) | dict(k=5, model_path="smollm2-135m", device="cpu", dtype="float32", threads=torch.get_num_threads(),
                             n_params=n_params(model), n_layers=model.config.num_hidden_layers, mmlu_seconds=secs,
                             questions_per_s=len(recs) / secs, tokens=tokens, heldout=ho, heldout_seconds=ho_s,
                             wall_time_s=secs + ho_s, batch_size=a.batch_size,
                             note=a.note)
save_run(out, res, recs)
print(json.dumps({k: v for k, v in res.items() if k not in ("subject_accuracy",)}, indent=1))
