"""Did a rerun reproduce? Compare two runs folders' results records and, optionally, two comparison files.

Records are compared field by field after dropping what a rerun may change: times and dates (``seconds``,
``started``, ``inference_reviews_per_s``), paths (``best_checkpoint``) and the git revision. The comparison
files are compared up to their clock table (minutes and reviews/s, then the lessons' wall times), without
their header line (date, run id, wall time). Exit status 0 when everything else is identical, 1 otherwise.

Run: .venv/bin/python experiments/compare_runs.py CLONE_A/runs/smoke CLONE_B/runs/smoke \
         CLONE_A/figures/comparison.md CLONE_B/figures/comparison.md
(see docs/experiments.md, "Reruns and determinism").
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from nblib.results.comparison import COST_HEADING  # where the comparison file's clock begins
from nblib.results.records import without_times  # drops what a rerun may change


def compare_records(a: Path, b: Path) -> int:
    names_a = sorted(p.relative_to(a) for p in a.rglob("result.json"))
    names_b = sorted(p.relative_to(b) for p in b.rglob("result.json"))
    problems = 0
    if names_a != names_b:
        problems += 1
        print(f"different sets of records: only in A {sorted(set(names_a) - set(names_b))}, "
              f"only in B {sorted(set(names_b) - set(names_a))}")
    for name in sorted(set(names_a) & set(names_b)):
        x = without_times(json.loads((a / name).read_text(encoding="utf-8")))
        y = without_times(json.loads((b / name).read_text(encoding="utf-8")))
        if x != y:
            problems += 1
            print(f"{name} differs in {sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k))}")
    print(f"{len(names_a)} records in A, {len(names_b)} in B; {problems} difference(s) beyond times and dates")
    return problems


def table_lines(path: Path) -> list[str]:
    """The comparison file up to its clock table, without the header line (date, run id, wall time)."""
    text = path.read_text(encoding="utf-8").split(COST_HEADING)[0]
    return [line for line in text.splitlines() if not line.startswith("Written from")]


def compare_tables(a: Path, b: Path) -> int:
    x, y = table_lines(a), table_lines(b)
    differing = [(i, p, q) for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q]
    for i, p, q in differing[:10]:
        print(f"line {i}:\n  A {p}\n  B {q}")
    problems = len(differing) + (len(x) != len(y))
    print(f"comparison files: {problems} differing line(s) before the clock table, header aside")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 4):
        raise SystemExit(__doc__)
    problems = compare_records(Path(argv[0]), Path(argv[1]))
    if len(argv) == 4:
        problems += compare_tables(Path(argv[2]), Path(argv[3]))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
