"""Data-parallel 5-shot MMLU across GPUs (torch.distributed, launched by torchrun): every rank builds the same model
(random bf16 weights from the same seed; a weight fingerprint is compared across ranks and rank 0's weights are
broadcast if they differ), takes a share of the subjects (greedy longest-first partition balanced by the tokens the
fast path runs, i.e. each subject's few-shot prefix + its question suffixes, counted with the library's
`encode_subject`; or by question count), runs the library's `score_mmlu(..., subjects=[its subjects])`, and rank 0
gathers all records (`gather_object`) and writes results.json + predictions.jsonl (the library's `save_run`).

Reported: per-rank subjects, questions, tokens, seconds (score_mmlu's own timer), q/s, peak memory; total wall time
barrier-to-barrier (after build and warm-up); questions/s overall; load imbalance (max / mean rank time).
Run it with 1 process for the baseline and N for the parallel run; `benchmarks/dp_summary.py BASE DP` (or `--baseline
BASE` here) gives speedup t1/tN, scaling efficiency t1 / (N * tN), and the agreement of the gathered predictions with
the 1-process predictions.

Usage (repo root, PYTHONPATH=/tmp/site:$PWD):
    python3 -m torch.distributed.run --standalone --nproc_per_node 1 benchmarks/eval_dp.py --tok .gpu/common/smol_tok --out OUT/dp1
    python3 -m torch.distributed.run --standalone --nproc_per_node 2 benchmarks/eval_dp.py --tok .gpu/common/smol_tok --out OUT/dp2 --baseline OUT/dp1
    [--model llama8b|smollm2] [--subjects S ...] [--per_subject N] [--batch_size 64] [--balance tokens|questions]
    smoke (CPU, gloo backend): add --smoke (tiny model; default 2 subjects x 6 questions)
Without torchrun it runs as a single process.
"""
import argparse, datetime, json, os, sys, time, traceback
from pathlib import Path
import torch
import torch.distributed as dist
from bench_common import build_model, default_device, env_info, load_tok, mem, now, param_checksum, reset_peak, sync, write_json
from mka_alpha.data import load_mmlu, split_mmlu
from mka_alpha.prompts import encode_subject
from mka_alpha.scoring import score_mmlu, select_questions, summarize
from mka_alpha.evaluation import save_run
from mka_alpha.utils import n_params

def partition(costs: dict, n: int) -> list:
    "Greedy longest-processing-time partition of `{subject: cost}` into `n` lists (each list in the selection's order)."
    loads, parts = [0.] * n, [[] for _ in range(n)]
    for s in sorted(costs, key=lambda s: -costs[s]):
        i = min(range(n), key=lambda i: loads[i]); parts[i].append(s); loads[i] += costs[s]
    order = {s: j for j, s in enumerate(costs)}
    return [sorted(p, key=order.get) for p in parts], loads

