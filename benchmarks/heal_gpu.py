"""Healing cost on the Llama-3-8B shape (issue 24): random bf16 weights, 32 blocks; the student has `--drop` blocks
removed (every fourth from the back: the middle-to-late blocks pruning removes), the teacher is the dense model.
`healing.heal` trains LoRA adapters on the projections by KD (KL to the teacher, bf16 autocast) on batches of
`--batch` x `--length` random tokens, then merges them. Per variant (rank, blocks = all or adjacent): seconds per step
(a warm-up call of 2 steps first, then `--steps` timed steps, the library's own `HealHistory.seconds_per_step`),
tokens/s, peak GPU memory (`HealHistory.peak_memory_bytes`), trainable parameters, and the merge's result (block
count and parameter count equal to the student's).

Usage (repo root, PYTHONPATH=/tmp/site:$PWD:$PWD/benchmarks):
    python3 benchmarks/heal_gpu.py --out OUT/heal [--steps 10 --ranks 8 64 --blocks all adjacent]
    python3 benchmarks/heal_gpu.py --smoke --out /tmp/heal_smoke     # tiny shapes on CPU: checks the script only
Writes OUT/results.json and prints one line per variant.
"""
import argparse, copy, gc, json, sys
from pathlib import Path
import torch
from bench_common import build_random, default_device, env_info, llama8b_config, write_json, GIB
from mka_alpha.healing import heal, adjacent_blocks
from mka_alpha.models import get_layers
from mka_alpha.plans import remove_layers
from mka_alpha.utils import n_params


def batches(n, batch, length, vocab, dev):
    g = torch.Generator().manual_seed(0)
    ids = [torch.randint(vocab, (batch, length), generator=g) for _ in range(n)]
    return [dict(input_ids=i.to(dev), attention_mask=torch.ones_like(i).to(dev)) for i in ids]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True); p.add_argument("--steps", type=int, default=10)
    p.add_argument("--ranks", type=int, nargs="+", default=[8, 64]); p.add_argument("--blocks", nargs="+",
                                                                                   default=["all", "adjacent"])
    p.add_argument("--drop", type=int, default=8); p.add_argument("--batch", type=int, default=4)
    p.add_argument("--length", type=int, default=512); p.add_argument("--smoke", action="store_true")
    a = p.parse_args(); dev = default_device(); cfg = llama8b_config(a.smoke)
    if a.smoke: a.length, a.steps = 32, 3
    teacher = build_random(copy.deepcopy(cfg), dev); L = cfg.num_hidden_layers  # a config each: removal edits it
    removed = list(range(L - 2, 0, -4))[:a.drop] if not a.smoke else [3]
    data = batches(8, a.batch, a.length, cfg.vocab_size, dev); rows = []
    for rank in a.ranks:
        for which in a.blocks:
            student = remove_layers(build_random(copy.deepcopy(cfg), dev), removed); n0 = n_params(student)
            blocks = adjacent_blocks(L, removed) if which == "adjacent" else None
            try:
                student, _ = heal(student, teacher, data, steps=2, rank=rank, lr=1e-4, blocks=blocks)  # warm-up
                student, h = heal(student, teacher, data, steps=a.steps, rank=rank, lr=1e-4, blocks=blocks)
                row = dict(rank=rank, blocks=which, n_blocks_adapted=len(blocks) if blocks else L - len(removed),
                           seconds_per_step=h.seconds_per_step, tokens_per_s=a.batch * a.length / h.seconds_per_step,
                           peak_memory_gib=h.peak_memory_bytes / GIB, trainable_params=h.trainable_params,
                           loss_first_last=[h.loss[0], h.loss[-1]], blocks_after=len(get_layers(student)),
                           params_equal=n_params(student) == n0)
            except torch.OutOfMemoryError as e: row = dict(rank=rank, blocks=which, error=f"OOM: {e}"[:300])
            rows.append(row); print(json.dumps(row), flush=True)
            del student; gc.collect(); torch.cuda.empty_cache() if dev.type == "cuda" else None
    res = dict(env=env_info(), shape="Llama-3-8B (random)" if not a.smoke else "tiny (smoke)", removed=removed,
               batch=[a.batch, a.length], steps=a.steps, teacher_params=n_params(teacher), rows=rows)
    write_json(Path(a.out)/"results.json", res)
    ok = all("error" not in r and r["params_equal"] and r["blocks_after"] == L - len(removed) for r in rows)
    sys.exit(0 if ok else 1)


if __name__ == "__main__": main()
