"""Collect the GPU grid (benchmarks/gpu_i23.sh grid) from GRID into OUT: status, sweep profile, GPU samples and the
run files (grid_status.txt, profile.json, grid_tables.tar.gz with gpu.csv and the log, grid_predictions_N.tar.gz),
small enough to come back from the device machine (at most 8 files of 16 MB).
Usage: python3 benchmarks/grid_collect.py GRID OUT [PREDS] (PREDS 0: without the predictions)"""
import io, json, sys, tarfile, time
from pathlib import Path
from mka_alpha.experiments import sweep_profile, profile_table

grid, out = Path(sys.argv[1]), Path(sys.argv[2]); out.mkdir(parents=True, exist_ok=True); runs = grid/"runs"
done = sorted(p.parent for p in runs.rglob("results.json") if (p.parent/"run.ipynb").exists())
log = (grid/"log.txt").read_text() if (grid/"log.txt").exists() else ""
status = [f"{time.strftime('%H:%M:%S')} finished runs: {len(done)}", *log.splitlines()[-40:]]
(out/"grid_status.txt").write_text("\n".join(status) + "\n"); print("\n".join(status[:1] + status[-8:]))
try:
    prof = sweep_profile(runs)
    (out/"profile.json").write_text(json.dumps(prof, indent=1))
    print(profile_table(prof))
except FileNotFoundError as e: print(e)

def add(tar, path, data=None):
    name = str(path.relative_to(grid))
    if data is None: tar.add(path, arcname=name); return
    ti = tarfile.TarInfo(name); ti.size = len(data); ti.mtime = path.stat().st_mtime; tar.addfile(ti, io.BytesIO(data))

with tarfile.open(out/"grid_tables.tar.gz", "w:gz") as tar:
    for p in sorted(runs.rglob("*")):
        if not p.is_file() or p.name.startswith("predictions") or p.suffix in (".safetensors", ".pt", ".bin"): continue
        if p.suffix == ".ipynb":  # the cells' timings and parameters, without their outputs
            nb = json.loads(p.read_text())
            for c in nb["cells"]: c["outputs"] = [] if c.get("cell_type") == "code" else c.get("outputs")
            add(tar, p, json.dumps(nb).encode()); continue
        add(tar, p)
    for f in ("gpu.csv", "starts.txt", "log.txt"):
        if (grid/f).exists(): add(tar, grid/f)
part, size, tar = 0, 0, None
preds = sys.argv[3] != "0" if len(sys.argv) > 3 else True
for p in sorted(runs.rglob("predictions*")) if preds else []:
    if tar is None or size > 80e6:  # raw bytes a part: about 12 MB gzipped
        if tar: tar.close()
        part += 1; size = 0; tar = tarfile.open(out/f"grid_predictions_{part}.tar.gz", "w:gz")
    add(tar, p); size += p.stat().st_size
if tar: tar.close()
print("collected:", sorted((f.name, f.stat().st_size) for f in out.iterdir()))
