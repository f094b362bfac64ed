"""Scoring without a host-device synchronisation per batch (a trial for issue 15, before it moves into 07).

`score_mmlu` today synchronises the GPU several times a batch: `_pad` copies ids and mask from pageable memory
(`.to(device)` waits for the stream), `_last_logprobs` copies lengths the same way and returns `.cpu()`, and
`_score_subject` writes each batch into a CPU tensor. Each wait drains the GPU queue. `patched()` swaps in versions
that copy from pinned memory without blocking and keep each batch's log-probs on the device, so a subject is
synchronised once, when its results are read.
"""
import math
from contextlib import contextmanager
import torch
import mka_alpha.evaluation as E

def _to(x, device):
    "Host tensor `x` on `device`: pinned and non-blocking on CUDA."
    return x.pin_memory().to(device, non_blocking=True) if torch.device(device).type == "cuda" else x.to(device)

def _pad(seqs, pad_id, device):
    L = max(map(len, seqs))
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long); mask = torch.zeros((len(seqs), L), dtype=torch.long)
    for i, s in enumerate(seqs): ids[i, :len(s)], mask[i, :len(s)] = torch.tensor(s), 1
    return _to(ids, device), _to(mask, device), [len(s) for s in seqs]

def _last_logprobs(model, hidden, lengths, letter_ids):
    rows = torch.arange(len(lengths), device=hidden.device)
    h = hidden[rows, _to(torch.as_tensor(lengths), hidden.device) - 1]
    return E._logprobs(model, h)[:, _to(torch.as_tensor(letter_ids), hidden.device)].float()

def _score_subject(model, tok, s, fewshot, qs, k, letter_ids, batch_size, plain, prefix_reuse, cascade=False,
                   token_budget=None, window=math.inf, enc=None, keep=None):
    pre, suf = enc if enc is not None else E.encode_subject(tok, s, fewshot, qs, k)
    mode = E._subject_mode(plain, prefix_reuse, cascade, len(pre) + max(map(len, suf)), window)
    if mode == "plain": return _ORIG["_score_subject"](model, tok, s, fewshot, qs, k, letter_ids, batch_size, plain,
                                                       prefix_reuse, cascade, token_budget, window, enc, keep)
    bs = E._subject_batches(pre, suf, mode, batch_size, token_budget)
    bs = [b for j, b in enumerate(bs) if keep is None or j in keep]
    out = torch.full((len(suf), 4), math.nan)
    kv = None if mode == "whole" or not bs else E.prefix_kv(model, pre)
    pad, run = tok.pad_token_id or 0, dict(cascade=E.score_cascade, prefix=E.score_suffixes).get(mode)
    parts, rows = [], []
    for idx in bs:
        xs = [suf[i] for i in idx]
        parts.append(run(model, kv, xs, letter_ids, pad) if run else E.score_batch(model, [pre + x for x in xs], letter_ids, pad))
        rows += idx
    if parts: out[rows] = torch.cat(parts).cpu()  # the subject's one synchronisation
    return out, len(pre), suf, mode

_ORIG = {}

def raise_recompile_limits(n=256):
    "More recompiles per frame before dynamo gives up and runs the frame eagerly (default 8)."
    import torch._dynamo.config as C
    for k, v in (("recompile_limit", n), ("cache_size_limit", n), ("accumulated_recompile_limit", 16 * n),
                 ("accumulated_cache_size_limit", 16 * n)):
        if hasattr(C, k): setattr(C, k, v)

@contextmanager
def patched(on=True):
    "While active, `mka_alpha.evaluation` scores without per-batch synchronisation."
    names = ("_pad", "_last_logprobs", "_score_subject")
    if on:
        _ORIG.update({n: getattr(E, n) for n in names})
        for n in names: setattr(E, n, globals()[n])
    try: yield on
    finally:
        if on:
            for n in names: setattr(E, n, _ORIG[n])

@contextmanager
def f32_merge(on=True):
    "While active, cascade attention merges its prefix and suffix parts in float32 (one rounding to bf16, at the end)."
    old = E._merge
    if on: E._merge = lambda o1, l1, o2, l2: torch.lerp(o2.float(), o1.float(), torch.sigmoid(l1 - l2).float()[..., None])
    try: yield on
    finally: E._merge = old
