"""Judging one sandbox run: the lesson's hidden checks applied to the values that came back, the
points per exercise, the status of the run and the notes for the student. Trusted, pure data.

Never imports or runs student code. A student scores ``points * passed / cases`` per exercise.
What the student is told is fixed wording or the check's own hint, never a hidden input: the
submission's own error text is quoted (on one line, :func:`one_line`) only from a run before any
hidden call. Serves the README's "Exercises and grading (instructors)" section (what a submission
gains nothing by) and docs/grading.md sections 5 (reading the results) and 6 (writing the hidden
checks). Introduced for the graded exercises of the lessons.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from grader.checks import EXERCISE_ID, Case, LessonChecks, Limits
from grader.inside.wire import (
    UntrustedDataError,
    decode_value,
    decode_weights,
    parse_frames,
    strict_json,
)
from grader.isolation import UNSAFE, WARNING
from grader.sandbox import SandboxResult

# What a student is told about a hidden call that raised: one of these fixed categories, never the
# exception's own name or text (a submission could pick among many types, or write the message,
# to carry a hidden input out in the feedback). NotImplementedError means "not written yet".
EXCEPTION_CATEGORIES = {"NotImplementedError": "raised NotImplementedError (not written yet)"}
OTHER_EXCEPTION = "raised an exception"
MAX_NOTE = 200  # characters of a notebook's own error text shown in its feedback (one line)
# When several apply, the first one names the submission's status in grades.csv.
STATUS_ORDER = ("timeout", "no-result", "memory", "crashed", "cell-timeout", "errors", "ok")


# ---------------------------------------------------------------- scoring one submission
@dataclass
class CaseResult:
    passed: bool
    message: str  # for the student: fixed wording, or the check's own hint


@dataclass
class ExerciseResult:
    id: str
    points: float
    max_points: float
    cases: list[CaseResult]


@dataclass
class Grade:
    student: str
    lesson: str
    status: str
    exercises: list[ExerciseResult]
    notes: list[str] = field(default_factory=list)  # about the notebook run, for the student
    log: list[str] = field(default_factory=list)  # for the instructor only (may quote the student)
    seconds: float = 0.0
    isolation: str = ""
    source: str = ""
    reason: str = ""  # why the submission was refused (status "refused"), for grades.csv
    key: str = ""  # what fixes this grade (grader.cache); an unchanged key is not graded again
    limits: str = ""  # what held the whole submission's memory and CPU (a cgroup or the watchdog)
    grader_error: bool = False  # the grader failed (not the student): never reused

    @property
    def total(self) -> float:
        return round(sum(e.points for e in self.exercises), 3)

    @property
    def max_points(self) -> float:
        return round(sum(e.max_points for e in self.exercises), 3)


def _call_message(frame: dict | None, case: Case, limits: Limits, max_bytes: int,
                  log: list[str] | None = None) -> tuple[CaseResult, Any]:
    """Judge one hidden call from its (untrusted) frame."""
    fn = case.function
    if frame is None:
        return CaseResult(False, "no result came back"), None
    status = frame.get("status")
    if status == "timeout":
        return CaseResult(False, f"`{fn}` ran past the {limits.call_s:g} s limit per call"), None
    if status == "died":
        return CaseResult(False, f"the kernel died while running `{fn}`"), None
    if status == "not-run":
        return CaseResult(False, "not run: the run stopped before this call (see below)"), None
    if status == "too-large":
        return CaseResult(False, f"`{fn}` returned a value too large to send back"), None
    if status != "returned" or type(frame.get("result")) is not str:
        return CaseResult(False, "no result came back"), None
    try:
        result = strict_json(frame["result"], max_bytes)
    except UntrustedDataError:
        return CaseResult(False, "the result was not plain data"), None
    if type(result) is not dict or type(result.get("ok")) is not bool:
        return CaseResult(False, "the result was not plain data"), None
    if result["ok"] is not True:
        error = result.get("error")
        if error == "undefined":
            return CaseResult(False, f"`{fn.split('.')[0]}` is not defined after running your "
                                     "notebook"), None
        if error == "raised":
            shown = EXCEPTION_CATEGORIES.get(result.get("exception"), OTHER_EXCEPTION)
            return CaseResult(False, f"`{fn}` {shown}"), None
        if error == "tampered":
            return CaseResult(False, f"`{fn}` turned off the grader's profiler or started another "
                                     "program while graded (no points)"), None
        if error == "reference":
            return CaseResult(False, f"`{fn}` called the library's own version of this exercise; "
                                     "write it yourself (no points)"), None
        if error == "interrupted":
            return CaseResult(False, f"`{fn}` ran past the {limits.call_s:g} s limit per call"), None
        if error == "unsupported" and result.get("type") == "too-large":
            return CaseResult(False, f"`{fn}` returned a value too large to send back"), None
        if error == "unsupported":
            return CaseResult(False, f"`{fn}` returned something that is not plain data: "
                                     "return None, bool, int, float, str, lists, dicts or tensors"
                                     + (" (a module or state dict here)"
                                        if case.returns == "weights" else "")), None
        return CaseResult(False, "no result came back"), None
    try:
        if case.returns == "weights":
            value = decode_weights(result.get("value"))
        else:
            value = decode_value(result.get("value"))
    except UntrustedDataError:
        what = "a module or a state dict of tensors" if case.returns == "weights" else "plain data"
        return CaseResult(False, f"`{fn}` did not return {what}"), None
    try:
        verdict = case.judge(value)
    except Exception as err:  # the check met a value of the wrong form (or has a bug: see the log)
        if log is not None:
            log.append(f"check of {fn} raised {type(err).__name__}: {err}")
        return CaseResult(False, f"`{fn}` returned a result of the wrong form"), None
    if verdict is True:
        return CaseResult(True, "passed"), value
    hint = verdict if isinstance(verdict, str) and verdict else "wrong result"
    return CaseResult(False, hint), value


def score_submission(student: str, lesson: LessonChecks, run: SandboxResult,
                     source: str = "") -> Grade:
    """Score one sandbox run against the lesson's hidden checks (trusted, pure data)."""
    limits = lesson.limits
    max_bytes = limits.max_result_mb * 2**20
    frames, problem = parse_frames(run.stdout, run.nonce, max_bytes + 2**20)
    cells: dict | None = None
    calls: dict[int, dict] = {}
    invalid = done = runner_error = False
    log: list[str] = []
    after_calls = False  # a rerun after hidden calls could show text derived from hidden inputs
    for frame in frames:
        kind = frame["type"]
        if kind == "cells" and type(frame.get("cells")) is list:
            cells = {**frame, "after_calls": after_calls}
        elif kind == "call" and type(frame.get("index")) is int:
            after_calls = True
            calls.setdefault(frame["index"], frame)
        elif kind == "invalid":
            invalid = True
        elif kind == "runner-error":
            runner_error = True
            log.append(f"runner error: {frame.get('error')!r}")
        elif kind == "done":
            done = True
    notes: list[str] = []
    flags: set[str] = set()
    log.append(f"frames: {len(frames)}; problem: {problem}")
    if run.isolation == UNSAFE:
        notes.append(WARNING)
    if run.memory_kills:
        flags.add("memory")
        notes.append(f"Your notebook's processes together used more than the "
                     f"{limits.total_memory_mb} MB allowed; the largest was stopped.")
    if run.cpu_exceeded:
        notes.append(f"Your notebook's processes used up their {limits.cpu_s:g} CPU seconds and "
                     "were stopped; only what finished before counts.")
    if problem:
        notes.append(f"The grader stopped reading your results early ({problem}).")
    if run.timed_out:
        flags.add("timeout")
        notes.append(f"Your notebook ran past the {limits.wall_s:g} s limit and was stopped; "
                     "only what finished before counts.")
    if cells is not None:
        notes += _cell_notes(cells, limits, flags)
    for frame in calls.values():
        if frame.get("status") == "died":
            flags.add("crashed")

    index = 0
    exercises: list[ExerciseResult] = []
    for ex_id, ex in lesson.exercises.items():
        results = []
        for case in ex.cases:
            result, _ = _call_message(calls.get(index), case, limits, max_bytes, log)
            results.append(result)
            index += 1
        passed = sum(r.passed for r in results)
        exercises.append(ExerciseResult(ex_id, round(ex.points * passed / len(results), 3),
                                        float(ex.points), results))
    if runner_error:
        flags.add("no-result")
        notes.append("The grader lost contact with your notebook's kernel; what came back before "
                     "counts.")
    if invalid:
        status = "invalid"
    elif cells is None and not run.timed_out:
        status = "no-result"
    else:
        status = next((s for s in STATUS_ORDER if s in flags), "ok")
        if not done and status == "ok":
            status = "no-result"
    return Grade(student, lesson.lesson, status, exercises, notes, log, run.seconds,
                 run.isolation, source, limits=run.limits)


