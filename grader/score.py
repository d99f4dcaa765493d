"""Stage 2 of grading, the trusted side: grade a folder of submissions, one sandbox run each, and
write the reports (what ``python -m grader grade`` and ``make grade`` run).

Never imports or runs student code. :func:`grade` puts the pieces together:

- ``submissions``: find the submission files and read each one without following links;
- ``sandbox``: run it (stage 1) in its own sandbox, with the lesson's limits, the hidden inputs
  going in as plain JSON (``wire.encode_input``);
- ``cache``: a submission whose file, hidden checks, grader and library are unchanged since the
  last run into the same output folder keeps its grade (``--force`` regrades all);
- ``judge``: parse what came back strictly (``wire``) and apply the hidden checks;
- ``progress``: a bar over the class on a terminal, a line per submission otherwise;
- ``reports``: ``grades.csv``, ``gradebook.csv``, ``feedback/<student>.md`` and ``.html``,
  ``summary.txt``, ``results.json``, ``skipped.txt`` and ``logs/``.

Serves the README's "Exercises and grading (instructors)" section and docs/grading.md sections 4
and 5. Introduced for the graded exercises of the lessons.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from grader import cache, host
from grader.checks import COURSE_NOTEBOOKS, LessonChecks, find_checks, load_checks
from grader.inside.wire import encode_input
from grader.isolation import (
    ISOLATIONS,
    UNSAFE,
    WARNING,
    SandboxUnavailable,
    choose_isolation,
    unavailable_reasons,
    why_unavailable,
)
from grader.judge import CaseResult, ExerciseResult, Grade, one_line, score_submission
from grader.launch import readable_data
from grader.progress import ClassProgress
from grader.reports import summary_text, write_reports
from grader.sandbox import SandboxResult, run_in_sandbox
from grader.submissions import (
    Refused,
    Submission,
    check_folders,
    find_submissions,
    read_submission,
)
from grader.uids import UidBusy, UidPool


def build_request(lesson: LessonChecks, notebook_text: str) -> dict[str, Any]:
    calls = []
    for ex in lesson.exercises.values():
        references = ex.reference_targets()
        for case in ex.cases:
            calls.append({"function": case.function, "args": encode_input(list(case.args)),
                          "kwargs": encode_input(dict(case.kwargs)), "returns": case.returns,
                          "references": references})
    return {"notebook": notebook_text, "parameters": lesson.parameters, "calls": calls}


def _zero_grade(sub: Submission, checks: LessonChecks | None, status: str, message: str,
                notes: list[str], reason: str = "") -> Grade:
    exercises = [ExerciseResult(k, 0.0, float(v.points), [CaseResult(False, message)])
                 for k, v in (checks.exercises.items() if checks else [])]
    return Grade(sub.student, sub.lesson, status, exercises, notes, source=str(sub.path),
                 reason=reason)


def grade(
    submissions_dir: Path,
    out_dir: Path,
    checks_dir: Path,
    lesson: str | None = None,
    jobs: int | None = None,
    isolation: str | None = None,
    limits: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = print,
    allow_unsafe: bool = False,
    course_notebooks: Path | None | str = "default",
    force: bool = False,
    per_exercise: bool = False,
    bar: bool | None = None,
) -> list[Grade]:
    """Grade every submission in ``submissions_dir``; write the reports to ``out_dir``.

    ``limits`` overrides fields of each lesson's Limits (e.g. ``{"wall_s": 60}``). ``isolation``
    "none" runs submissions unsandboxed and needs ``allow_unsafe`` (``--unsafe-no-sandbox``).
    ``course_notebooks``: the lessons' own folder, which the submissions folder may not be or hold.
    A submission whose key (``grader.cache``) matches the last run's into ``out_dir`` keeps its
    grade, feedback and log; ``force`` grades everyone again. ``per_exercise`` adds a column per
    exercise to ``gradebook.csv``. ``progress`` prints lines (None: silent); ``bar``: a tqdm bar
    instead of a line per submission (default: when stderr is a terminal).
    """
    say = progress or (lambda _msg: None)
    checks_dir, out_dir = Path(checks_dir).resolve(), Path(out_dir).resolve()
    submissions_dir = Path(submissions_dir).resolve()
    if course_notebooks == "default":
        course_notebooks = COURSE_NOTEBOOKS
    forbidden = check_folders(submissions_dir, course_notebooks)
    available = find_checks(checks_dir)
    if not available:
        raise FileNotFoundError(f"no hidden checks (*.py) in {checks_dir}")
    if lesson is not None and lesson not in available:
        raise ValueError(f"no hidden checks for lesson {lesson!r} in {checks_dir}")
    mode = choose_isolation(isolation, allow_unsafe=allow_unsafe)
    subs, skipped = find_submissions(submissions_dir, list(available), lesson)
    lessons = {name: load_checks(available[name]) for name in sorted({s.lesson for s in subs if s.lesson})}
    if limits:
        lessons = {k: LessonChecks(v.lesson, v.path, v.exercises, v.parameters,
                                   v.limits.replace(**limits)) for k, v in lessons.items()}
    for checks in lessons.values():  # an instructor's mistake fails here, not per student
        try:
            json.dumps(build_request(checks, ""), allow_nan=True)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{checks.path}: a hidden input cannot be sent: {err}") from None
    if mode == UNSAFE:
        print("\n" + "!" * 78 + "\n" + WARNING + "\nWhy no sandbox: "
              + unavailable_reasons() + "\n" + "!" * 78 + "\n", file=sys.stderr)
    elif mode == "unshare":
        print(f"note: isolating with unshare + chroot (bwrap: {why_unavailable('bwrap')})",
              file=sys.stderr)
    sources = cache.Sources.now(mode)
    digests = {name: cache.checks_hash(checks) for name, checks in lessons.items()}
    previous = {} if force else cache.previous_grades(out_dir)
    secret = [checks_dir, out_dir, submissions_dir]
    jobs = max(1, jobs or min(8, os.cpu_count() or 1))
    pool = UidPool() if mode in ISOLATIONS and os.geteuid() == 0 else None
    count_lock = threading.Lock()
    done_count = [0]
    data_view: list[Path | None] = [None]  # the data folder the sandboxes see (set below)
    meter = ClassProgress(len(subs), progress, bar=bar)
    for line in skipped:
        meter.note(f"skipped {line}")

    def run(sub: Submission, checks: LessonChecks, notebook: bytes) -> SandboxResult:
        request = build_request(checks, notebook.decode("utf-8", errors="replace"))
        for _attempt in range(5):  # a busy uid is the machine's problem, never the student's
            uid = pool.acquire() if pool is not None else None
            try:
                result = run_in_sandbox(request, checks.limits, mode, uid=uid,
                                                secret_paths=secret, data=data_view[0])
            except UidBusy:
                pool.release(uid, clean=False)
                continue
            except BaseException:
                if pool is not None:
                    pool.release(uid, clean=not host.processes_of(uid))
                raise
            if pool is not None:
                pool.release(uid, result.clean)
            return result
        raise SandboxUnavailable("no free sandbox uid after 5 tries")

    def one(sub: Submission) -> tuple[Grade, str | None]:
        """The grade of one submission and its log (None: reused, its log file stays)."""
        checks = lessons.get(sub.lesson)
        log: str | None = ""
        try:
            if sub.refused:
                raise Refused(sub.refused)
            notebook = read_submission(submissions_dir, sub.path, forbidden=forbidden)
            key = cache.submission_key(notebook, sub.student, checks, sources, digests[sub.lesson])
            earlier = previous.get((sub.student, sub.lesson))
            if earlier is not None and earlier.key == key:
                result, log = earlier, None
            else:
                result_run = run(sub, checks, notebook)
                result = score_submission(sub.student, checks, result_run, str(sub.path))
                result.key, log = key, result_run.log
        except Refused as why:
            reason = one_line(str(why))[1:-1]
            result = _zero_grade(sub, checks, "refused", "not graded: the file was not read",
                                 [f"Your submission was not read: {reason}."], reason)
        except Exception:  # a grader problem: this submission gets no grade, the others go on
            log = traceback.format_exc()
            result = _zero_grade(sub, checks, "no-result", "not graded (grader error)",
                                 ["The grader failed on this submission; your instructor has the log."])
            result.grader_error = True
        with count_lock:
            done_count[0] += 1
            name = one_line(sub.student, 80)[1:-1]
            how = "reused" if log is None else f"{result.seconds:.1f} s"
            meter.student_done(
                f"[{done_count[0]}/{len(subs)}] {name} {sub.lesson}: "
                f"{result.total:g}/{result.max_points:g} {result.status} ({how})"
                + (f" - {result.reason}" if result.reason else ""),
                f"{name} {result.total:g}/{result.max_points:g}")
        return result, log

    started = time.monotonic()
    try:
        with readable_data(mode) as data, ThreadPoolExecutor(max_workers=jobs) as executor:
            data_view[0] = data
            outcomes = list(executor.map(one, subs))
    finally:
        meter.close()
        if pool is not None:
            pool.close()
    grades = [g for g, _ in outcomes]
    reused = sum(log is None for _, log in outcomes)
    summary = summary_text(grades, lessons, reused=reused, seconds=time.monotonic() - started,
                           isolation=mode, jobs=jobs)
    write_reports(out_dir, grades, lessons, [log for _, log in outcomes], skipped,
                  per_exercise=per_exercise, summary=summary)
    say(summary + f"\n-> {out_dir / 'gradebook.csv'}, {out_dir / 'grades.csv'}, "
        f"{out_dir / 'feedback'}/")
    return grades
