"""Cell-size and demonstration report for the module notebooks (issue 16, item 7).

python tools/cell_stats.py            # table per notebook
python tools/cell_stats.py --check    # exit 1 where a limit is broken, listing each offence

Limits: exported cells have a median of at most 8 lines and none over 25 (directive lines and blank lines not
counted); every exported cell (but the import cells) is followed, before the next exported cell, by a code cell that uses one of the
names it defines; no line in an exported cell is over 120 characters.
"""
import ast, json, re, statistics, sys
from pathlib import Path

MEDIAN, MAX, WIDTH = 8, 25, 120
EXPORT = re.compile(r'^#\|\s*export', re.M)

def _src(c): return ''.join(c['source'])

def _body(src): return [l for l in src.splitlines() if l.strip() and not l.lstrip().startswith('#|')]

def _defined(src):
    "Names a cell defines at top level (functions, classes, assignments, @patch methods)."
    try: tree = ast.parse(src)
    except SyntaxError: return set()
    out = set()
    for n in tree.body:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): out.add(n.name)
        elif isinstance(n, (ast.Assign, ast.AnnAssign)):
            for t in (n.targets if isinstance(n, ast.Assign) else [n.target]):
                out |= {x.id for x in ast.walk(t) if isinstance(x, ast.Name)}
    return out

def _tests(src): return len(re.findall(r'\b(?:test_\w+|assert)\b', src))

def stats(path):
    cells = [c for c in json.load(open(path))['cells'] if c['cell_type'] == 'code']
    sizes, undemo, wide, tests, exported = [], [], [], 0, 0
    for i, c in enumerate(cells):
        s = _src(c)
        if not EXPORT.search(s):
            tests += _tests(s); continue
        if all(re.match(r'(import |from \S+ import |\s)', l) for l in _body(s)): continue  # the module's imports
        exported += 1
        sizes.append(len(_body(s)))
        wide += [l for l in s.splitlines() if len(l) > WIDTH]
        names = _defined(s)
        used = False
        for d in cells[i + 1:]:
            ds = _src(d)
            if EXPORT.search(ds): break
            if any(re.search(rf'\b{re.escape(n)}\b', ds) for n in names): used = True; break
        if names and not used: undemo.append((sorted(names)[0], sizes[-1]))
        elif not names and not used: undemo.append(('<no definition>', sizes[-1]))
    return dict(exported=exported, median=statistics.median(sizes) if sizes else 0, max=max(sizes, default=0),
                demonstrated=exported - len(undemo), tests=tests, undemo=undemo, wide=wide,
                over=[n for n in sizes if n > MAX])

def main(check=False):
    nbs = sorted(p for p in Path('nbs').glob('[0-9]*.ipynb'))
    print(f"| notebook | exported cells | median lines | max lines | demonstrated | tests |\n|---|---|---|---|---|---|")
    bad = []
    for p in nbs:
        s = stats(p)
        print(f"| {p.name} | {s['exported']} | {s['median']} | {s['max']} | {s['demonstrated']} | {s['tests']} |")
        if s['median'] > MEDIAN: bad.append(f"{p.name}: median exported cell {s['median']} lines > {MEDIAN}")
        if s['over']: bad.append(f"{p.name}: {len(s['over'])} exported cells over {MAX} lines ({s['over']})")
        for n, k in s['undemo']: bad.append(f"{p.name}: exported cell defining {n} ({k} lines) not run after it")
        for l in s['wide']: bad.append(f"{p.name}: line over {WIDTH} chars: {l[:60]}...")
    if check:
        print('\n'.join(bad) or 'all limits met')
        return 1 if bad else 0
    return 0

if __name__ == '__main__': sys.exit(main('--check' in sys.argv))
