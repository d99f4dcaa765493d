"""Every lesson notebook runs top to bottom with papermill in the smoke preset (one case each)."""

import ast
import json

import nbformat
import pytest

from nblib import report
from nblib.presets import get_preset

NOTEBOOKS = report.lesson_notebooks()


@pytest.fixture(scope="module")
def shared_runs(tmp_path_factory):
    """One runs folder for the whole module: later lessons read what earlier ones recorded."""
    return tmp_path_factory.mktemp("runs")


def test_there_are_lessons():
    assert [nb.name[:2] for nb in NOTEBOOKS][:2] == ["00", "01"]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_holds_literals_only(notebook):
    nb = nbformat.read(notebook, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    for node in ast.parse(tagged[0].source).body:
        assert isinstance(node, ast.Assign), f"only assignments in the parameters cell: {ast.dump(node)}"
        ast.literal_eval(node.value)  # raises on anything but a literal
    names = {t.id for node in ast.parse(tagged[0].source).body for t in node.targets}
    assert {"PRESET", "SEED"} <= names
    # papermill must see every one (its line parser skipped PRE_LN once, over a comment with "= …
    # (…)"), or `-p NAME value` would be refused by report.check_parameters.
    import papermill

    assert set(papermill.inspect_notebook(str(notebook))) == names


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs(notebook):
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, "strip outputs"


def test_unknown_parameter_is_refused():
    with pytest.raises(ValueError, match=r"does not declare parameter\(s\) \['PRSET'\]"):
        report.check_parameters(NOTEBOOKS[0], {"PRSET": "smoke"})


@pytest.mark.notebook
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_preset(notebook, shared_runs, tmp_path, monkeypatch, request):
    monkeypatch.setenv("NBLIB_RUNS_DIR", str(shared_runs))
    parameters = {"PRESET": "smoke", "FIGURES": str(tmp_path / "figures")}
    if notebook.name == "07_pretrained_checkpoints.ipynb":  # tiny local checkpoints, never the hub
        from tiny_checkpoints import notebook_parameters

        parameters.update(notebook_parameters(*request.getfixturevalue("tiny_checkpoints")))
    report.execute_notebook(notebook, tmp_path / notebook.name, parameters,
                            timeout_s=get_preset("smoke").notebook_timeout_s, progress=False)
    assert list((tmp_path / "figures").glob("*.png")), "every lesson saves its figures"


@pytest.mark.notebook
def test_comparison_table_from_the_smoke_records(shared_runs, tmp_path, monkeypatch):
    monkeypatch.setenv("NBLIB_RUNS_DIR", str(shared_runs))
    path = report.write_comparison("smoke", out=tmp_path / "comparison.md")
    text = path.read_text(encoding="utf-8")
    for model in ("majority", "tfidf", "static"):
        assert f"| {model} |" in text

