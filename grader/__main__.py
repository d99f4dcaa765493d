"""Command line: ``python -m grader student|grade ...`` (what ``make student`` and ``make grade`` run)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grader.checks import COURSE_NOTEBOOKS as DEFAULT_NOTEBOOKS
from grader.checks import HIDDEN_DIR as DEFAULT_CHECKS


def _student(args: argparse.Namespace) -> int:
    from grader.checks import find_checks, load_checks
    from grader.strip import StripError, write_student_versions

    notebooks = [Path(p) for p in args.notebooks] or sorted(DEFAULT_NOTEBOOKS.glob("[0-9]*.ipynb"))
    checks = {name: load_checks(path) for name, path in find_checks(Path(args.checks)).items()}
    try:
        written, warnings = write_student_versions(notebooks, Path(args.out), checks)
    except StripError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    for version in written:
        points = sum(e.points for e in version.exercises)
        print(f"{version.written}: {len(version.exercises)} exercise(s), {points:g} points")
    if not written:
        print(f"no lesson among {len(notebooks)} notebook(s) has exercises; nothing written")
    return 0


def _grade(args: argparse.Namespace) -> int:
    from grader.isolation import SandboxUnavailable
    from grader.score import grade

    limits = {k: v for k, v in (("wall_s", args.wall), ("cell_s", args.cell_timeout),
                                ("memory_mb", args.memory),
                                ("total_memory_mb", args.total_memory)) if v is not None}
    try:
        isolation = "none" if args.unsafe_no_sandbox else args.isolation
        grades = grade(Path(args.submissions), Path(args.out), Path(args.checks), lesson=args.lesson,
                       jobs=args.jobs, isolation=isolation, limits=limits or None,
                       allow_unsafe=args.unsafe_no_sandbox, force=args.force,
                       per_exercise=args.per_exercise)
    except (FileNotFoundError, ValueError, SandboxUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not grades:
        print("no submissions found", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    student = sub.add_parser("student", help="write the student version of every lesson with exercises")
    student.add_argument("notebooks", nargs="*", help=f"lesson notebooks (default: {DEFAULT_NOTEBOOKS}/*)")
    student.add_argument("--out", default="build/student", help="folder for the student notebooks")
    student.add_argument("--checks", default=str(DEFAULT_CHECKS), help="hidden checks folder")
    student.set_defaults(func=_student)
    grade = sub.add_parser("grade", help="grade a folder of submissions: <dir>/<student>/<lesson>.ipynb")
    grade.add_argument("submissions", help="folder with one subfolder per student")
    grade.add_argument("--out", default="build/grades",
                       help="folder for gradebook.csv, grades.csv, feedback/ and summary.txt")
    grade.add_argument("--checks", default=str(DEFAULT_CHECKS), help="hidden checks folder")
    grade.add_argument("--lesson", help="the lesson of loose <dir>/<student>.ipynb files")
    grade.add_argument("--jobs", type=int, help="submissions graded at once (default: CPU count, max 8)")
    grade.add_argument("--isolation", choices=["auto", "bwrap", "unshare"],
                       help="sandbox (default: $NBLIB_GRADING_ISOLATION or the best available); "
                            "without one that works, grading stops and says why")
    grade.add_argument("--unsafe-no-sandbox", action="store_true",
                       help="instructors only: run submissions WITHOUT a sandbox, with your "
                            "permissions (they could change grades and files); never by default")
    grade.add_argument("--wall", type=float, help="seconds per submission (overrides the lesson's)")
    grade.add_argument("--cell-timeout", type=float, help="seconds per cell (overrides the lesson's)")
    grade.add_argument("--memory", type=int, help="MB of address space per process (overrides)")
    grade.add_argument("--total-memory", type=int,
                       help="MB of memory for all of a submission's processes (overrides)")
    grade.add_argument("--force", action="store_true",
                       help="grade every submission again (by default only those whose file, "
                            "hidden checks, grader or library changed since the last run into --out)")
    grade.add_argument("--per-exercise", action="store_true",
                       help="gradebook.csv gets a column per exercise too (<lesson>/<exercise>)")
    grade.set_defaults(func=_grade)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
