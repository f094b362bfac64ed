"""Run the fast module notebooks and keep their outputs, so the docs show them (issue 16 item 6, as fastcore does).

python tools/keep_outputs.py [NOTEBOOK ...]    # default: FAST below

Cells flagged `slow`, `gpu` or `notest` (settings.ini `tst_flags`) and `#| eval: false` are not run and keep no
output, as under `nbdev_test`. Outputs are written into the notebook; run `nbdev_clean` afterwards (it keeps outputs:
settings.ini `clear_all = False`). A notebook whose run raises is left unchanged.
"""
import sys
from pathlib import Path
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell
from fastcore.xtras import working_directory
from nbdev.process import NBProcessor
from nbdev.config import get_config

FAST = ["00_utils", "00_models", "03_plans", "04_mergeable", "06_fusion", "09_plots", "11_stats", "12_harness"]

def keep_outputs(path: Path) -> bool:
    flags = set(get_config().tst_flags.split())
    nb = NBProcessor(path, process=True).nb
    def skip(c):
        if c.cell_type != "code": return True
        d = getattr(c, "directives_", {}) or {}
        return d.get("eval:", [""])[0].lower() == "false" or bool(flags & d.keys())
    k = CaptureShell(path)
    try:
        with working_directory(path.parent): k.run_all(nb, exc_stop=True, preproc=skip)
    except Exception as e:
        print(f"{path.name}: not changed ({type(e).__name__}: {e})"); return False
    raw = read_nb(path)
    for rc, c in zip(raw.cells, nb.cells):
        if rc.cell_type == "code": rc["outputs"] = c.get("outputs", []) if not skip(c) else []
    write_nb(raw, path); print(f"{path.name}: outputs kept"); return True

if __name__ == "__main__":
    names = sys.argv[1:] or FAST
    ok = [keep_outputs(Path("nbs")/f"{n.removesuffix('.ipynb')}.ipynb") for n in names]
    sys.exit(0 if all(ok) else 1)
