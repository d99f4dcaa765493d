"""Time the grader on a class of N submissions of the test lesson (default 30), from the repo root:

    .venv/bin/python tests/grading_fixtures/time_grading.py [--copies 30] [--jobs 2] [--hostile]

Without ``--hostile`` every student hands in the solution. With it, four of the N are hostile (a
fork bomb whose processes ignore SIGTERM, a named pipe in place of the notebook, a symbolic link to
the solution, a notebook whose exercise returns the library's function) and, of the honest rest,
every third hands in the unfinished student version. The script checks that every honest student
gets exactly their grade (solution 7/7, student version 0/7) and each hostile one what it earned,
prints the wall time, and exits 1 otherwise. Not a test (it takes minutes): the grading tests run
each attack on its own.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_lesson  # noqa: E402

from grader import isolation  # noqa: E402
from grader.score import grade  # noqa: E402
from grader.strip import student_notebook  # noqa: E402

FORK_BOMB = '''import os, signal, time
for _ in range(100000):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(300)
        os._exit(0)'''
RETURNS_LIBRARY = '''import functools
from nblib.text import truncate
truncate_head_tail = functools.partial(truncate, strategy="head+tail", head_fraction=0.5)'''


def write_class(subs: Path, course: Path, copies: int, hostile: bool) -> dict[str, tuple[str, str]]:
    """Write the class; return {student: (expected status, expected total)}."""
    solution = demo_lesson.solution_notebook()
    expected: dict[str, tuple[str, str]] = {}
    name = f"{demo_lesson.LESSON}.ipynb"
    if hostile:
        demo_lesson.write_lesson(course)
        (subs / "x-forkbomb").mkdir(parents=True)
        bomb = demo_lesson.solution_notebook()
        bomb.cells.append(new_code_cell(FORK_BOMB))
        nbformat.write(bomb, subs / "x-forkbomb" / name)
        expected["x-forkbomb"] = ("ok", "7")
        (subs / "x-fifo").mkdir()
        os.mkfifo(subs / "x-fifo" / name)
        expected["x-fifo"] = ("refused", "0")
        (subs / "x-symlink").mkdir()
        os.symlink(course / name, subs / "x-symlink" / name)
        expected["x-symlink"] = ("refused", "0")
        (subs / "x-library").mkdir()
        library = demo_lesson.solution_notebook()
        for cell in library.cells:
            if cell.metadata.get("exercise", {}).get("id") == "T1-truncate":
                cell.source = RETURNS_LIBRARY
        nbformat.write(library, subs / "x-library" / name)
        expected["x-library"] = ("ok", "5")
    honest = copies - len(expected)
    for i in range(honest):
        student = f"student{i:02d}"
        (subs / student).mkdir(parents=True)
        unfinished = hostile and i % 3 == 2
        nb = student_notebook(solution) if unfinished else solution
        nbformat.write(nb, subs / student / name)
        expected[student] = ("errors", "0") if unfinished else ("ok", "7")
    return expected


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--isolation", default=None)
    parser.add_argument("--hostile", action="store_true", help="a fork bomb, a FIFO, a link, a library copier")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="nblib-time-grading-"))
    try:
        expected = write_class(tmp / "subs", tmp / "course", args.copies, args.hostile)
        mode = isolation.choose_isolation(args.isolation)
        started = time.monotonic()
        grades = grade(tmp / "subs", tmp / "out", demo_lesson.HIDDEN_DIR, jobs=args.jobs,
                       isolation=mode, progress=None, course_notebooks=tmp / "course")
        seconds = time.monotonic() - started
        with open(tmp / "out" / "grades.csv", newline="", encoding="utf-8") as fh:
            rows = {row["student"]: (row["status"], row["total"]) for row in csv.DictReader(fh)}
        wrong = {s: (rows.get(s), want) for s, want in expected.items() if rows.get(s) != want}
        slowest = max(grades, key=lambda g: g.seconds)
        print(f"graded {len(grades)} submissions of {demo_lesson.LESSON} "
              f"({'4 hostile' if args.hostile else 'all honest'}) with {mode} isolation, "
              f"{args.jobs} at a time: {seconds:.1f} s in all, {seconds / len(grades):.2f} s per "
              f"submission; slowest sandbox {slowest.seconds:.1f} s ({slowest.student}); "
              f"{len(expected) - len(wrong)} of {len(expected)} graded as expected")
        for student, (got, want) in sorted(wrong.items()):
            print(f"  WRONG {student}: got {got}, expected {want}")
        return 1 if wrong else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
