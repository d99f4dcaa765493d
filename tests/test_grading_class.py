"""The grader over a whole class: incremental regrading, the wide gradebook, HTML feedback, the
summary and the progress output.

The fast tests replace the sandbox run by a stand-in that answers from the submission's text (a
class of 30 costs nothing); the slow ones grade real notebooks of the test lesson in a real sandbox.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from grader import isolation, sandbox, score
from grader.progress import ClassProgress
from grader.reports import feedback_html, file_name
from grader.score import grade

NONCE = "ab" * 16
TINY = '''from grader import Case, Exercise

EXERCISES = {
    "E1": Exercise(points=2, cases=[Case("answer", expect=42)]),
    "E2": Exercise(points=1, cases=[Case("word", expect="yes")]),
}
'''


def _frames(frames: list[dict]) -> bytes:
    data = b""
    for frame in frames:
        body = json.dumps(frame).encode()
        data += b"NBLIB-FRAME " + NONCE.encode() + b" " + str(len(body)).encode() + b"\n" + body + b"\n"
    return data


class FakeSandbox:
    """Stands for ``run_in_sandbox``: the notebook's ``ANSWER = n`` and ``WORD = '...'`` are what
    its functions return. Records whose notebook it ran (``STUDENT = '...'``)."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def __call__(self, request, limits, mode, uid=None, secret_paths=None, data=None):
        text = request["notebook"]
        self.ran.append(re.search(r"STUDENT = '([^']*)'", text).group(1))
        answer = int(re.search(r"ANSWER = (\d+)", text).group(1))
        word = re.search(r"WORD = '([^']*)'", text).group(1)
        values = {"answer": answer, "word": word}
        frames = [{"type": "cells", "cells": [{"number": 1, "status": "ok"}], "deaths": [],
                   "restarts": 0}]
        for index, call in enumerate(request["calls"]):
            frames.append({"type": "call", "index": index, "status": "returned",
                           "result": json.dumps({"ok": True, "value": values[call["function"]]})})
        frames.append({"type": "done"})
        return sandbox.SandboxResult(_frames(frames), NONCE, mode, False, 0, 0.5, "fake run\n",
                                     limits="watchdog")


def write_student(subs: Path, student: str, answer: int = 42, word: str = "yes",
                  lesson: str = "95_tiny") -> None:
    nb = new_notebook(cells=[new_code_cell(f"STUDENT = {student!r}\nANSWER = {answer}\n"
                                           f"WORD = {word!r}")])
    (subs / student).mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, subs / student / f"{lesson}.ipynb")


@pytest.fixture()
def tiny(tmp_path, monkeypatch):
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "95_tiny.py").write_text(TINY)
    (hidden / "96_other.py").write_text(TINY.replace('"E1"', '"F1"').replace('"E2"', '"F2"'))
    fake = FakeSandbox()
    monkeypatch.setattr(score, "run_in_sandbox", fake)
    monkeypatch.setattr(isolation, "_probe_cache", {})

    def run(subs: Path, out: Path, **kwargs) -> list:
        fake.ran.clear()
        return grade(subs, out, hidden, isolation="none", allow_unsafe=True, progress=None,
                     jobs=2, **kwargs)

    return {"hidden": hidden, "fake": fake, "grade": run}


