"""Time the grader on N copies of the test lesson's solution (default 30), from the repo root:

    .venv/bin/python tests/grading_fixtures/time_grading.py [--copies 30] [--jobs 2]

Prints the wall time of the whole grading run and per submission; not a test.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_lesson  # noqa: E402

from nblib.grading import sandbox  # noqa: E402
from nblib.grading.score import grade  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--copies", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--isolation", default=None)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="nblib-time-grading-"))
    try:
        nb = demo_lesson.solution_notebook()
        for i in range(args.copies):
            folder = tmp / "subs" / f"student{i:02d}"
            folder.mkdir(parents=True)
            nbformat.write(nb, folder / f"{demo_lesson.LESSON}.ipynb")
        mode = sandbox.choose_isolation(args.isolation)
        started = time.monotonic()
        grades = grade(tmp / "subs", tmp / "out", demo_lesson.HIDDEN_DIR, jobs=args.jobs,
                       isolation=mode, progress=None)
        seconds = time.monotonic() - started
        full = sum(g.total == g.max_points for g in grades)
        print(f"graded {len(grades)} copies of the {demo_lesson.LESSON} solution with {mode} "
              f"isolation, {args.jobs} at a time: {seconds:.1f} s in all, "
              f"{seconds / len(grades):.2f} s per submission; {full} with full marks; "
              f"mean sandbox time {sum(g.seconds for g in grades) / len(grades):.1f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
