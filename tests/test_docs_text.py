"""The README, docs/ and the scripts' usage lines speak of the project: its commands, its measurements, the
machine and date of each. A user of the repository cannot open an issue tracker's number, a build machine's
folder or a working period, so none of them may appear."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "experiments").glob("*.py")),
             *sorted((ROOT / "benchmarks").glob("*.py"))]

# what the project's documents may not say, with why
FORBIDDEN = {
    "an absolute path of a build machine": re.compile(r"(?<![\w.<])/(?:work|tmp|home|root|Users)/"),
    "an issue number": re.compile(r"(?i)\b(?:issue|pull request|PR)\s*#?\d+|(?<![\w&/])#\d+\b(?![\w-])"),
    # ("round" is left out: a benchmark times rounds)
    "a working period": re.compile(r"(?i)\b(?:this|last|next|previous|earlier|later|first|second|third)"
                                   r" (?:session|working period)\b|\bsession \d+"),
}


def problems(text: str) -> list[str]:
    """``line N: what`` for each forbidden thing in ``text``."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        found += [f"line {number}: {what}: {m.group(0)!r}" for what, pattern in FORBIDDEN.items()
                  for m in pattern.finditer(line)]
    return found


def test_the_checks_can_fail():
    assert problems("NBLIB_DATA_MIRROR=/work/shared/data make report")
    assert problems("as issue 34 asked") and problems("fixed in #37.")
    assert problems("measured in the third session")
    # what the documents do say: placeholders, anchors, colours, relative paths and lesson numbers
    assert not problems("NBLIB_DATA_MIRROR=<mirror> make report; [below](#complete-run-52c28df); "
                        "colour #4c72b0; tests/test_pool.py; lesson 03b; 3 seeds; runs/small/pretrain/bert.pt")


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_documents_speak_of_the_project(path):
    assert not problems(path.read_text(encoding="utf-8")), "\n".join(problems(path.read_text(encoding="utf-8")))
