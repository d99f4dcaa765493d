"""The committed lessons are exactly what Jupyter writes, so opening one does not mark it modified.

Two things decide whether JupyterLab shows a lesson as modified before any edit:

1. **The file.** Jupyter server reads a notebook with nbformat and writes it back with
   ``nbformat.write`` (sorted keys, one-space indent, sources split in lines, a final newline).
   A file in any other layout (no cell ``id``s, an older ``nbformat_minor``, other indentation) is
   rewritten on the first save. Checked here through nbformat and through Jupyter server's own
   ``FileContentsManager`` (get, then save, as JupyterLab does).
2. **The kernel's metadata.** When the kernel starts, JupyterLab 4 copies the kernel's
   ``language_info`` (from its ``kernel_info_reply``) and its kernelspec into the notebook's metadata
   (``NotebookPanel._updateLanguage`` / ``_updateSpec``) and marks the notebook modified whenever
   the value differs from the one in the file (``YNotebook.setMetadata`` compares them). A lesson
   committed with ``language_info: {"name": "python"}`` alone is therefore "modified" as soon as
   its kernel is ready, in every lesson; the ones a reader opens only to read show it. So the
   committed ``language_info`` is the one the course kernel (ipykernel) reports, ``version``
   included: the Python version of the environment that wrote it (a learner whose Python differs in
   ``version`` only still sees the mark; ``nblib.lab`` can write the learner's own version into the
   learner's copies).

Also here, read from the file itself: every cell has a valid, unique ``id``, no code cell has
outputs or an execution count, and exactly one cell is tagged ``parameters``.

Fixing a lesson that fails these checks (the layout and the metadata only, never its cells)::

    .venv/bin/python tests/test_notebook_format.py notebooks/03_bert.ipynb   # or no argument: all
    .venv/bin/python tests/test_notebook_format.py --check                   # list, change nothing
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.warnings import MissingIDFieldWarning

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNELSPEC = {"name": "nblib", "display_name": "Python (nblib)", "language": "python"}
CELL_ID = re.compile(r"^[a-zA-Z0-9-_]{1,64}$")  # nbformat 4.5's schema


def kernel_language_info() -> dict:
    """The ``language_info`` the course kernel (ipykernel on this interpreter) reports."""
    from ipykernel.ipkernel import IPythonKernel

    return json.loads(json.dumps(IPythonKernel.language_info))


def jupyter_text(nb: nbformat.NotebookNode) -> str:
    """The bytes Jupyter server writes for ``nb`` (``nbformat.write`` adds the final newline)."""
    return nbformat.writes(nb) + "\n"


def problems(path: Path) -> list[str]:
    """What in ``path`` differs from what Jupyter would write or from the course kernel's metadata."""
    text = path.read_text(encoding="utf-8")
    raw = json.loads(text)
    found = []
    if (raw.get("nbformat"), raw.get("nbformat_minor")) != (4, 5):
        found.append(f"nbformat {raw.get('nbformat')}.{raw.get('nbformat_minor')}, not 4.5")
    ids = [cell.get("id") for cell in raw.get("cells", [])]
    if None in ids:
        found.append(f"{ids.count(None)} cells without an id")
    if any(i is not None and not CELL_ID.match(i) for i in ids) or len(set(ids)) != len(ids):
        found.append("cell ids not valid or not unique")
    metadata = raw.get("metadata", {})
    if metadata.get("kernelspec") != KERNELSPEC:
        found.append(f"kernelspec {metadata.get('kernelspec')}, not {KERNELSPEC}")
    info, reported = metadata.get("language_info", {}), kernel_language_info()
    differs = sorted(k for k in reported.keys() | info.keys() if k != "version" and info.get(k) != reported.get(k))
    if differs or not info.get("version"):
        found.append(f"language_info differs from what the kernel reports in {differs or ['version']}")
    if text != jupyter_text(nbformat.reads(text, as_version=4)):
        found.append("not in nbformat's own layout")
    return found


def normalise(path: Path) -> bool:
    """Rewrite ``path`` in Jupyter's layout with the course kernel's metadata and cell ids; the
    cells' sources, metadata and outputs stay as they are. Returns True when the file changed."""
    text = path.read_text(encoding="utf-8")
    raw = json.loads(text)
    raw["nbformat"], raw["nbformat_minor"] = 4, 5
    seen: set[str] = set()
    for cell in raw["cells"]:  # ids first, so that nbformat validates a complete 4.5 notebook
        if not CELL_ID.match(cell.get("id") or "") or cell["id"] in seen:
            cell["id"] = nbformat.corpus.words.generate_corpus_id()
        seen.add(cell["id"])
    nb = nbformat.from_dict(raw)
    nbformat.validate(nb)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = kernel_language_info()
    new = jupyter_text(nb)
    if new == text:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(new, encoding="utf-8")
    tmp.replace(path)
    return True


# ---------------------------------------------------------------------------------------------
# The checks


def test_the_checks_can_fail(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    path = tmp_path / "lesson.ipynb"
    path.write_text(json.dumps(nb, indent=2), encoding="utf-8")  # another indent, no final newline
    found = problems(path)
    assert any("language_info" in p for p in found) and any("layout" in p for p in found)
    raw = json.loads(path.read_text(encoding="utf-8"))
    del raw["cells"][0]["id"]
    path.write_text(json.dumps(raw), encoding="utf-8")
    with pytest.warns(MissingIDFieldWarning):  # nbformat's own complaint, while it still reads it
        assert any("without an id" in p for p in problems(path))
    assert normalise(path) and problems(path) == [] and not normalise(path)
    assert nbformat.read(path, as_version=4).cells[0].source == "x = 1"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_lesson_is_what_jupyter_writes(path):
    assert problems(path) == [], (
        f"{path.name}: {problems(path)}; fix with: .venv/bin/python tests/test_notebook_format.py "
        f"notebooks/{path.name}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_jupyter_server_saves_the_same_bytes(path, tmp_path):
    """Open and save through Jupyter server's contents manager, as JupyterLab does."""
    from jupyter_server.services.contents.filemanager import FileContentsManager
    from nbformat.sign import NotebookNotary

    (tmp_path / path.name).write_bytes(path.read_bytes())
    manager = FileContentsManager(root_dir=str(tmp_path), use_atomic_writing=False)
    manager.notary = NotebookNotary(db_file=":memory:", secret=b"test-only")  # nothing in ~/.local
    model = manager.get(path.name, content=True, type="notebook")
    manager.save({"type": "notebook", "format": "json", "content": model["content"]}, path.name)
    assert (tmp_path / path.name).read_bytes() == path.read_bytes()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_cells_are_clean(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    for index, cell in enumerate(cells):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"cell {index}: strip outputs"
    tagged = [i for i, c in enumerate(cells) if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: cells tagged 'parameters': {tagged}"


if __name__ == "__main__":
    check = "--check" in sys.argv[1:]
    paths = [Path(a) for a in sys.argv[1:] if a != "--check"] or NOTEBOOKS
    failing = {p: problems(p) for p in paths if problems(p)}
    for p, found in failing.items():
        if check:
            print(f"{p}: {'; '.join(found)}")
        elif normalise(p):
            print(f"{p}: rewritten ({'; '.join(found)})")
    sys.exit(1 if check and failing else 0)
