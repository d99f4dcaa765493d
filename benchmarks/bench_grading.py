"""The grader over a class: N honest and M hostile generated submissions of the test lesson
(tests/grading_fixtures/demo_lesson.py: three exercises, standard library + torch), graded in the
sandbox; then the same honest notebooks graded in the sandbox and without it, for the sandbox's
cost as a ratio.

Run from the repository root (as root or as a regular user with bubblewrap):

    .venv/bin/python benchmarks/bench_grading.py [--honest 10] [--hostile 5] [--jobs 2]

Honest students hand in the solution, every third the unfinished student version. The hostile ones
cycle through a fork bomb whose processes ignore SIGTERM, a named pipe in place of the notebook, a
symbolic link to the solution, an exercise that returns the library's function, three processes
holding 900 MB each, and a cell that swallows every interrupt. Every student must get exactly the
grade they earned (solution 7/7, unfinished 0/7, each attack its own), so the hostile ones change
nothing for the others; the script exits 1 otherwise. It prints the wall time, the time per
submission and the peak memory (proportional set size of the grader and all its sandboxes
together, sampled four times a second) of each run. Not part of the test command; the target:
100 honest submissions in at most 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "grading_fixtures"))
import demo_lesson  # noqa: E402

from grader import isolation  # noqa: E402
from grader.score import grade  # noqa: E402
from grader.strip import student_notebook  # noqa: E402
from grader.watchdog import _descendants, _memory_of  # noqa: E402

NAME = f"{demo_lesson.LESSON}.ipynb"
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
from nblib.data.text import truncate
truncate_head_tail = functools.partial(truncate, strategy="head+tail", head_fraction=0.5)'''
HOG = '''import subprocess, sys
code = "import time; b = bytearray(b'x') * (900 * 2**20); time.sleep(4)"
for p in [subprocess.Popen([sys.executable, "-c", code]) for _ in range(3)]:
    p.wait()'''
STUBBORN = '''import time
while True:
    try:
        time.sleep(0.1)
    except KeyboardInterrupt:
        pass'''


def _with_cell(source: str) -> nbformat.NotebookNode:
    nb = demo_lesson.solution_notebook()
    nb.cells.append(new_code_cell(source))
    return nb


def _write(subs: Path, student: str, nb: nbformat.NotebookNode) -> None:
    (subs / student).mkdir(parents=True)
    nbformat.write(nb, subs / student / NAME)


def write_honest(subs: Path, count: int) -> dict[str, tuple[str, str]]:
    """``count`` honest students; returns {student: (expected status, expected total)}."""
    expected = {}
    for i in range(count):
        unfinished = i % 3 == 2
        solution = demo_lesson.solution_notebook()
        _write(subs, f"student{i:03d}", student_notebook(solution) if unfinished else solution)
        expected[f"student{i:03d}"] = ("errors", "0") if unfinished else ("ok", "7")
    return expected


def write_hostile(subs: Path, course: Path, count: int) -> dict[str, tuple[str | None, str]]:
    """``count`` hostile students (the attacks in turn); a status of None: any status."""
    demo_lesson.write_lesson(course)
    expected: dict[str, tuple[str | None, str]] = {}
    for i in range(count):
        kind = ("forkbomb", "fifo", "symlink", "library", "hog", "stubborn")[i % 6]
        student = f"x{i:02d}-{kind}"
        if kind == "forkbomb":
            _write(subs, student, _with_cell(FORK_BOMB))
            expected[student] = (None, "7")  # its exercises ran before the bomb
        elif kind == "fifo":
            (subs / student).mkdir(parents=True)
            os.mkfifo(subs / student / NAME)
            expected[student] = ("refused", "0")
        elif kind == "symlink":
            (subs / student).mkdir(parents=True)
            os.symlink(course / NAME, subs / student / NAME)
            expected[student] = ("refused", "0")
        elif kind == "library":
            nb = demo_lesson.solution_notebook()
            for cell in nb.cells:
                if cell.metadata.get("exercise", {}).get("id") == "T1-truncate":
                    cell.source = RETURNS_LIBRARY
            _write(subs, student, nb)
            expected[student] = ("ok", "5")
        elif kind == "hog":
            _write(subs, student, _with_cell(HOG))
            expected[student] = ("memory", "7")
        else:
            _write(subs, student, _with_cell(STUBBORN))
            expected[student] = ("cell-timeout", "7")
    return expected


class PeakMemory(threading.Thread):
    """The largest sum of proportional set sizes of this process and all its descendants (the
    sandboxes included), sampled every ``period`` seconds."""

    def __init__(self, period: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.period, self.peak, self.stop = period, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            total = sum(_memory_of(pid) for pid in _descendants(os.getpid()))
            self.peak = max(self.peak, total)
            self.stop.wait(self.period)

    def __enter__(self) -> PeakMemory:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join()


def run_class(label: str, subs: Path, out: Path, expected: dict, mode: str, jobs: int,
              course: Path) -> tuple[float, list[str]]:
    """Grade one class; print its line; return the seconds per submission and what was wrong."""
    with PeakMemory() as memory:
        started = time.monotonic()
        grades = grade(subs, out, demo_lesson.HIDDEN_DIR, jobs=jobs, isolation=mode,
                       allow_unsafe=mode == "none", progress=None, course_notebooks=course)
        seconds = time.monotonic() - started
    with open(out / "grades.csv", newline="", encoding="utf-8") as fh:
        rows = {row["student"]: (row["status"], row["total"]) for row in csv.DictReader(fh)}
    wrong = [f"{label}: {s} got {rows.get(s)}, expected {want}" for s, want in expected.items()
             if rows.get(s) is None or rows[s][1] != want[1]
             or (want[0] is not None and rows[s][0] != want[0])]
    per = seconds / len(grades)
    print(f"{label:<34} {len(grades):>4} {seconds:>8.1f} {per:>10.2f} "
          f"{memory.peak / 2**20:>11.0f} {len(expected) - len(wrong):>5}/{len(expected)}")
    return per, wrong


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--honest", type=int, default=10, help="honest submissions (N)")
    parser.add_argument("--hostile", type=int, default=5, help="hostile submissions (M)")
    parser.add_argument("--jobs", type=int, default=2, help="submissions at a time")
    parser.add_argument("--isolation", default=None, help="auto (default), bwrap or unshare")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the two honest-only runs (with and without the sandbox)")
    args = parser.parse_args()
    mode = isolation.choose_isolation(args.isolation)
    tmp = Path(tempfile.mkdtemp(prefix="nblib-bench-grading-"))
    wrong: list[str] = []
    try:
        course = tmp / "course"
        mixed = tmp / "mixed"
        expected = {**write_honest(mixed, args.honest),
                    **write_hostile(mixed, course, args.hostile)}
        honest = tmp / "honest"
        honest_expected = write_honest(honest, args.honest)
        print(f"{demo_lesson.LESSON}, {args.jobs} at a time, {os.cpu_count()} CPUs, {mode} sandbox")
        print(f"{'run':<34} {'subs':>4} {'wall s':>8} {'s / sub':>10} {'peak MB':>11} {'right':>11}")
        _, bad = run_class(f"{args.honest} honest + {args.hostile} hostile, {mode}", mixed,
                           tmp / "out-mixed", expected, mode, args.jobs, course)
        wrong += bad
        if not args.no_baseline:
            sandboxed, bad = run_class(f"{args.honest} honest, {mode}", honest, tmp / "out-sandboxed",
                                       honest_expected, mode, args.jobs, course)
            wrong += bad
            # The same notebooks with no sandbox (honest ones only: never run an attack unsandboxed).
            bare, bad = run_class(f"{args.honest} honest, no sandbox", honest, tmp / "out-bare",
                                  honest_expected, "none", args.jobs, course)
            wrong += bad
            print(f"sandbox overhead: {sandboxed / bare:.2f}x the time per submission without it")
        for line in wrong:
            print(f"  WRONG {line}")
        return 1 if wrong else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
