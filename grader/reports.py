"""Writing the grades: ``grades.csv`` (one row per student and lesson), ``feedback/<student>.md``
(what passed, what failed and why; never the hidden inputs or expected values) and, for the
instructor, ``results.json``, ``skipped.txt`` and ``logs/``, into an output folder only this
process touches. Trusted code.

Student names are kept as given (张三 stays 张三): :func:`file_name` changes only what is unsafe in a
path, reversibly, and :func:`csv_cell` defuses spreadsheet formulas. Serves the README's "Exercises
and grading (instructors)" section (``make grade`` -> ``build/grades/grades.csv`` +
``feedback/<student>.md``) and docs/grading.md section 5 (reading the results). Introduced for the
graded exercises of the lessons.
"""

from __future__ import annotations

import csv
import io
import json
import os
import unicodedata
from dataclasses import asdict
from pathlib import Path

from grader.checks import LessonChecks
from grader.judge import Grade, one_line

STATUS_TEXT = {
    "ok": "ran without errors",
    "errors": "some cells raised errors",
    "cell-timeout": "a cell ran past its time limit and was interrupted",
    "crashed": "the kernel died; the notebook was rerun without what killed it",
    "memory": "ran out of memory",
    "timeout": "ran past the time limit for the whole notebook and was stopped",
    "invalid": "the file is not a readable notebook",
    "no-result": "the grader got no result back",
    "refused": "the file was not read (see the reason column of grades.csv)",
}


_UNSAFE_IN_FILE_NAMES = set('/\\%:*?"<>|')


def file_name(student: str) -> str:
    """The student's name as a file name, reversibly: Unicode stays, only characters unsafe in a
    path (``/ \\ % : * ? " < > |``, control characters, a leading dot) become ``%XX`` (UTF-8).
    Distinct names give distinct file names; ``urllib.parse.unquote`` gives the name back (for
    names over 200 bytes, a hash keeps them distinct)."""
    import hashlib

    out = []
    for index, char in enumerate(student):
        if (char in _UNSAFE_IN_FILE_NAMES or unicodedata.category(char)[0] == "C"
                or (index == 0 and char in ".-") or (char == " " and index in (0, len(student) - 1))):
            out.append("".join(f"%{b:02X}" for b in char.encode("utf-8")))
        else:
            out.append(char)
    name = "".join(out) or "%00"
    if len(name.encode("utf-8")) > 200:
        digest = hashlib.sha256(student.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        name = name.encode("utf-8")[:150].decode("utf-8", "ignore") + "~" + digest
    return name


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def feedback_text(student: str, grades: list[Grade]) -> str:
    """The feedback file of one student (all their lessons)."""
    lines = [f"# Grading feedback for {one_line(student, 120)}", ""]
    for g in grades:
        lines += [f"## {g.lesson or '(no lesson)'}: {g.total:g} / {g.max_points:g} points", "",
                  f"Status: **{g.status}** ({STATUS_TEXT.get(g.status, g.status)}).", ""]
        for ex in g.exercises:
            passed = sum(c.passed for c in ex.cases)
            lines.append(f"- **{ex.id}**: {ex.points:g} / {ex.max_points:g} points "
                         f"({passed} of {len(ex.cases)} hidden cases passed)")
            for number, case in enumerate(ex.cases, start=1):
                if not case.passed:
                    lines.append(f"    - case {number}: {case.message}")
        if g.notes:
            lines += ["", "Running your notebook:"]
            lines += [f"- {note}" for note in g.notes]
        lines.append("")
    return "\n".join(lines)


def csv_cell(text: str) -> str:
    """A name as given, except that a leading = + - @ (a spreadsheet formula) gets a ' first."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def write_reports(out_dir: Path, grades: list[Grade], lessons: dict[str, LessonChecks],
                  logs: list[str], skipped: list[str] | None = None) -> None:
    """grades.csv, feedback/<student>.md, results.json, skipped.txt and logs/ (trusted side only).

    File names are :func:`file_name` of the student's name, so no two students share a file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = [ex for ls in lessons.values() for ex in ls.exercises]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["student", "lesson", "status", *columns, "total", "max_points", "reason"])
    for g in grades:
        points = {e.id: f"{e.points:g}" for e in g.exercises}
        writer.writerow([csv_cell(g.student), g.lesson, g.status,
                         *[points.get(c, "") for c in columns],
                         f"{g.total:g}", f"{g.max_points:g}", g.reason])
    _atomic_write(out_dir / "grades.csv", buffer.getvalue())
    by_student: dict[str, list[Grade]] = {}
    for g in grades:
        by_student.setdefault(g.student, []).append(g)
    for student, own in by_student.items():
        _atomic_write(out_dir / "feedback" / f"{file_name(student)}.md", feedback_text(student, own))
    for g, log in zip(grades, logs, strict=True):
        _atomic_write(out_dir / "logs" / f"{file_name(g.student)}__{g.lesson or 'none'}.log",
                      f"student: {g.student!r}\nsource: {g.source}\nseconds: {g.seconds:.2f}\n"
                      f"status: {g.status}\n" + "".join(f"{line}\n" for line in g.log) + log)
    _atomic_write(out_dir / "skipped.txt", "".join(f"{line}\n" for line in skipped or []))
    _atomic_write(out_dir / "results.json",
                  json.dumps([{**asdict(g), "total": g.total, "max_points": g.max_points}
                              for g in grades], indent=1, ensure_ascii=False))
