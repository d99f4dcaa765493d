"""The library's layout: rooms by job, imports one way, no circles (nblib/README.md).

Every ``nblib`` import is read from the source with ``ast``, the ones inside functions too (a lazy
import is still a dependency), and checked against the order of the rooms declared in
``nblib/README.md``: a module may import its own room and the rooms before it, never one after it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

NBLIB = Path(__file__).resolve().parents[1] / "nblib"


def declared_rooms(readme: Path = NBLIB / "README.md") -> list[str]:
    """The rooms in import order, as the README's table lists them (first column, in backticks)."""
    rooms = re.findall(r"^\| `([a-z_./]+)` \|", readme.read_text(encoding="utf-8"), flags=re.M)
    return [room.rstrip("/").removesuffix(".py") for room in rooms]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def nblib_imports(path: Path, root: Path) -> set[str]:
    """The nblib modules that the file at ``path`` imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == root.name:
            for alias in node.names:  # `from nblib.models import bert` names a module, `import X` a member
                full = f"{node.module}.{alias.name}"
                where = root.parent / full.replace(".", "/")
                is_module = where.with_suffix(".py").exists() or (where / "__init__.py").exists()
                found.add(full if is_module else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == root.name}
    found.discard(root.name)
    return found


def import_graph(root: Path = NBLIB) -> dict[str, set[str]]:
    modules = {module_name(p, root): p for p in root.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for target in nblib_imports(path, root):
            # `from nblib.models import bert` names nblib.models.bert; the package itself is no edge
            if target in modules and target != name and not name.startswith(target + "."):
                targets.add(target)
        graph[name] = targets
    return graph


def room_of(module: str, rooms: list[str]) -> str:
    inside = module.split(".")[1]
    if inside not in rooms:
        raise AssertionError(f"{module} is in no room that nblib/README.md declares ({rooms})")
    return inside


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def upward_imports(graph: dict[str, set[str]], rooms: list[str]) -> list[str]:
    rank = {room: i for i, room in enumerate(rooms)}
    return [f"{a} ({room_of(a, rooms)}) imports {b} ({room_of(b, rooms)})"
            for a, targets in sorted(graph.items()) for b in sorted(targets)
            if rank[room_of(b, rooms)] > rank[room_of(a, rooms)]]


def test_the_readme_declares_every_room_and_file_of_the_library() -> None:
    rooms = declared_rooms()
    on_disk = {p.stem if p.is_file() else p.name for p in NBLIB.iterdir()
               if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.stem != "__init__")}
    assert sorted(rooms) == sorted(on_disk)


def test_no_import_circles_and_none_against_the_direction() -> None:
    graph = import_graph()
    assert cycles(graph) == []
    assert upward_imports(graph, declared_rooms()) == []


def test_the_check_finds_a_planted_circle_and_an_upward_import(tmp_path) -> None:
    root = tmp_path / "nblib"
    for folder in ("models", "training"):
        (root / folder).mkdir(parents=True)
        (root / folder / "__init__.py").write_text('"""A room."""\n')
    (root / "__init__.py").write_text("")
    (root / "models" / "bert.py").write_text("def f():\n    from nblib.training import fit  # lazy, still an edge\n")
    (root / "training" / "fit.py").write_text("from nblib.models import bert\n")
    graph = import_graph(root)
    assert cycles(graph) == [["nblib.models.bert", "nblib.training.fit"]]
    assert upward_imports(graph, ["models", "training"]) == [
        "nblib.models.bert (models) imports nblib.training.fit (training)"]


@pytest.mark.parametrize("room", sorted(p.name for p in NBLIB.iterdir() if (p / "__init__.py").exists()))
def test_each_room_is_small_enough_to_find_ones_way_in(room: str) -> None:
    assert len(list((NBLIB / room).glob("*.py"))) <= 12


REPO = NBLIB.parent
CITED_PATH = re.compile(r"\b((?:nblib|tests|docs|notebooks|benchmarks|experiments|grader)/[\w/.-]*\w\.(?:py|md|ipynb))\b")


def cited_paths(text: str) -> list[str]:
    return [m.group(1) for m in CITED_PATH.finditer(text)]


def test_every_file_the_library_and_its_docs_cite_exists() -> None:
    documents = [*sorted(NBLIB.rglob("*.py")), *sorted(NBLIB.rglob("*.md")), REPO / "README.md",
                 *sorted((REPO / "docs").glob("*.md"))]
    missing = [f"{doc.relative_to(REPO)}: {path}" for doc in documents
               for path in cited_paths(doc.read_text(encoding="utf-8")) if not (REPO / path).exists()]
    assert missing == []


def test_the_cited_path_check_sees_a_moved_file() -> None:
    assert cited_paths("see nblib/bert.py and tests/test_layout.py.") == ["nblib/bert.py", "tests/test_layout.py"]
    assert not (REPO / "nblib/bert.py").exists()  # moved to nblib/models/bert.py: a comment citing it would fail


def test_every_room_finds_the_checkout_it_lives_in() -> None:
    """Files the library reads or writes beside it (data/raw, runs/, figures/, notebooks/) hang off the
    checkout's root; a module moved one folder deeper must not look for them one folder too low."""
    from nblib import lab
    from nblib.data import corpora
    from nblib.results import comparison, plotting, records, report

    assert (REPO / "pyproject.toml").exists()
    assert records.REPO_ROOT == corpora.REPO_ROOT == lab.REPO_ROOT == REPO
    assert comparison.FIGURES_DIR == plotting.FIGURES_DIR == REPO / "figures"
    assert report.NOTEBOOKS_DIR == REPO / "notebooks"


def test_a_long_module_says_why_in_its_opening_comment() -> None:
    """No module of the library over ~400 lines without a reason at its top ("Long because ...")."""
    import ast as ast_

    unexplained = []
    for path in sorted(NBLIB.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        docstring = ast_.get_docstring(ast_.parse(text)) or ""
        if len(text.splitlines()) > 410 and "Long because" not in docstring:
            unexplained.append(f"{path.relative_to(REPO)} ({len(text.splitlines())} lines)")
    assert unexplained == []
