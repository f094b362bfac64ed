"""How a Llama-3-70B-shaped model splits over 2 x H200, 4 x H100 and 8 x H100 (weights and each stage's activations).

No weights are made: the model is built on the meta device (`accelerate.init_empty_weights`) and placed with
`accelerate.infer_auto_device_map`, the call `load_model(device_map="auto", max_memory=...)` makes through
`from_pretrained`. Activation figures are computed from the shapes the pipeline uses (bf16), per stage:
similarity extraction, dense reference / held-out measures, MMLU scoring with a cached few-shot prefix, and alpha
training (weight mode, one pair, gradient checkpointing). Runs on a CPU in seconds.

    python benchmarks/plan_70b.py [--json OUT.json]
"""
import argparse, json
from collections import Counter
import torch
import logging, warnings
from accelerate import init_empty_weights, infer_auto_device_map
from accelerate.utils import get_balanced_memory
from transformers import AutoModelForCausalLM, LlamaConfig

GiB = 2**30
MACHINES = {"2 x H200": (2, 141), "4 x H100": (4, 80), "8 x H100": (8, 80)}

def llama70b():
    return LlamaConfig(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                       num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
                       tie_word_embeddings=False, torch_dtype="bfloat16")

def activations(c, B=8, T=512, P=600, S=128, Bq=64, Vb=2):
    "GiB of the largest activation of each stage (bf16 = 2 bytes, logits float32)."
    h, L, kv = c.hidden_size, c.num_hidden_layers, c.num_key_value_heads * (c.hidden_size // c.num_attention_heads)
    return {
        "similarity: L+1 hidden states of a batch (8 x 512), kept on GPU 0": (L + 1) * B * T * h * Vb / GiB,
        "dense reference: final hidden states of a 4,096-token batch": 4096 * h * Vb / GiB,
        "held-out KL: float32 log-probs of 1,024 rows": 1024 * c.vocab_size * 4 * 2 / GiB,
        "MMLU: few-shot prefix KV (600 tokens, all blocks)": 2 * L * P * kv * Vb / GiB,
        "MMLU: one batch of 64 suffixes x 128 tokens (MLP peak)": Bq * S * c.intermediate_size * Vb * 3 / GiB,
        "training: logits of student + teacher (4 x 512, float32)": 2 * 4 * T * c.vocab_size * 4 / GiB,
        "training: checkpointed block inputs (4 x 512, all blocks)": L * 4 * T * h * Vb / GiB,
    }

def plan(c, n, gib, reserve=8):
    with init_empty_weights(): m = AutoModelForCausalLM.from_config(c, dtype=torch.bfloat16)
    total = sum(p.numel() for p in m.parameters()) * 2 / GiB
    mm, ns = {i: (gib - reserve) * GiB for i in range(n)}, m._no_split_modules
    mm = get_balanced_memory(m, mm, no_split_module_classes=ns, dtype=torch.bfloat16)  # what device_map="auto" does
    dm = infer_auto_device_map(m, max_memory=mm, no_split_module_classes=ns, dtype=torch.bfloat16)
    sizes = Counter()
    for name, p in m.named_parameters():
        key = next((k for k in sorted(dm, key=len, reverse=True) if name == k or name.startswith(k + ".") or k == ""), None)
        sizes[dm[key]] += p.numel() * 2 / GiB
    blocks = Counter(dev for k, dev in dm.items() if k.startswith("model.layers."))
    block = sum(p.numel() for p in m.model.layers[0].parameters()) * 2 / GiB
    return dict(total_gib=total, block_gib=block, devices={str(d): dict(weights_gib=round(sizes[d], 1), blocks=blocks.get(d, 0),
                                                      free_gib=round(gib - sizes[d], 1)) for d in sorted(sizes, key=str)},
                fits=all(d != "cpu" and d != "disk" for d in dm.values()))

def main():
    logging.getLogger("accelerate").setLevel(logging.ERROR); warnings.filterwarnings("ignore")
    p = argparse.ArgumentParser(); p.add_argument("--json", default=None); a = p.parse_args()
    c = llama70b(); out = dict(model="Llama-3-70B shape", machines={})
    for name, (n, gib) in MACHINES.items():
        r = plan(c, n, gib); out["machines"][name] = r
        print(f"\n{name} ({gib} GiB each, 8 GiB kept free per GPU for activations): {r['total_gib']:.1f} GiB of bf16 "
              f"weights, {'fits' if r['fits'] else 'DOES NOT FIT (offloads)'}")
        for d, s in r["devices"].items():
            print(f"  device {d}: {s['blocks']:3d} blocks, {s['weights_gib']:6.1f} GiB weights, {s['free_gib']:6.1f} GiB left")
    act = activations(c) | {"weight mode: the fused copy of a block's weights, and its graph (2 copies)":
                            2 * r["block_gib"]}
    out["activations_gib"] = act
    print("\nLargest activation of each stage (GiB, on the GPU that runs it):")
    for k, v in act.items(): print(f"  {v:7.2f}  {k}")
    if a.json: open(a.json, "w").write(json.dumps(out, indent=2))

if __name__ == "__main__": main()
