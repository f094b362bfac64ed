"""Print `N passed, N failed` for an `nbdev_test --do_print` log (nbdev_test itself prints only "Success.")."""
import re, sys
from pathlib import Path

def summary(log: str) -> tuple[int, int]:
    "Count notebooks that completed and the ones nbdev_test lists as failed."
    done = set(re.findall(r"^- Completed (.+\.ipynb)$", log, flags=re.M))
    block = log.split("nbdev Tests Failed On The Following Notebooks:", 1)
    failed = set(re.findall(r"^\t(\S+\.ipynb)$", block[1], flags=re.M)) if len(block) == 2 else set()
    return len(done) - len({d for d in done if Path(d).name in failed}), len(failed)

if __name__ == "__main__":
    path = Path(sys.argv[1])
    p, f = summary(path.read_text())
    if p + f == 0: f = 1  # nothing ran: that is a failure, not a pass
    line = f"{p} passed, {f} failed"
    print(line)
    with open(path, "a") as fh: fh.write(line + "\n")  # .ci/run reads it from the log
    sys.exit(1 if f else 0)
