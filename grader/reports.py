"""Writing the grades: ``grades.csv`` (one row per student and lesson), ``gradebook.csv`` (one
row per student, a column per lesson and a total, for an LMS), ``feedback/<student>.md`` and
``.html`` (what passed, what failed and why; never the hidden inputs or expected values),
``summary.txt`` and, for the instructor, ``results.json``, ``skipped.txt`` and ``logs/``, into an
output folder only this process touches. Trusted code.

Student names are kept as given (张三 stays 张三): :func:`file_name` changes only what is unsafe in a
path, reversibly, and :func:`csv_cell` defuses spreadsheet formulas. Files whose content did not
change are not rewritten, so a regrade leaves the others' feedback untouched. Serves the README's
"Exercises and grading (instructors)" section and docs/grading.md section 5 (reading the results).
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import unicodedata
from dataclasses import asdict
from pathlib import Path

import pandas as pd

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
    """Write ``text`` to ``path`` in one step, and only if it changed: a regrade leaves the files
    of students whose grades did not change untouched (same bytes, same modification time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except (OSError, UnicodeDecodeError):
        pass
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


def feedback_html(student: str, grades: list[Grade]) -> str:
    """The feedback file of one student as a standalone HTML page (same content as the Markdown).

    Built from the grades, not by rendering the Markdown: every piece of text, the student's own
    included, is escaped here, so nothing a submission wrote can become markup."""
    e = html.escape
    body = [f"<h1>Grading feedback for <code>{e(student)}</code></h1>"]
    for g in grades:
        body.append(f"<h2>{e(g.lesson or '(no lesson)')}: {g.total:g} / {g.max_points:g} points</h2>")
        body.append(f"<p>Status: <strong>{e(g.status)}</strong> "
                    f"({e(STATUS_TEXT.get(g.status, g.status))}).</p>")
        items = []
        for ex in g.exercises:
            passed = sum(c.passed for c in ex.cases)
            failed = "".join(f"<li>case {n}: {_inline_code(case.message)}</li>"
                             for n, case in enumerate(ex.cases, start=1) if not case.passed)
            items.append(f"<li><strong>{e(ex.id)}</strong>: {ex.points:g} / {ex.max_points:g} "
                         f"points ({passed} of {len(ex.cases)} hidden cases passed)"
                         + (f"<ul>{failed}</ul>" if failed else "") + "</li>")
        if items:
            body.append("<ul>" + "".join(items) + "</ul>")
        if g.notes:
            body.append("<p>Running your notebook:</p><ul>"
                        + "".join(f"<li>{_inline_code(note)}</li>" for note in g.notes) + "</ul>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Grading feedback: {e(student)}</title>"
            "<style>body{font-family:sans-serif;max-width:50em;margin:2em auto;line-height:1.4}"
            "code{background:#f3f3f3;padding:0 .2em}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _inline_code(text: str) -> str:
    """Escaped HTML of a feedback line, its Markdown code spans (`x`) and bold (**x**) kept."""
    out = []
    for index, part in enumerate(str(text).split("`")):
        if index % 2:
            out.append(f"<code>{html.escape(part)}</code>")
        else:
            pieces = html.escape(part).split("**")
            out.append("".join(f"<strong>{p}</strong>" if i % 2 else p
                               for i, p in enumerate(pieces)))
    return "".join(out)


def _number(value: float) -> str:
    return f"{value:g}"


def gradebook(grades: list[Grade], lessons: dict[str, LessonChecks],
              per_exercise: bool = False) -> pd.DataFrame:
    """The wide gradebook: one row per student, a column per lesson (its points) and ``total``;
    with ``per_exercise``, a ``<lesson>/<exercise>`` column after each lesson's.

    A lesson the student did not hand in is an empty cell (not a 0: an LMS shows "no submission");
    ``total`` counts it as 0. Names are kept as given, through :func:`csv_cell`."""
    columns: list[str] = []
    for name, checks in lessons.items():
        columns.append(name)
        if per_exercise:
            columns += [f"{name}/{ex}" for ex in checks.exercises]
    rows: dict[str, dict[str, float]] = {}
    for g in grades:
        row = rows.setdefault(g.student, {})
        if g.lesson in lessons:
            row[g.lesson] = g.total
            if per_exercise:
                row.update({f"{g.lesson}/{e.id}": e.points for e in g.exercises})
    book = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=columns)
    book["total"] = book[list(lessons)].sum(axis=1, min_count=0).round(3)
    book = book.sort_index()
    book.insert(0, "student", [csv_cell(s) for s in book.index])
    return book.reset_index(drop=True)


def summary_text(grades: list[Grade], lessons: dict[str, LessonChecks], reused: int,
                 seconds: float, isolation: str, jobs: int) -> str:
    """What the instructor reads at the end of a run: graded and reused, the mean per exercise,
    failures by reason and what held the submissions (also written to ``summary.txt``)."""
    frame = pd.DataFrame([{"lesson": g.lesson, "status": g.status, "reason": g.reason,
                           "limits": g.limits, "total": g.total} for g in grades],
                         columns=["lesson", "status", "reason", "limits", "total"])
    students = len({g.student for g in grades})
    refused = int((frame["status"] == "refused").sum())
    lines = [f"graded {len(grades) - reused - refused} submission(s), reused {reused} unchanged, "
             f"refused {refused}, {len(grades)} in all ({students} student(s)) in {seconds:.1f} s "
             f"({isolation} isolation, {jobs} at a time)"]
    for name, checks in lessons.items():
        own = [g for g in grades if g.lesson == name]
        if not own:
            continue
        points = pd.DataFrame([{e.id: e.points for e in g.exercises} for g in own])
        means = ", ".join(f"{ex} {points[ex].mean():.2f}/{ex_checks.points:g}"
                          for ex, ex_checks in checks.exercises.items() if ex in points)
        total = pd.Series([g.total for g in own])
        lines.append(f"{name}: {len(own)} submission(s), mean {total.mean():.2f}/"
                     f"{checks.max_points:g}; per exercise: {means}")
    failing = frame[frame["status"] != "ok"]
    if failing.empty:
        lines.append("failures: none (every notebook ran without errors)")
    else:
        counts = failing["status"].value_counts()
        lines.append("failures by reason: " + ", ".join(
            f"{status} {count} ({STATUS_TEXT.get(status, status)})" for status, count in counts.items()))
        refused = failing[failing["status"] == "refused"]["reason"].value_counts()
        for reason, count in refused.items():
            lines.append(f"  refused {count}: {reason}")
    held = frame.loc[frame["limits"] != "", "limits"].value_counts()
    if not held.empty:
        lines.append("whole-submission memory and CPU limits held by: " + ", ".join(
            f"{how} ({count})" for how, count in held.items())
                     + "; every process also under rlimits (address space, CPU, files, processes)")
    return "\n".join(lines)


def write_reports(out_dir: Path, grades: list[Grade], lessons: dict[str, LessonChecks],
                  logs: list[str | None], skipped: list[str] | None = None,
                  per_exercise: bool = False, summary: str = "") -> None:
    """grades.csv, gradebook.csv, feedback/<student>.md and .html, results.json, summary.txt,
    skipped.txt and logs/ (trusted side only). A log of None keeps that submission's log file
    (its grade was reused); a file whose content is unchanged is not rewritten.

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
    book = gradebook(grades, lessons, per_exercise)
    numbers = book.columns[1:]
    book[numbers] = book[numbers].apply(lambda col: col.map(lambda v: "" if pd.isna(v) else _number(v)))
    _atomic_write(out_dir / "gradebook.csv", book.to_csv(index=False, lineterminator="\r\n"))
    by_student: dict[str, list[Grade]] = {}
    for g in grades:
        by_student.setdefault(g.student, []).append(g)
    for student, own in by_student.items():
        _atomic_write(out_dir / "feedback" / f"{file_name(student)}.md", feedback_text(student, own))
        _atomic_write(out_dir / "feedback" / f"{file_name(student)}.html", feedback_html(student, own))
    for g, log in zip(grades, logs, strict=True):
        if log is None:
            continue
        _atomic_write(out_dir / "logs" / f"{file_name(g.student)}__{g.lesson or 'none'}.log",
                      f"student: {g.student!r}\nsource: {g.source}\nseconds: {g.seconds:.2f}\n"
                      f"status: {g.status}\n" + "".join(f"{line}\n" for line in g.log) + log)
    _atomic_write(out_dir / "skipped.txt", "".join(f"{line}\n" for line in skipped or []))
    _atomic_write(out_dir / "summary.txt", summary + "\n")
    _atomic_write(out_dir / "results.json",
                  json.dumps([{**asdict(g), "total": g.total, "max_points": g.max_points}
                              for g in grades], indent=1, ensure_ascii=False))
