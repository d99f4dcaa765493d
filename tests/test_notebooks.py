"""Every lesson notebook runs top to bottom with papermill in the smoke preset (one case each).

The tests do not depend on their order: each lesson runs in a runs folder of its own, and a lesson
that reads what others wrote (05 the records of 01-04, 06 the checkpoints of 02-04) first gets a
copy of their runs folders; a lesson runs at most once per session, whichever test asks first.
"""

import ast
import json
import re
import shutil
from pathlib import Path

import nbformat
import papermill
import pytest

from nblib.presets import get_preset
from nblib.results import comparison, report

NOTEBOOKS = report.lesson_notebooks()
BY_STEM = {nb.stem: nb for nb in NOTEBOOKS}
# What a lesson reads from earlier lessons' runs (records, checkpoints); the rest need nothing.
NEEDS = {
    "03b_electra": ["03_bert"],  # compares with lesson 03's records when they exist
    "05_compare": [s for s in BY_STEM if "01" <= s[:2] < "05"],  # every record of lessons 01-04
    "06_inside_the_models": ["02_elmo", "03_bert", "04_gpt"],  # their pretrained checkpoints
    "08_bert_four_uses": ["03_bert"],  # its pretrained BERT (without it, lesson 08 pretrains its own)
}


@pytest.fixture(scope="session")
def lesson_run(tmp_path_factory, request):
    """``lesson_run(stem) -> (runs folder, output folder)``: runs lesson ``stem`` once per session in
    a runs folder of its own, after copying in the runs folders of the lessons it needs."""
    done: dict[str, tuple[Path, Path] | BaseException] = {}

    def run(stem: str) -> tuple[Path, Path]:
        if stem not in done:
            try:
                done[stem] = _execute(stem)
            except BaseException as err:  # a failed prerequisite fails its dependents the same way
                done[stem] = err
        if isinstance(done[stem], BaseException):
            raise done[stem]
        return done[stem]

    def _execute(stem: str) -> tuple[Path, Path]:
        runs, out = tmp_path_factory.mktemp(f"runs-{stem}"), tmp_path_factory.mktemp(f"out-{stem}")
        for needed in NEEDS.get(stem, []):
            shutil.copytree(run(needed)[0], runs, dirs_exist_ok=True)
        parameters = {"PRESET": "smoke", "FIGURES": str(out / "figures")}
        if report.ABLATIONS_PARAMETER in papermill.inspect_notebook(str(BY_STEM[stem])):
            parameters[report.ABLATIONS_PARAMETER] = True  # their code too (a learner's default leaves them out)
        if stem == "07_pretrained_checkpoints":  # tiny local checkpoints, never the hub
            from tiny_checkpoints import make_tiny_electra, notebook_parameters

            bert_dir, gpt2_dir = request.getfixturevalue("tiny_checkpoints")
            electra_dir = make_tiny_electra(bert_dir, out / "electra-tiny-chinese")
            parameters.update(notebook_parameters(bert_dir, gpt2_dir, electra_dir))
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("NBLIB_RUNS_DIR", str(runs))
            report.execute_notebook(BY_STEM[stem], out / f"{stem}.ipynb", parameters,
                                    timeout_s=get_preset("smoke").notebook_timeout_s, progress=False)
        return runs, out

    return run


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


# What an executed lesson may print on stderr (shown red in Jupyter): nothing but real errors. Each
# entry is a known, harmless line we could not silence at its source; keep the list short.
STDERR_ALLOWED: tuple[str, ...] = ()
PROGRESS_DEBRIS = re.compile(r"\r|\d+it/s\]|\|[█▏▎▍▌▋▊▉ ]+\|")


def stderr_problems(executed: Path) -> list[str]:
    """Lines of an executed notebook's stderr outside the allow-list, and progress-bar debris."""
    problems = []
    for index, cell in enumerate(nbformat.read(executed, as_version=4).cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") != "stream":
                continue
            text = output.get("text", "")
            if PROGRESS_DEBRIS.search(text):
                problems.append(f"cell {index}: progress-bar debris {text[:80]!r}")
            if output.get("name") == "stderr":
                problems += [f"cell {index}: {line}" for line in text.splitlines()
                             if line.strip() and not any(re.search(p, line) for p in STDERR_ALLOWED)]
    return problems


# A cell prints at most about a screen: a dict or a vocabulary dumped whole is not a page of a book
# (lesson 04 once printed its pretraining info with the 1,813-character vocabulary in it: 11,000 characters).
MAX_PRINTED_CHARS = 4000


def long_outputs(executed: Path) -> list[str]:
    """Cells of an executed notebook whose printed text (stdout and stderr) is longer than a screen."""
    long = []
    for index, cell in enumerate(nbformat.read(executed, as_version=4).cells):
        printed = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")
        if len(printed) > MAX_PRINTED_CHARS:
            long.append(f"cell {index}: prints {len(printed):,} characters: {printed[:80]!r}")
    return long


def test_long_output_check_can_fail(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(vocabulary)")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="'的', " * 1000)]
    nb.cells += [nbformat.v4.new_code_cell("print(1)"), cell]
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    nbformat.write(nb, tmp_path / "x.ipynb")
    assert [p[:7] for p in long_outputs(tmp_path / "x.ipynb")] == ["cell 1:"]


def test_stderr_check_can_fail(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="GPU available: False\n"),
                    nbformat.v4.new_output("stream", name="stdout", text="Epoch 0: 10%|█  | 1/8 [00:00<00:00, 9it/s]\r")]
    nb.cells.append(cell)
    nbformat.write(nb, tmp_path / "x.ipynb")
    problems = stderr_problems(tmp_path / "x.ipynb")
    assert any("GPU available" in p for p in problems) and any("debris" in p for p in problems)


@pytest.mark.notebook
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_preset(notebook, lesson_run):
    _, out = lesson_run(notebook.stem)
    assert list((out / "figures").glob("*.png")), "every lesson saves its figures"
    # it reads like a page of a book: no red notices, no progress-bar debris
    assert stderr_problems(out / f"{notebook.stem}.ipynb") == []
    assert long_outputs(out / f"{notebook.stem}.ipynb") == []


@pytest.mark.notebook
def test_comparison_table_from_the_smoke_records(lesson_run, tmp_path, monkeypatch):
    runs, _ = lesson_run("01_baselines")
    monkeypatch.setenv("NBLIB_RUNS_DIR", str(runs))
    path = comparison.write_comparison("smoke", out=tmp_path / "comparison.md")
    text = path.read_text(encoding="utf-8")
    for model in ("majority", "tfidf", "static"):
        assert f"| {model} |" in text

