"""A learner's own copies of the lessons: what ``make lab`` opens.

The lessons in ``notebooks/`` are the instructor's solution source. ``make lab`` gives a learner the
*student* versions (exercise solutions removed, outputs cleared, hidden cells dropped; the same
stripper as ``make student``) in a git-ignored folder of their own, ``lab/``, and opens JupyterLab
there. A copy is written only where none exists; a notebook the learner has edited is **never
overwritten**: when the course changes a lesson the learner has edited, the new version is written
beside it as ``NN_name.update-<hash>.ipynb`` and the command says so. A copy the learner has not
touched is simply brought up to date.

``lab/.course-versions.json`` remembers the sha256 of every file this module wrote, which is how it
tells "edited by the learner" from "as we wrote it".

Introduced in the README ("Start here"); ``python -m nblib.lab [--dest lab]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
DEFAULT_DEST = REPO_ROOT / "lab"
MANIFEST = ".course-versions.json"


@dataclass(frozen=True)
class CopyAction:
    """What happened to one lesson: ``created``, ``updated``, ``unchanged``, ``kept`` or ``beside``."""

    lesson: str
    action: str
    path: Path


def student_text(lesson: Path) -> str:
    """The student version of one lesson as notebook JSON text (solutions and outputs removed)."""
    from grader.strip import student_notebook

    nb = student_notebook(nbformat.read(lesson, as_version=4), str(lesson))
    # JupyterLab copies the kernel's language_info into a notebook when the kernel starts and marks
    # it modified when they differ: the learner's copy carries the Python that `make lab` runs.
    nb.metadata.setdefault("language_info", {})["version"] = platform.python_version()
    return nbformat.writes(nb) + "\n"


def _sha(text: str | bytes) -> str:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def prepare(dest: Path = DEFAULT_DEST, lessons: list[Path] | None = None) -> list[CopyAction]:
    """Create or refresh the learner's copies in ``dest``; never overwrite an edited notebook."""
    dest = Path(dest)
    lessons = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]*_*.ipynb")) if lessons is None else lessons
    dest.mkdir(parents=True, exist_ok=True)
    manifest_path = dest / MANIFEST
    try:
        written: dict[str, str] = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    except json.JSONDecodeError:
        written = {}  # an unreadable manifest: treat every existing copy as the learner's own
    actions = []
    for lesson in lessons:
        text = student_text(lesson)
        new_sha = _sha(text)
        target = dest / lesson.name
        if not target.exists():
            _write_atomic(target, text)
            written[target.name] = new_sha
            actions.append(CopyAction(lesson.name, "created", target))
            continue
        current_sha = _sha(target.read_bytes())
        if current_sha == new_sha:
            written[target.name] = new_sha
            actions.append(CopyAction(lesson.name, "unchanged", target))
        elif current_sha == written.get(target.name):  # as we wrote it: the learner has not edited it
            _write_atomic(target, text)
            written[target.name] = new_sha
            actions.append(CopyAction(lesson.name, "updated", target))
        elif new_sha == written.get(target.name):  # edited, and the course has not changed since
            actions.append(CopyAction(lesson.name, "kept", target))
        else:  # edited by the learner and changed by the course: the new version goes beside it
            beside = dest / f"{lesson.stem}.update-{new_sha[:8]}.ipynb"
            if not beside.exists():
                _write_atomic(beside, text)
            actions.append(CopyAction(lesson.name, "beside", beside))
    _write_atomic(manifest_path, json.dumps(written, indent=1, sort_keys=True) + "\n")
    return actions


MESSAGES = {
    "created": "new copy",
    "updated": "updated to the course's new version (you had not edited it)",
    "unchanged": "up to date",
    "kept": "your edited copy, kept as it is",
    "beside": "you edited this lesson and the course changed it: your copy is kept, "
              "the new version is beside it",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nblib.lab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", default=str(DEFAULT_DEST), help="the learner's folder (default: lab/)")
    args = parser.parse_args(argv)
    actions = prepare(Path(args.dest))
    for a in actions:
        shown = a.path.name if a.action != "beside" else f"{a.lesson} -> {a.path.name}"
        print(f"{shown}: {MESSAGES[a.action]}")
    print(f"Your lessons are in {args.dest}/ (the instructor's versions with solutions: make lab SOLUTIONS=1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
