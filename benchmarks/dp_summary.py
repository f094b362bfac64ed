"""Scaling of the data-parallel MMLU evaluation (benchmarks/eval_dp.py): combines the 1-process run BASE and the
N-process run DP into speedup t1/tN and scaling efficiency t1 / (N * tN) (on the barrier-to-barrier wall time, and on
the slowest rank's scoring time), and checks that the gathered N-process predictions equal the 1-process ones
(fraction of equal predicted letters, max |logprob diff|, questions missing on either side).

Usage: python3 benchmarks/dp_summary.py OUT/dp1 OUT/dp2 [--out OUT/dp_summary.json]
"""
import argparse, json
from pathlib import Path

def _load(d):
    d = Path(d)
    res = json.loads((d / "results.json").read_text())
    preds = {(r["subject"], r["index"]): r for r in map(json.loads, (d / "predictions.jsonl").read_text().splitlines())}
    return res, preds

def compare(base_dir, dp_dir) -> dict:
    b, pb = _load(base_dir); d, pd = _load(dp_dir)
    n, t1, tn = d["world_size"], b["total_wall_s"], d["total_wall_s"]
    common = pb.keys() & pd.keys()
    agree = sum(pb[k]["pred"] == pd[k]["pred"] for k in common)
    dlp = max((max(abs(x - y) for x, y in zip(pb[k]["logprobs"], pd[k]["logprobs"])) for k in common), default=float("nan"))
    return dict(base=str(base_dir), dp=str(dp_dir), base_world_size=b["world_size"], world_size=n, devices=[r["device"] for r in d["per_rank"]],
                n_questions_base=b["n_questions"], n_questions_dp=d["n_questions"],
                t1_s=t1, tN_s=tn, speedup=t1 / tn, efficiency=t1 / (n * tn),
                t1_max_rank_s=b["max_rank_s"], tN_max_rank_s=d["max_rank_s"], efficiency_rank_time=b["max_rank_s"] / (n * d["max_rank_s"]),
                imbalance=d["imbalance"], questions_per_s_base=b["questions_per_s"], questions_per_s_dp=d["questions_per_s"],
                compared=len(common), missing_in_dp=len(pb.keys() - pd.keys()), missing_in_base=len(pd.keys() - pb.keys()),
                prediction_agreement=agree / len(common) if common else float("nan"), max_abs_logprob_diff=dlp,
                accuracy_base=b["accuracy"], accuracy_dp=d["accuracy"])

def report(c):
    print(f"\n== SUMMARY dp scaling: {c['world_size']} vs {c['base_world_size']} process(es) on {', '.join(c['devices'])}")
    print(f"t1 {c['t1_s']:.1f} s, t{c['world_size']} {c['tN_s']:.1f} s (barrier-to-barrier) -> speedup {c['speedup']:.2f}x, "
          f"efficiency t1/(N*tN) = {100 * c['efficiency']:.1f}%; on slowest-rank time {100 * c['efficiency_rank_time']:.1f}%; imbalance {c['imbalance']:.3f}; "
          f"{c['questions_per_s_base']:.1f} -> {c['questions_per_s_dp']:.1f} q/s")
    print(f"predictions: {c['compared']} compared, agreement {100 * c['prediction_agreement']:.2f}%, max |dlogp| {c['max_abs_logprob_diff']:.3g}, "
          f"missing in dp {c['missing_in_dp']}, missing in base {c['missing_in_base']}; accuracy {c['accuracy_base']:.4f} vs {c['accuracy_dp']:.4f}")

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base"); p.add_argument("dp"); p.add_argument("--out", default=None)
    a = p.parse_args()
    c = compare(a.base, a.dp); report(c)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True); Path(a.out).write_text(json.dumps(c, indent=2)); print(f"wrote {a.out}")

if __name__ == "__main__": main()
