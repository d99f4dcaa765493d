"""The real lessons through the real grader: solutions score full marks, student versions zero."""

import csv
import shutil
import subprocess
import sys

import pytest

from grader.checks import COURSE_NOTEBOOKS as NOTEBOOKS_DIR
from grader.checks import HIDDEN_DIR

GRADED = sorted(p.name for p in HIDDEN_DIR.glob("[0-9][0-9]_*.py"))


@pytest.mark.notebook
def test_solutions_score_full_marks_and_student_versions_zero(tmp_path):
    lessons = [NOTEBOOKS_DIR / name.replace(".py", ".ipynb") for name in GRADED]
    assert len(lessons) >= 5, GRADED
    run = [sys.executable, "-m", "grader"]
    out = subprocess.run([*run, "student", "--out", str(tmp_path / "student")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for who, source in (("solution", NOTEBOOKS_DIR), ("student", tmp_path / "student")):
        (tmp_path / "subs" / who).mkdir(parents=True)
        for lesson in lessons:
            shutil.copy(source / lesson.name, tmp_path / "subs" / who / lesson.name)
    out = subprocess.run([*run, "grade", str(tmp_path / "subs"), "--out", str(tmp_path / "grades"), "--jobs", "2"],
                         capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "grades" / "grades.csv").open(encoding="utf-8")))
    assert len(rows) == 2 * len(lessons)
    for row in rows:
        total, most = float(row["total"]), float(row["max_points"])
        if row["student"] == "solution":
            assert (row["status"], total) == ("ok", most), row
        else:
            assert total == 0, row
    feedback = (tmp_path / "grades" / "feedback").glob("*")
    assert any(feedback)