def snapshot(out: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(out)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(out.rglob("*")) if p.is_file()}


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_adding_3_to_a_graded_class_of_30_grades_only_those_3(tiny, tmp_path):
    subs, out = tmp_path / "subs", tmp_path / "out"
    class_of_30 = [f"s{n:02d}" for n in range(30)]
    for n, student in enumerate(class_of_30):
        write_student(subs, student, answer=42 if n % 3 else 7)  # every third answers wrong
    tiny["grade"](subs, out)
    assert sorted(tiny["fake"].ran) == class_of_30
    before = snapshot(out)
    late = ["late-1", "late-2", "张三"]
    for student in late:
        write_student(subs, student)
    grades = tiny["grade"](subs, out)
    assert sorted(tiny["fake"].ran) == sorted(late)  # only the three were run
    assert len(grades) == 33
    after = snapshot(out)
    for student in class_of_30:  # the others' feedback and logs: same bytes, never rewritten
        for rel in (f"feedback/{student}.md", f"feedback/{student}.html",
                    f"logs/{student}__95_tiny.log"):
            assert after[rel] == before[rel], rel
    old_rows = {r["student"]: r for r in rows(out / "grades.csv")}
    assert {s: r for s, r in old_rows.items() if s in class_of_30} == {
        r["student"]: r for r in csv.DictReader(io.StringIO(before["grades.csv"][0].decode()))}
    assert old_rows["张三"]["total"] == "3" and old_rows["s00"]["total"] == "1"
    summary = (out / "summary.txt").read_text()
    assert summary.startswith("graded 3 submission(s), reused 30 unchanged, refused 0, 33 in all")
    # nothing changed: nothing runs; --force: everyone runs
    tiny["grade"](subs, out)
    assert tiny["fake"].ran == []
    tiny["grade"](subs, out, force=True)
    assert len(tiny["fake"].ran) == 33


def test_a_changed_submission_checks_or_limits_are_graded_again(tiny, tmp_path):
    subs, out = tmp_path / "subs", tmp_path / "out"
    for student in ("ann", "bob", "cy"):
        write_student(subs, student)
    tiny["grade"](subs, out)
    write_student(subs, "bob", answer=41)  # bob hands in again
    grades = {g.student: g for g in tiny["grade"](subs, out)}
    assert tiny["fake"].ran == ["bob"] and grades["bob"].total == 1.0
    tiny["grade"](subs, out, limits={"wall_s": 60})  # other limits: another run
    assert sorted(tiny["fake"].ran) == ["ann", "bob", "cy"]
    checks = tiny["hidden"] / "95_tiny.py"
    checks.write_text(checks.read_text().replace("points=1", "points=4"))  # the checks changed
    grades = {g.student: g for g in tiny["grade"](subs, out, limits={"wall_s": 60})}
    assert sorted(tiny["fake"].ran) == ["ann", "bob", "cy"] and grades["ann"].total == 6.0
    (tiny["hidden"] / "_helpers.py").write_text("X = 1\n")  # a helper of the checks, too
    tiny["grade"](subs, out, limits={"wall_s": 60})
    assert len(tiny["fake"].ran) == 3


def test_results_of_an_older_grader_or_a_refused_file_are_not_reused(tiny, tmp_path):
    subs, out = tmp_path / "subs", tmp_path / "out"
    write_student(subs, "ann")
    (subs / "bob").mkdir()
    (subs / "bob" / "95_tiny.ipynb").symlink_to(subs / "ann" / "95_tiny.ipynb")
    grades = {g.student: g for g in tiny["grade"](subs, out)}
    assert grades["bob"].status == "refused" and tiny["fake"].ran == ["ann"]
    (subs / "bob" / "95_tiny.ipynb").unlink()
    write_student(subs, "bob")  # bob fixes his submission: graded, though his row existed
    tiny["grade"](subs, out)
    assert tiny["fake"].ran == ["bob"]
    records = json.loads((out / "results.json").read_text())
    for record in records:
        record.pop("key")  # as an older grader wrote them
    (out / "results.json").write_text(json.dumps(records))
    tiny["grade"](subs, out)
    assert sorted(tiny["fake"].ran) == ["ann", "bob"]