def subject_costs(tok, splits, sel, k, balance) -> dict:
    "Per subject: tokens the fast path runs (prefix once + every question suffix), or the question count."
    if balance == "questions": return {s: float(len(q)) for s, q in sel.items()}
    out = {}
    for s, qs in sel.items():
        pre, suf = encode_subject(tok, s, splits.fewshot[s], qs, k)
        out[s] = float(len(pre) + sum(map(len, suf)))
    return out

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tok", required=True); p.add_argument("--data_dir", default=None); p.add_argument("--out", required=True)
    p.add_argument("--model", choices=["llama8b", "smollm2"], default="llama8b")
    p.add_argument("--subjects", nargs="*", default=None, help="subject names or categories (default: all 57)")
    p.add_argument("--per_subject", type=int, default=None, help="at most this many questions per subject")
    p.add_argument("--k", type=int, default=5); p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--balance", choices=["tokens", "questions"], default="tokens")
    p.add_argument("--baseline", default=None, help="results folder of the 1-process run: print speedup, efficiency, agreement")
    p.add_argument("--smoke", action="store_true", help="tiny model, CPU/gloo allowed, 2 subjects x 6 questions: checks the script only")
    p.add_argument("--seed_by_rank", action="store_true", help="test only: build different weights per rank to exercise the broadcast")
    a = p.parse_args()
    if a.smoke:
        a.subjects = a.subjects or ["astronomy", "virology"]; a.per_subject = a.per_subject or 6; a.batch_size = min(a.batch_size, 4)
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    dev = default_device()
    if dev.type == "cuda": torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if distributed: dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30), **({"device_id": dev} if dev.type == "cuda" else {}))
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    def barrier():
        sync(dev)
        if distributed: dist.barrier(**({"device_ids": [dev.index]} if dev.type == "cuda" else {}))
        sync(dev)
    log = lambda *x: print(f"[rank {rank}]", *x, flush=True)
    out = Path(a.out)
    if rank == 0: out.mkdir(parents=True, exist_ok=True)

    tok = load_tok(a.tok)
    splits = split_mmlu(load_mmlu(a.data_dir), k=a.k)
    sel = select_questions(splits, a.subjects, None, a.per_subject)
    plan = [None]
    if rank == 0:
        t0 = time.perf_counter(); costs = subject_costs(tok, splits, sel, a.k, a.balance)
        parts, loads = partition(costs, world)
        plan = [dict(parts=parts, loads=loads, costs=costs, partition_s=time.perf_counter() - t0)]
    if distributed: dist.broadcast_object_list(plan, src=0)
    plan = plan[0]; mine = plan["parts"][rank]

    t0 = time.perf_counter(); model, src = build_model(a.model, dev, smoke=a.smoke, tok_dir=a.tok, seed=rank if a.seed_by_rank else 0); sync(dev); build_s = time.perf_counter() - t0
    ck = param_checksum(model); cks = [None] * world
    if distributed: dist.all_gather_object(cks, ck)
    else: cks = [ck]
    broadcast = False
    if len(set(cks)) > 1:  # weights differ across ranks: take rank 0's
        log(f"weight fingerprints differ across ranks {cks}: broadcasting rank 0's weights")
        for t in list(model.parameters()) + list(model.buffers()): dist.broadcast(t.data, src=0)
        broadcast = True; ck2 = [None] * world; dist.all_gather_object(ck2, param_checksum(model))
        if len(set(ck2)) > 1: raise RuntimeError(f"weights still differ after the broadcast: {ck2}")
    # warm-up on the first selected subject (same on every rank)
    first = next(iter(sel))
    score_mmlu(model, tok, splits, k=a.k, batch_size=a.batch_size, subjects=[first], per_subject=min(a.batch_size, len(sel[first])), progress=False)
    reset_peak(dev)
    barrier(); t_start = time.perf_counter()
    if mine:
        recs, st = score_mmlu(model, tok, splits, k=a.k, batch_size=a.batch_size, subjects=mine, per_subject=a.per_subject, progress=False)
    else: recs, st = [], dict(seconds=0., questions_per_s=0., prefix_tokens=0, question_tokens=0, prompt_tokens=0)
    t_rank = time.perf_counter() - t_start
    barrier(); t_total = time.perf_counter() - t_start
    info = dict(rank=rank, device=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", n_subjects=len(mine), subjects=mine,
                n_questions=len(recs), predicted_cost=plan["loads"][rank], score_seconds=st["seconds"], rank_wall_s=t_rank,
                questions_per_s=len(recs) / t_rank if t_rank > 0 else 0., build_s=build_s, weight_fingerprint=ck,
                peak_allocated_gib=mem(dev)["peak_allocated_gib"], **{k: st[k] for k in ("prefix_tokens", "question_tokens", "prompt_tokens")})
    gathered = [None] * world if rank == 0 else None
    if distributed: dist.gather_object((info, recs), gathered, dst=0)
    else: gathered = [(info, recs)]
    if rank == 0:
        ranks = [g[0] for g in gathered]
        allrecs = sorted([r for g in gathered for r in g[1]], key=lambda r: (r["subject"], r["index"]))
        times = [r["rank_wall_s"] for r in ranks]
        s = summarize(allrecs)
        R = dict(env=env_info(), args=vars(a), model=src, n_params=n_params(model), world_size=world, backend=backend if distributed else "none",
                 balance=a.balance, partition_s=plan["partition_s"], weights_identical_at_build=len(set(cks)) == 1, weights_broadcast=broadcast,
                 n_questions=len(allrecs), n_subjects=len(sel), total_wall_s=t_total, questions_per_s=len(allrecs) / t_total,
                 max_rank_s=max(times), mean_rank_s=sum(times) / len(times), imbalance=max(times) / (sum(times) / len(times)) if sum(times) > 0 else float("nan"),
                 predicted_imbalance=max(plan["loads"]) / (sum(plan["loads"]) / world), per_rank=ranks,
                 accuracy=s["average_accuracy"], macro_accuracy=s["macro_accuracy"], mean_gold_logprob=s["mean_gold_logprob"])
        save_run(out, R, allrecs)
        print(f"\n== SUMMARY eval_dp ({world} process(es), {R['backend']}, {src}, batch {a.batch_size}, balance by {a.balance})")
        for r in ranks:
            print(f"rank {r['rank']} ({r['device']}): {r['n_subjects']} subjects, {r['n_questions']} q, {r['prefix_tokens'] + r['question_tokens']} tokens run, "
                  f"{r['rank_wall_s']:.1f} s ({r['questions_per_s']:.1f} q/s), peak {r['peak_allocated_gib']:.1f} GiB, build {r['build_s']:.1f} s")
        print(f"total {R['n_questions']} q in {t_total:.1f} s barrier-to-barrier = {R['questions_per_s']:.1f} q/s; rank-time imbalance {R['imbalance']:.3f} "
              f"(predicted {R['predicted_imbalance']:.3f}); weights identical at build: {R['weights_identical_at_build']} (rank 0's broadcast: {R['weights_broadcast']}); accuracy {R['accuracy']:.4f}")
        print(f"wrote {out/'results.json'}")
        if a.baseline:
            try:
                sys.path.insert(0, str(Path(__file__).parent)); from dp_summary import compare, report
                report(compare(a.baseline, out))
            except Exception: traceback.print_exc()
    if distributed: barrier(); dist.destroy_process_group()

if __name__ == "__main__": main()
