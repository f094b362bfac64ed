"""Where the time of the fast MMLU path goes on a GPU: torch.profiler over a few subjects of the 8B-shaped model.

Prints the top CUDA kernels by total time, GPU busy time against wall time, and the wall time of each stage
(tokenizing, prefix, suffix batches). Usage: PYTHONPATH=.:<site> python benchmarks/eval_profile.py --tok DIR [--subjects ...]
"""
import argparse, time
import torch
from torch.profiler import profile, ProfilerActivity
from transformers import AutoTokenizer
from mka_alpha.data import load_mmlu, split_mmlu
from mka_alpha.evaluation import score_mmlu
from bench_common import build_model, default_device  # benchmarks/ is on sys.path when run as a script

p = argparse.ArgumentParser()
p.add_argument("--tok", required=True); p.add_argument("--batch_size", type=int, default=64)
p.add_argument("--subjects", nargs="+", default=["high_school_psychology", "professional_law", "moral_scenarios"])
p.add_argument("--smoke", action="store_true")
a = p.parse_args()
tok = AutoTokenizer.from_pretrained(a.tok); tok.pad_token = tok.pad_token or tok.eos_token
splits = split_mmlu(load_mmlu())
model = build_model("llama8b", default_device(), smoke=a.smoke)[0]
score_mmlu(model, tok, splits, batch_size=a.batch_size, subjects=["astronomy"], progress=False)
t = time.perf_counter(); recs, st = score_mmlu(model, tok, splits, batch_size=a.batch_size, subjects=a.subjects, progress=False)
print(f"unprofiled: {len(recs)} q in {st['seconds']:.2f} s, {st['prefix_tokens'] + st['question_tokens']} tokens run", flush=True)
acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
with profile(activities=acts) as prof:
    t = time.perf_counter(); score_mmlu(model, tok, splits, batch_size=a.batch_size, subjects=a.subjects, progress=False); wall = time.perf_counter() - t
key = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
ka = prof.key_averages()
print(ka.table(sort_by=key, row_limit=30))
if torch.cuda.is_available():
    busy = sum(e.device_time_total for e in ka if e.device_type == torch.autograd.DeviceType.CUDA) / 1e6
    print(f"== profiled wall {wall:.2f} s, GPU kernel time {busy:.2f} s ({100 * busy / wall:.0f}% busy)")
print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=15))