def test_wide_gradebook_one_row_per_student_names_kept_formulas_defused(tiny, tmp_path):
    subs, out = tmp_path / "subs", tmp_path / "out"
    write_student(subs, "=HYPERLINK(1)", answer=1)
    write_student(subs, "张三")
    write_student(subs, "张三", lesson="96_other", word="no")
    write_student(subs, "alice!", lesson="96_other")
    tiny["grade"](subs, out, per_exercise=True)
    book = rows(out / "gradebook.csv")
    assert list(book[0]) == ["student", "95_tiny", "95_tiny/E1", "95_tiny/E2", "96_other",
                             "96_other/F1", "96_other/F2", "total"]
    by_name = {r["student"]: r for r in book}
    assert set(by_name) == {"'=HYPERLINK(1)", "张三", "alice!"}
    assert by_name["张三"] == {"student": "张三", "95_tiny": "3", "95_tiny/E1": "2",
                              "95_tiny/E2": "1", "96_other": "2", "96_other/F1": "2",
                              "96_other/F2": "0", "total": "5"}
    # a lesson not handed in is an empty cell, counted 0 in the total
    assert by_name["alice!"]["95_tiny"] == "" and by_name["alice!"]["total"] == "3"
    assert by_name["'=HYPERLINK(1)"]["total"] == "1"
    tiny["grade"](subs, out, force=True)  # without --per-exercise: a column per lesson only
    assert list(rows(out / "gradebook.csv")[0]) == ["student", "95_tiny", "96_other", "total"]
    # the long grades.csv stays as it was: a row per student and lesson
    assert len(rows(out / "grades.csv")) == 4


def test_feedback_also_as_html_with_everything_escaped(tiny, tmp_path):
    subs, out = tmp_path / "subs", tmp_path / "out"
    write_student(subs, "<i>bob", answer=3)
    tiny["grade"](subs, out)
    name = file_name("<i>bob")
    md = (out / "feedback" / f"{name}.md").read_text()
    page = (out / "feedback" / f"{name}.html").read_text()
    assert "2 / 3 points" not in md and "1 / 3 points" in md
    assert "1 / 3 points" in page and "<i>bob" not in page and "&lt;i&gt;bob" in page
    assert page.startswith("<!DOCTYPE html>") and "<strong>E1</strong>: 0 / 2 points" in page
    from grader.judge import CaseResult, ExerciseResult, Grade

    hostile = Grade("x", "95_tiny", "errors", [ExerciseResult("E1", 0, 2, [
        CaseResult(False, "`f` returned <script>alert(1)</script>")])],
        notes=["code cell 1 raised ValueError: `<img src=x onerror=alert(1)>`"])
    text = feedback_html("x", [hostile])
    assert "<script>" not in text and "<img" not in text
    assert "<code>&lt;img src=x onerror=alert(1)&gt;</code>" in text


def test_summary_gives_means_per_exercise_and_failures_by_reason(tiny, tmp_path):
    subs, out = tmp_path / "subs", tmp_path / "out"
    write_student(subs, "ann")
    write_student(subs, "bob", answer=1, word="no")
    (subs / "cy").mkdir()
    (subs / "cy" / "95_tiny.ipynb").symlink_to("/dev/zero")
    lines: list[str] = []
    grade(subs, out, tiny["hidden"], isolation="none", allow_unsafe=True, progress=lines.append)
    summary = (out / "summary.txt").read_text()
    assert "95_tiny: 3 submission(s), mean 1.00/3; per exercise: E1 0.67/2, E2 0.33/1" in summary
    assert "failures by reason: refused 1" in summary and "refused 1: a symbolic link" in summary
    assert "held by: watchdog (2)" in summary
    # not a terminal: one line per student, then the summary
    per_student = [line for line in lines if re.match(r"\[\d/3\] ", line)]
    assert len(per_student) == 3 and any(line.startswith("graded 2 submission(s)") for line in lines)


def test_progress_is_a_bar_on_a_terminal_and_lines_elsewhere():
    said: list[str] = []
    stream = io.StringIO()
    meter = ClassProgress(2, said.append, stream=stream)  # a StringIO is not a terminal
    meter.student_done("[1/2] ann: 3/3 ok", "ann 3/3")
    meter.close()
    assert said == ["[1/2] ann: 3/3 ok"] and stream.getvalue() == ""
    meter = ClassProgress(2, said.append, bar=True, stream=stream)
    meter.student_done("[1/2] ann: 3/3 ok", "ann 3/3")
    meter.student_done("[2/2] bob: 0/3 ok", "bob 0/3")
    meter.close()
    assert len(said) == 1 and "2/2" in stream.getvalue() and "bob 0/3" in stream.getvalue()
    silent = ClassProgress(2, None)
    silent.student_done("x", "y")
    silent.close()
