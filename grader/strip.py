"""Student versions of the lesson notebooks: solutions out, outputs out, hidden cells out.

The lessons are the solution source. An exercise is a code cell tagged ``exercise`` whose metadata
holds ``{"exercise": {"id": "03-mask", "points": 3}}``; its solution sits between a
``### BEGIN SOLUTION`` line and a ``### END SOLUTION`` line. The student version replaces each such
region with ``raise NotImplementedError("exercise 03-mask")`` at the marker's indentation (in a
markdown cell, with "*Write your answer here.*"), clears every output and execution count, and
drops cells tagged ``hidden``. A line that mentions BEGIN/END SOLUTION in any other spelling is an
error, so a mistyped marker can never leak a solution.

Introduced for the graded exercises of the lessons (see docs/grading.md).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

from grader.checks import EXERCISE_ID, LessonChecks

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
_ANY_MARKER = re.compile(r"(BEGIN|END)[\s_-]*SOLUTION", re.IGNORECASE)
MARKDOWN_PLACEHOLDER = "*Write your answer here.*"
# Cell metadata that records a past run; none of it belongs in a handout.
_RUN_METADATA = ("execution", "collapsed", "scrolled", "papermill", "ExecuteTime")
_NOTEBOOK_RUN_METADATA = ("papermill", "widgets")


class StripError(ValueError):
    """A lesson notebook that cannot be turned into a student version (names notebook and cell)."""


@dataclass(frozen=True)
class ExerciseCell:
    id: str
    points: float
    cell_index: int


def exercise_cells(nb: nbformat.NotebookNode, where: str = "notebook") -> list[ExerciseCell]:
    """The exercise cells of a lesson, validated: tag, metadata id and points, unique ids."""
    found: list[ExerciseCell] = []
    for index, cell in enumerate(nb.cells):
        tags = cell.metadata.get("tags", [])
        meta = cell.metadata.get("exercise")
        if "exercise" not in tags and meta is None:
            continue
        at = f"{where}, cell {index}"
        if cell.cell_type != "code":
            raise StripError(f"{at}: only code cells can be exercises")
        if "exercise" not in tags or not isinstance(meta, dict):
            raise StripError(
                f"{at}: an exercise cell needs the tag 'exercise' and metadata "
                '"exercise": {"id": ..., "points": ...}'
            )
        ex_id, points = meta.get("id"), meta.get("points")
        if not isinstance(ex_id, str) or not EXERCISE_ID.match(ex_id):
            raise StripError(f"{at}: exercise id {ex_id!r} must be like '03-mask'")
        if type(points) not in (int, float) or points <= 0:
            raise StripError(f"{at}: exercise {ex_id}: points must be a positive number")
        if any(e.id == ex_id for e in found):
            raise StripError(f"{at}: exercise id {ex_id!r} is used twice")
        lines = [line.strip() for line in cell.source.splitlines()]
        for line in lines:
            if _ANY_MARKER.search(line) and line not in (BEGIN, END):
                raise StripError(f"{at}: unrecognised solution marker {line!r}; write exactly "
                                 f"'{BEGIN}' and '{END}' on lines of their own")
        if BEGIN not in lines:
            raise StripError(f"{at}: exercise {ex_id} has no '{BEGIN}' line")
        found.append(ExerciseCell(ex_id, float(points), index))
    return found


def _strip_source(source: str, replacement: str, at: str) -> tuple[str, list[str]]:
    """Replace every marked region; return the new source and the removed solution lines."""
    out: list[str] = []
    removed: list[str] = []
    inside = False
    for line in source.splitlines():
        marker = line.strip()
        if marker == BEGIN:
            if inside:
                raise StripError(f"{at}: '{BEGIN}' inside another solution (missing '{END}'?)")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.append(indent + replacement)
        elif marker == END:
            if not inside:
                raise StripError(f"{at}: '{END}' without a '{BEGIN}' before it")
            inside = False
        elif _ANY_MARKER.search(line):
            raise StripError(
                f"{at}: unrecognised solution marker {line.strip()!r}; write exactly "
                f"'{BEGIN}' and '{END}' on lines of their own"
            )
        elif inside:
            removed.append(line)
        else:
            out.append(line)
    if inside:
        raise StripError(f"{at}: '{BEGIN}' without a matching '{END}'")
    return "\n".join(out), removed


def student_notebook(nb: nbformat.NotebookNode, where: str = "notebook") -> nbformat.NotebookNode:
    """The student version of one lesson notebook (the input is left unchanged)."""
    exercises = {e.cell_index: e for e in exercise_cells(nb, where)}
    student = copy.deepcopy(nb)
    kept = []
    removed: list[str] = []
    visible: list[str] = []  # source lines of the lesson outside any solution
    for index, cell in enumerate(student.cells):
        at = f"{where}, cell {index}"
        if "hidden" in cell.metadata.get("tags", []):
            continue
        if cell.cell_type == "code":
            ex = exercises.get(index)
            text = f'raise NotImplementedError("exercise {ex.id}")' if ex else None
            if text is None and any(_ANY_MARKER.search(line) for line in cell.source.splitlines()):
                raise StripError(f"{at}: solution markers in a cell not tagged 'exercise'")
            if text is not None:
                cell.source, lines = _strip_source(cell.source, text, at)
                removed += lines
            cell.outputs = []
            cell.execution_count = None
        elif cell.cell_type == "markdown":
            cell.source, lines = _strip_source(cell.source, MARKDOWN_PLACEHOLDER, at)
            removed += lines
        for key in _RUN_METADATA:
            cell.metadata.pop(key, None)
        visible += cell.source.splitlines()
        kept.append(cell)
    student.cells = kept
    for key in _NOTEBOOK_RUN_METADATA:
        student.metadata.pop(key, None)
    _check_no_leak(student, removed, visible, where)
    nbformat.validate(student)
    return student


def _check_no_leak(student: nbformat.NotebookNode, removed: list[str], visible: list[str],
                   where: str) -> None:
    """Belt and braces: no solution line may survive unless the lesson shows it elsewhere too."""
    elsewhere = {line.strip() for line in visible}
    text = nbformat.writes(student)
    if "BEGIN SOLUTION" in text or "END SOLUTION" in text:
        raise StripError(f"{where}: a solution marker survived stripping")
    for line in removed:
        if line.strip() and line.strip() not in elsewhere and line.strip() in text:
            raise StripError(f"{where}: solution line {line.strip()!r} survived stripping")


@dataclass(frozen=True)
class StudentVersion:
    source: Path
    written: Path
    exercises: list[ExerciseCell]


def write_student_versions(
    notebooks: list[Path], out_dir: Path, checks: dict[str, LessonChecks] | None = None
) -> tuple[list[StudentVersion], list[str]]:
    """Write the student version of every notebook that has exercises; return them and warnings.

    With ``checks`` (hidden checks by notebook stem), an exercise whose id or points disagree with
    its hidden checks is an error; a lesson without hidden checks gives a warning.
    """
    out_dir = Path(out_dir)
    written: list[StudentVersion] = []
    warnings: list[str] = []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        exercises = exercise_cells(nb, str(path))
        if not exercises:
            continue
        if checks is not None:
            warnings += check_against_hidden(path, exercises, checks.get(path.stem))
        student = student_notebook(nb, str(path))
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / path.name
        nbformat.write(student, target)
        written.append(StudentVersion(path, target, exercises))
    return written, warnings


def check_against_hidden(path: Path, exercises: list[ExerciseCell],
                         checks: LessonChecks | None) -> list[str]:
    """Errors (raised) and warnings (returned) about a lesson versus its hidden checks."""
    if checks is None:
        return [f"{path}: no hidden checks module grader/hidden/{path.stem}.py: "
                "its exercises cannot be graded yet"]
    in_notebook = {e.id: e.points for e in exercises}
    hidden = {k: float(v.points) for k, v in checks.exercises.items()}
    problems = []
    for ex_id in sorted(set(in_notebook) - set(hidden)):
        problems.append(f"exercise {ex_id} has no hidden checks")
    for ex_id in sorted(set(hidden) - set(in_notebook)):
        problems.append(f"hidden checks for {ex_id}, which is not an exercise cell")
    for ex_id in sorted(set(in_notebook) & set(hidden)):
        if in_notebook[ex_id] != hidden[ex_id]:
            problems.append(f"exercise {ex_id}: {in_notebook[ex_id]:g} points in the notebook, "
                            f"{hidden[ex_id]:g} in {checks.path.name}")
    if problems:
        raise StripError(f"{path} disagrees with {checks.path}: " + "; ".join(problems))
    return []
