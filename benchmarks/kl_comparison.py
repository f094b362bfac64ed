"""KL(dense || compressed) on held-out MMLU text for: dropping the merged layers, fixed alpha 0.5, and alphas
trained in the three modes (simple, mlp, weight; optionally per-tensor weight), all fused into real smaller
models. CPU-friendly defaults; writes benchmarks/results/kl_comparison.{json,md}.

    python benchmarks/kl_comparison.py --steps 30
"""
import argparse, json, time
from pathlib import Path
import torch
from mka_alpha.models import load_model
from mka_alpha.data import load_mmlu, split_mmlu, prepare_calibration_dataloader
from mka_alpha.training import (replace_layers_with_mergeable, train_alpha_parameters, kd_loss, DEFAULT_LR, DEFAULT_MLP_LR)
from mka_alpha.fusion import fuse_plan, fuse_mergeable_layers, drop_layers, collect_mlp_alphas
from mka_alpha.utils import n_params

def parse_pairs(s): return [tuple(int(i) for i in p.split(",")) for p in s.split()]

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--pairs", default="22,23 24,25 26,27 28,29", help="merge plan, 'l,m l,m ...'")
    ap.add_argument("--modes", default="simple mlp weight weight_tensor")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--lr", type=float, default=DEFAULT_LR)
    ap.add_argument("--mlp_lr", type=float, default=DEFAULT_MLP_LR)
    ap.add_argument("--num_calibration_samples", type=int, default=24)
    ap.add_argument("--batch_size", type=int, default=4)
    ap.add_argument("--max_length", type=int, default=128)
    ap.add_argument("--heldout", type=int, default=48)
    ap.add_argument("--out", default=str(Path(__file__).parent/"results"))
    a = ap.parse_args()
    pairs, out = parse_pairs(a.pairs), Path(a.out); out.mkdir(parents=True, exist_ok=True)
    dense, tok = load_model(a.model)
    sp = split_mmlu(load_mmlu())
    cal = list(prepare_calibration_dataloader(tok, sp.flat("calibration"), num_samples=a.num_calibration_samples,
                                              batch_size=a.batch_size, max_length=a.max_length, seed=0))
    held = list(prepare_calibration_dataloader(tok, sp.flat("heldout"), num_samples=a.heldout, batch_size=4,
                                               max_length=a.max_length, seed=1, shuffle=False))
    models, train = {}, {}
    models["drop_layers"] = drop_layers(load_model(a.model)[0], pairs)
    models["fixed_0.5"] = fuse_plan(load_model(a.model)[0], pairs, 0.5)[0]
    for mode in a.modes.split():
        m = load_model(a.model)[0]
        kw = dict(per="tensor") if mode == "weight_tensor" else {}
        replace_layers_with_mergeable(m, pairs, mode.split("_")[0], alpha_inits="uniform", **kw)
        t0 = time.perf_counter()
        h = train_alpha_parameters(m, cal, steps=a.steps, lr=a.lr, mlp_lr=a.mlp_lr, progress=False)
        stats = collect_mlp_alphas(m, cal) if mode == "mlp" else None
        info = fuse_mergeable_layers(m)
        train[mode] = dict(seconds_per_step=h.seconds_per_step, train_seconds=time.perf_counter() - t0,
                           loss_first=h.loss[0], loss_last=h.loss[-1], loss_first5=sum(h.loss[:5]) / 5,
                           loss_last5=sum(h.loss[-5:]) / 5, init=h.init_alphas, final=h.alphas[-1],
                           moved=[f - i for f, i in zip(h.alphas[-1], h.init_alphas)], fused_alphas=info["fused_alphas"],
                           mlp_alpha_stats=info["mlp_alpha_stats"])
        print(mode, json.dumps({k: v for k, v in train[mode].items() if k != "fused_alphas"}), flush=True)
        models[f"trained_{mode}"] = m
    kl = {k: 0.0 for k in models}; ntok = 0
    with torch.no_grad():
        for b in held:
            inp = dict(input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=False)
            t = dense(**inp).logits; n = b["attention_mask"].sum().item(); ntok += n
            for k, m in models.items(): kl[k] += kd_loss(m(**inp).logits, t, b["attention_mask"]).item() * n
    kl = {k: v / ntok for k, v in kl.items()}
    res = dict(args=vars(a), pairs=pairs, heldout_tokens=ntok, kl=kl, train=train,
               params={k: n_params(m) for k, m in models.items()} | {"dense": n_params(dense)})
    (out/"kl_comparison.json").write_text(json.dumps(res, indent=2))
    lines = [f"KL(dense || model) on {ntok} held-out tokens; plan {pairs}; {a.steps} steps, lr {a.lr}", "",
             "| model | KL | params |", "|---|---|---|"] + [f"| {k} | {v:.4f} | {res['params'][k]:,} |" for k, v in kl.items()]
    (out/"kl_comparison.md").write_text("\n".join(lines) + "\n"); print("\n".join(lines))

if __name__ == "__main__": main()