def _is_memory(ename: Any, evalue: Any) -> bool:
    text = f"{ename} {evalue}".lower()
    return ename == "MemoryError" or "can't allocate memory" in text or "out of memory" in text


def one_line(text: Any, limit: int = MAX_NOTE) -> str:
    """A submission's own text made safe to quote in its feedback: one line, no control or
    formatting characters that could fake a line of the report, shortened, in a code span."""
    text = str(text)
    text = "".join(" " if (unicodedata.category(c)[0] in "CZ" and c != " ") else c for c in text)
    text = " ".join(text.replace("`", "'").split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"`{text}`" if text else "``"


def _exception_name(name: Any) -> str:
    return name if type(name) is str and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]{0,60}", name) else "an exception"


def _cell_notes(cells: dict, limits: Limits, flags: set[str]) -> list[str]:
    """Notes on the notebook run. Error messages and exit codes are the submission's own text, shown
    (on one line, quoted) only from a run before any hidden call (afterwards they could carry
    hidden inputs out); after one, only fixed words."""
    notes = []
    quiet = cells["after_calls"]
    for cell in cells["cells"]:
        if type(cell) is not dict:
            continue
        number = cell.get("number")
        where = f"code cell {number}" if type(number) is int and 0 < number < 10**6 else "a code cell"
        ex = cell.get("exercise")
        if type(ex) is str and EXERCISE_ID.match(ex):
            where += f" (exercise {ex})"
        first = cell.get("first_line")
        if type(first) is str and first.strip() and not quiet:
            where += " " + one_line(first, 80)
        status = cell.get("status")
        if status == "error":
            ename, evalue = cell.get("ename", ""), cell.get("evalue", "")
            flags.add("memory" if _is_memory(ename, evalue) else "errors")
            if quiet:
                shown = EXCEPTION_CATEGORIES.get(ename, OTHER_EXCEPTION)
                notes.append(f"{where} {shown} (when rerun after a kernel death)")
            else:
                notes.append(f"{where} raised {_exception_name(ename)}: {one_line(evalue)}")
        elif status == "timeout":
            flags.add("cell-timeout")
            notes.append(f"{where} ran past the {limits.cell_s:g} s limit per cell and was "
                         "interrupted")
        elif status == "died":
            code = None if quiet else cell.get("exit")
            how = (f" (signal {-code})" if type(code) is int and -256 < code < 0
                   else f" (exit code {code})" if type(code) is int and 0 <= code < 256 else "")
            if cell.get("reason") == "ignored the interrupt":
                flags.add("cell-timeout")
                notes.append(f"{where} ignored the interrupt at its time limit; the kernel was "
                             "killed and the notebook rerun without this cell")
            else:
                flags.add("crashed")
                notes.append(f"{where} killed the kernel{how}; the notebook was rerun without it")
    return notes
