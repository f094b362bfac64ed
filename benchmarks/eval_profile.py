"""Where the time of the fast MMLU path goes on a GPU: torch.profiler over a few subjects of the 8B-shaped model, for
the landed path (`before`: cascade=False, token_budget=None, prefetch=False) and the current defaults (`after`:
packed suffixes on a GPU, token-budget batches, encoding ahead), optionally `cascade` (pack=False, the previous
defaults) and `compile` (after + torch.compile).

Per variant: the top CUDA kernels by total time, GPU busy time against wall time, and the top CPU ops.
Usage: PYTHONPATH=<site>:$PWD python3 benchmarks/eval_profile.py --tok DIR [--subjects ...] [--variants before after]
"""
import argparse, time
import torch
from torch.profiler import profile, ProfilerActivity
from transformers import AutoTokenizer
from mka_alpha.data import load_mmlu, split_mmlu
from mka_alpha.scoring import score_mmlu
from mka_alpha.kernels import _KERNELS
from bench_common import build_model, default_device  # benchmarks/ is on sys.path when run as a script

p = argparse.ArgumentParser()
p.add_argument("--tok", required=True); p.add_argument("--batch_size", type=int, default=64)
p.add_argument("--subjects", nargs="+", default=["high_school_psychology", "professional_law", "moral_scenarios"])
p.add_argument("--variants", nargs="+", default=["before", "after"], choices=["before", "cascade", "after", "compile"])
p.add_argument("--row_limit", type=int, default=30)
p.add_argument("--smoke", action="store_true")
a = p.parse_args()
tok = AutoTokenizer.from_pretrained(a.tok); tok.pad_token = tok.pad_token or tok.eos_token
splits = split_mmlu(load_mmlu())
model = build_model("llama8b", default_device(), smoke=a.smoke)[0]
cuda = torch.cuda.is_available()
KW = dict(before=dict(cascade=False, token_budget=None, prefetch=False, batch_size=a.batch_size, pack=False), after={},
          cascade=dict(pack=False), compile=dict(compile=True))
per_subject = 8 if a.smoke else None

for name in a.variants:
    kw = KW[name]
    score_mmlu(model, tok, splits, subjects=["astronomy"], progress=False, **kw)  # warm-up (and compiling)
    score_mmlu(model, tok, splits, subjects=a.subjects[:1], per_subject=per_subject, progress=False, **kw)
    recs, st = score_mmlu(model, tok, splits, subjects=a.subjects, per_subject=per_subject, progress=False, **kw)
    print(f"\n==== {name} {st['options']}: unprofiled {len(recs)} q in {st['seconds']:.2f} s, "
          f"{st['prefix_tokens'] + st['question_tokens']} tokens run; cascade kernels "
          f"{ {str(k): f.__qualname__ for k, f in _KERNELS.items()} }", flush=True)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        t = time.perf_counter()
        score_mmlu(model, tok, splits, subjects=a.subjects, per_subject=per_subject, progress=False, **kw)
        if cuda: torch.cuda.synchronize()
        wall = time.perf_counter() - t
    ka = prof.key_averages()
    print(ka.table(sort_by="cuda_time_total" if cuda else "cpu_time_total", row_limit=a.row_limit))
    if cuda:
        busy = sum(e.device_time_total for e in ka if e.device_type == torch.autograd.DeviceType.CUDA) / 1e6
        print(f"== {name}: profiled wall {wall:.2f} s, GPU kernel time {busy:.2f} s ({100 * busy / wall:.0f}% busy)")
    print(ka.table(sort_by="cpu_time_total", row_limit=15), flush=True)
