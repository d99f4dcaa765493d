"""Incremental regrading: a submission is graded again only when something that fixes its grade
changed. Trusted code.

The key of one submission is a hash of: its file's bytes, its lesson's hidden checks (the lesson's
module and the ``_*.py`` helpers beside it), the grader's own source, the ``nblib`` source the
notebooks import (a lesson calls the library, and the reference guard recognises the library's
code by file), the lesson's effective limits and parameters, the sandbox kind, and the student's
name. It is stored with each grade in ``results.json``; the next run reuses a grade whose key
matches (``--force`` regrades all). A refused file or a grader error is never reused: both are
cheap to try again, and a grader error is not the student's grade.

``results.json`` lies in the output folder, which only the trusted process writes and no sandbox
sees, so what it holds is trusted as the grader wrote it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from grader.checks import PACKAGE_DIR, LessonChecks
from grader.judge import CaseResult, ExerciseResult, Grade

NOT_REUSED = ("refused",)  # statuses always graded again (cheap; the file may be fixed by now)
RESULTS = "results.json"


def tree_hash(root: Path, skip: tuple[str, ...] = ()) -> str:
    """sha256 over the ``*.py`` files below ``root`` (relative names and bytes), ``skip``ped
    top-level folders left out; caches of compiled files are never read."""
    digest = hashlib.sha256()
    root = Path(root)
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in skip or "__pycache__" in rel.parts:
            continue
        digest.update(str(rel).encode("utf-8") + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def checks_hash(checks: LessonChecks) -> str:
    """The lesson's hidden-checks module and its helpers (``_*.py`` beside it, which
    :func:`~grader.checks.find_checks` never takes for a lesson)."""
    digest = hashlib.sha256()
    for path in [checks.path, *sorted(Path(checks.path).parent.glob("_*.py"))]:
        digest.update(path.name.encode("utf-8") + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class Sources:
    """The hashes shared by every submission of one grading run."""

    grader: str
    nblib: str
    isolation: str

    @classmethod
    def now(cls, isolation: str) -> Sources:
        import nblib

        # The hidden checks are keyed per lesson, not with the grader's source.
        return cls(tree_hash(PACKAGE_DIR, skip=("hidden",)),
                   tree_hash(Path(nblib.__file__).resolve().parent), isolation)


def submission_key(notebook: bytes, student: str, checks: LessonChecks, sources: Sources,
                   checks_digest: str) -> str:
    """The key of one submission: equal keys give the same grade (see the module's docstring)."""
    parts = {
        "notebook": hashlib.sha256(notebook).hexdigest(),
        "student": student,
        "lesson": checks.lesson,
        "checks": checks_digest,
        "limits": dataclasses.asdict(checks.limits),
        "parameters": checks.parameters,
        **dataclasses.asdict(sources),
    }
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def grade_from_record(record: dict[str, Any]) -> Grade:
    """A :class:`Grade` back from its ``results.json`` record."""
    fields = {f.name for f in dataclasses.fields(Grade)}
    values = {k: v for k, v in record.items() if k in fields}
    values["exercises"] = [
        ExerciseResult(e["id"], e["points"], e["max_points"],
                       [CaseResult(c["passed"], c["message"]) for c in e["cases"]])
        for e in record.get("exercises", [])]
    return Grade(**values)


def previous_grades(out_dir: Path) -> dict[tuple[str, str], Grade]:
    """The reusable grades of the last run into ``out_dir``, by (student, lesson): only those that
    carry a key and are not a refusal or a grader error. Empty when there is nothing readable."""
    try:
        records = json.loads((Path(out_dir) / RESULTS).read_text(encoding="utf-8"))
        grades = [grade_from_record(r) for r in records]
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # no earlier run, or one by an older grader: everything is graded
    return {(g.student, g.lesson): g for g in grades
            if g.key and g.status not in NOT_REUSED and not g.grader_error}
