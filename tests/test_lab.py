"""``make lab``: learners get student copies, created once, never overwritten once edited."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat

from nblib import lab

LESSON = lab.NOTEBOOKS_DIR / "00_data.ipynb"


def _lesson_copy(tmp_path: Path) -> Path:
    source = tmp_path / "course"
    source.mkdir()
    return Path(shutil.copy(LESSON, source / LESSON.name))


def test_first_run_writes_student_versions_without_solutions(tmp_path: Path) -> None:
    lesson = _lesson_copy(tmp_path)
    actions = lab.prepare(tmp_path / "lab", [lesson])
    assert [a.action for a in actions] == ["created"]
    text = (tmp_path / "lab" / lesson.name).read_text()
    assert "BEGIN SOLUTION" in lesson.read_text()  # the lesson is the solution source...
    assert "BEGIN SOLUTION" not in text and "NotImplementedError" in text  # ...the copy is not


def test_edited_copy_is_never_overwritten(tmp_path: Path) -> None:
    lesson = _lesson_copy(tmp_path)
    dest = tmp_path / "lab"
    lab.prepare(dest, [lesson])
    mine = dest / lesson.name
    nb = nbformat.read(mine, as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("my notes"))
    nbformat.write(nb, mine)
    edited = mine.read_bytes()

    assert [a.action for a in lab.prepare(dest, [lesson])] == ["kept"]
    assert mine.read_bytes() == edited

    # the course changes the lesson: the edit stays, the new version lands beside it
    course = nbformat.read(lesson, as_version=4)
    course.cells.insert(0, nbformat.v4.new_markdown_cell("course update"))
    nbformat.write(course, lesson)
    actions = lab.prepare(dest, [lesson])
    assert [a.action for a in actions] == ["beside"]
    assert mine.read_bytes() == edited
    assert "course update" in actions[0].path.read_text()
    assert actions[0].path.name.startswith("00_data.update-")
    # a second run changes nothing more
    assert [a.action for a in lab.prepare(dest, [lesson])] == ["beside"]
    assert sorted(p.name for p in dest.glob("*.ipynb")) == sorted([mine.name, actions[0].path.name])


def test_unedited_copy_follows_the_course(tmp_path: Path) -> None:
    lesson = _lesson_copy(tmp_path)
    dest = tmp_path / "lab"
    lab.prepare(dest, [lesson])
    course = nbformat.read(lesson, as_version=4)
    course.cells.insert(0, nbformat.v4.new_markdown_cell("course update"))
    nbformat.write(course, lesson)
    assert [a.action for a in lab.prepare(dest, [lesson])] == ["updated"]
    assert "course update" in (dest / lesson.name).read_text()
    manifest = json.loads((dest / lab.MANIFEST).read_text())
    assert set(manifest) == {lesson.name}


def test_every_lesson_gets_a_copy(tmp_path: Path) -> None:
    actions = lab.prepare(tmp_path / "lab")
    names = {a.lesson for a in actions}
    assert names == {p.name for p in lab.NOTEBOOKS_DIR.glob("[0-9][0-9]*_*.ipynb")}
    for a in actions:
        assert "### BEGIN SOLUTION" not in a.path.read_text()


def test_copy_carries_the_python_the_kernel_reports(tmp_path: Path) -> None:
    # JupyterLab marks a notebook modified on opening when its language_info differs from the kernel's
    import platform

    lesson = _lesson_copy(tmp_path)
    nb = nbformat.read(lesson, as_version=4)
    nb.metadata["language_info"]["version"] = "2.7.0"
    nbformat.write(nb, lesson)
    lab.prepare(tmp_path / "lab", [lesson])
    copy = nbformat.read(tmp_path / "lab" / lesson.name, as_version=4)
    assert copy.metadata["language_info"]["version"] == platform.python_version()
