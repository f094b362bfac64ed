"""Trial changes to cascade scoring, as patches of `mka_alpha.kernels`, for `eval_gpu.py` variants.

The trials that won moved into the library and their patches are gone: one host-device wait per subject (`_to_device`,
`_run_batches`) and the raised dynamo recompile limits (`compiled_blocks`); the `async*` variants of the
`gpu_h100_i15b` logs measured them before the move. Left here: `f32_merge`, measured and not adopted (it did not
bring the cascade closer to the plain loop on the real default model).
"""
from contextlib import contextmanager
import torch
import mka_alpha.kernels as E

@contextmanager
def f32_merge(on=True):
    "While active, cascade attention merges its prefix and suffix parts in float32 (one rounding to bf16, at the end)."
    old = E._merge
    if on: E._merge = lambda o1, l1, o2, l2: torch.lerp(o2.float(), o1.float(), torch.sigmoid(l1 - l2).float()[..., None])
    try: yield on
    finally: E._merge = old
