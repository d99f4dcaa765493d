"""The lessons' Markdown speaks to a learner: no research log, short cells, a closing "What we have".

The research log (recipes tried, grids, reruns, timings on particular computers, issue notes) lives in
docs/experiments.md; a lesson links it in one line. These checks read only the committed Markdown cells.

Choices, documented here because the issue left them open:

- **Words** are whitespace-separated tokens plus half a word per CJK character (a Chinese phrase such as
  房间很干净 is one token but five characters; two characters make about one English word). LaTeX and
  code spans count as they are written.
- **Forbidden mentions** (``LOG_PATTERNS``): an issue ("issue", "#3"), a VM, a rerun ("rerun",
  "re-run", "run A/B"), a reference file outside the repository (``shared/reference``), and a machine
  other than the learner's own: "machine" is allowed only as "this machine", "your (own) machine" (a
  probe that times the learner's computer says so), "every machine" / "any machine" (a claim that
  holds everywhere, e.g. the split's ids) and in "machine learning".
- Lessons 02-05 carry at most ``MAX_LESSON_WORDS`` words of Markdown; every Markdown cell at most
  ``MAX_CELL_WORDS`` (the aim is about 200: one screen).
- Every lesson ends with a Markdown cell whose heading contains "What we have".
- Every lesson links the research log (``docs/experiments.md``) in one line, and every such link's
  ``#anchor`` exists there.
- The committed file is what Jupyter writes (nbformat's own serialisation, the course kernelspec), so
  opening a lesson in JupyterLab does not mark it modified before any edit.
"""

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
LOG_LINK = re.compile(r"\]\(\.\./docs/experiments\.md(?:#([\w-]+))?\)")
MAX_LESSON_WORDS = 2000  # lessons 02-05
MAX_CELL_WORDS = 250
KERNELSPEC = {"name": "nblib", "display_name": "Python (nblib)", "language": "python"}

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
MACHINE_OK = re.compile(r"\b(?:this|your|your own|every|any) machine\b|\bmachine learning\b", re.IGNORECASE)
LOG_PATTERNS = {
    "an issue": re.compile(r"\bissues?\b|(?<![\w&#/])#\d+\b", re.IGNORECASE),
    "a VM": re.compile(r"\bVMs?\b"),
    "a machine": re.compile(r"\bmachines?\b", re.IGNORECASE),
    "a rerun": re.compile(r"\bre-?run(?:s|ning)?\b|\bruns? [AB]\b", re.IGNORECASE),
    "a file outside the repository": re.compile(r"shared/reference"),
}


def words(markdown: str) -> float:
    """Whitespace-separated tokens plus half a word per CJK character."""
    return len(markdown.split()) + len(CJK.findall(markdown)) / 2


def markdown_cells(path: Path) -> list:
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"]


def log_mentions(markdown: str) -> list[str]:
    """What in ``markdown`` belongs to the research log, as 'kind: "matched text"' strings."""
    found = []
    for kind, pattern in LOG_PATTERNS.items():
        text = MACHINE_OK.sub("", markdown) if kind == "a machine" else markdown
        found += [f'{kind}: "{m.group(0)}"' for m in pattern.finditer(text)]
    return found


def test_the_checks_can_fail():
    assert log_mentions("numbers in the issue notes") == ['an issue: "issue"']
    assert log_mentions("see #3 and run A") == ['an issue: "#3"', 'a rerun: "run A"']
    assert log_mentions("on a slower VM") and log_mentions("on another machine")
    assert log_mentions("a rerun loads the checkpoint") and log_mentions("Re-run it")
    assert log_mentions("the estimate for this machine, in machine learning terms") == []
    assert log_mentions("the same ids on every machine") == []
    assert log_mentions("## 3. Pretraining, `&#39;` and [link](#what-we-have)") == []
    assert words("房间很干净 is clean") == 3 + 2.5
    assert LOG_LINK.search("see [it](../docs/experiments.md#lesson-02-elmo).").group(1) == "lesson-02-elmo"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_research_log_in_the_lesson(path):
    bad = [f"cell {i}: {m}" for i, c in enumerate(markdown_cells(path)) for m in log_mentions(c.source)]
    assert not bad, f"{path.name}: move these to docs/experiments.md: {bad}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_markdown_cells_fit_one_screen(path):
    long = {c.source.splitlines()[0][:60]: words(c.source) for c in markdown_cells(path)
            if words(c.source) > MAX_CELL_WORDS}
    assert not long, f"{path.name}: Markdown cells over {MAX_CELL_WORDS} words: {long}"


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if "02" <= p.stem[:2] <= "05"], ids=lambda p: p.stem)
def test_lesson_markdown_length(path):
    total = sum(words(c.source) for c in markdown_cells(path))
    assert total <= MAX_LESSON_WORDS, f"{path.name}: {total:.0f} words of Markdown (at most {MAX_LESSON_WORDS})"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_lesson_ends_with_what_we_have(path):
    last = nbformat.read(path, as_version=4).cells[-1]
    headings = [line for line in last.source.splitlines() if line.startswith("#")]
    assert last.cell_type == "markdown" and any("What we have" in h for h in headings), (
        f"{path.name}: the last cell must be Markdown headed 'What we have'")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_lesson_links_the_research_log(path):
    log = (ROOT / "docs" / "experiments.md").read_text(encoding="utf-8")
    links = [m.group(1) for c in markdown_cells(path) for m in LOG_LINK.finditer(c.source)]
    assert links, f"{path.name}: no link to ../docs/experiments.md"
    missing = [a for a in links if a and f'id="{a}"' not in log]
    assert not missing, f"{path.name}: anchors missing in docs/experiments.md: {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_file_is_what_jupyter_writes(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("kernelspec") == KERNELSPEC, f"{path.name}: kernelspec {nb.metadata.get('kernelspec')}"
    assert nb.metadata.get("language_info", {}).get("name") == "python", f"{path.name}: language_info"
    assert path.read_text(encoding="utf-8") == nbformat.writes(nb) + "\n", (
        f"{path.name} is not in nbformat's own layout: read and write it once with nbformat")
