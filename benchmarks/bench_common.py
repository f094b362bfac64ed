"""Shared helpers of the GPU benchmark scripts (train_gpu.py, similarity_gpu.py, eval_dp.py, sharded_load.py):
the random Llama-3-8B-shaped model (as in eval_gpu.py), its tiny `--smoke` variant, timing and memory helpers, JSON output.
Not a benchmark itself.
"""
import json, os, tempfile, time
from pathlib import Path
import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

GIB = 2**30

def default_device():
    "cuda:LOCAL_RANK (torchrun) / cuda:0 when CUDA is present, else cpu (smoke tests only)."
    if torch.cuda.is_available(): return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")

def sync(dev=None):
    if torch.cuda.is_available() and (dev is None or torch.device(dev).type == "cuda"): torch.cuda.synchronize(dev)

def now(dev=None):
    "perf_counter after a device sync."
    sync(dev); return time.perf_counter()

def llama8b_config(smoke=False, num_layers=None) -> LlamaConfig:
    "Llama-3-8B shape (hidden 4096, 32 layers, 32 heads, 8 kv heads, intermediate 14336, vocab 128256); `smoke`: tiny."
    shape = (dict(hidden_size=64, num_hidden_layers=num_layers or 6, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2)
             if smoke else dict(hidden_size=4096, num_hidden_layers=num_layers or 32, intermediate_size=14336, num_attention_heads=32, num_key_value_heads=8))
    return LlamaConfig(**shape, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
                       tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=2)

def build_random(cfg, device, dtype=torch.bfloat16, seed=0):
    "A randomly initialised causal LM of config `cfg`, built directly on `device` in `dtype` (deterministic per seed and device type), eval mode."
    torch.manual_seed(seed)
    old = torch.get_default_dtype(); torch.set_default_dtype(dtype)
    try:
        with torch.device(device): m = AutoModelForCausalLM.from_config(cfg) if not isinstance(cfg, LlamaConfig) else LlamaForCausalLM(cfg)
    finally: torch.set_default_dtype(old)
    return m.to(device).eval()

def build_model(name, device, smoke=False, tok_dir=None, seed=0, num_layers=None):
    "`(model, description)`: 'llama8b' (random, Llama-3-8B shape) or 'smollm2' (random, SmolLM2-135M shape from `tok_dir`'s config.json)."
    if name == "llama8b" or smoke:
        return build_random(llama8b_config(smoke, num_layers), device, seed=seed), ("tiny random Llama (smoke)" if smoke else "random init (Llama-3-8B shape)")
    if name == "smollm2":
        return build_random(AutoConfig.from_pretrained(tok_dir), device, seed=seed), "random init (SmolLM2-135M shape)"
    raise ValueError(f"unknown model {name!r}")

def param_checksum(model) -> float:
    "A float64 fingerprint of the weights (sum of a strided sample of every parameter): equal on ranks with equal weights."
    s = 0.
    for p in model.parameters(): s += p.detach().flatten()[::9973].double().sum().item()
    return s

def mem(dev=None) -> dict:
    "Current / peak allocated and reserved GiB on a CUDA device (zeros on CPU)."
    if not torch.cuda.is_available() or (dev is not None and torch.device(dev).type != "cuda"): return dict(allocated_gib=0., peak_allocated_gib=0., reserved_gib=0., total_gib=0.)
    return dict(allocated_gib=torch.cuda.memory_allocated(dev) / GIB, peak_allocated_gib=torch.cuda.max_memory_allocated(dev) / GIB,
                reserved_gib=torch.cuda.memory_reserved(dev) / GIB, total_gib=torch.cuda.get_device_properties(dev).total_memory / GIB)

def reset_peak(dev=None):
    if torch.cuda.is_available() and (dev is None or torch.device(dev).type == "cuda"): torch.cuda.reset_peak_memory_stats(dev)

def env_info() -> dict:
    import transformers
    d = dict(torch=torch.__version__, transformers=transformers.__version__, cuda=torch.cuda.is_available(), n_gpus=torch.cuda.device_count())
    if torch.cuda.is_available(): d["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return d

def write_json(path, obj):
    "Write `obj` as indented JSON to `path` atomically."
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    with os.fdopen(fd, "w") as f: json.dump(obj, f, indent=2, default=str)
    os.chmod(tmp, 0o644); os.replace(tmp, path)
    return path

def load_tok(tok_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tok_dir)
    if tok.pad_token is None: tok.pad_token = tok.eos_token
    return tok
