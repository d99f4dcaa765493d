"""A tiny lesson with three exercises, used by the grading tests (tests/test_grading*.py) and by
benchmarks/bench_grading.py.

It imports only the standard library and torch, so that a submission runs in seconds. Its hidden
checks live in ``hidden/90_grading_demo.py`` beside this file (the tests point the grader there).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

LESSON = "90_grading_demo"
HIDDEN_DIR = Path(__file__).resolve().parent / "hidden"

TRUNCATE = '''def truncate_head_tail(ids, max_len):
    """Keep the first max_len // 2 ids and the last max_len - max_len // 2 when too long."""
    ### BEGIN SOLUTION
    ids = list(ids)
    if len(ids) <= max_len:
        return ids
    head = max_len // 2
    return ids[:head] + ids[len(ids) - (max_len - head):]
    ### END SOLUTION'''

MASK = '''def causal_mask(T):
    """A (T, T) bool tensor: True where query i may look at key j, that is j <= i."""
    ### BEGIN SOLUTION
    return torch.ones(T, T, dtype=torch.bool).tril()
    ### END SOLUTION'''

FIT = '''def fit_line(xs, ys, steps=STEPS):
    """Fit nn.Linear(1, 1) to the points (xs, ys) by gradient descent; return the model."""
    model = nn.Linear(1, 1)
    ### BEGIN SOLUTION
    x_col = torch.tensor(xs, dtype=torch.float32).unsqueeze(1)
    y_col = torch.tensor(ys, dtype=torch.float32).unsqueeze(1)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        optimiser.zero_grad()
        nn.functional.mse_loss(model(x_col), y_col).backward()
        optimiser.step()
    ### END SOLUTION
    return model'''

EXERCISES = {"T1-truncate": (TRUNCATE, 2), "T2-mask": (MASK, 2), "T3-fit": (FIT, 3)}


def exercise_cell(ex_id: str, source: str | None = None) -> nbformat.NotebookNode:
    default, points = EXERCISES[ex_id]
    return new_code_cell(source or default, metadata={
        "tags": ["exercise"], "exercise": {"id": ex_id, "points": points}})


def solution_notebook() -> nbformat.NotebookNode:
    """The lesson as its author writes it: solutions inside the markers."""
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        new_markdown_cell("# 90 · Grading demo\nThree small exercises for the grader's tests."),
        new_code_cell('PRESET = "small"\nSEED = 0', metadata={"tags": ["parameters"]}),
        new_code_cell("import torch\nfrom torch import nn\n\ntorch.manual_seed(SEED)\n"
                      "# The smoke preset trains briefly; the others would never finish here.\n"
                      'STEPS = {"smoke": 200}.get(PRESET, 10**9)'),
        new_markdown_cell("**Exercise T1** (2 points): keep the head and the tail of a long review."),
        exercise_cell("T1-truncate"),
        new_code_cell("truncate_head_tail(list(range(10)), 4)"),
        new_markdown_cell("**Exercise T2** (2 points): the causal mask.\n\n"
                          "### BEGIN SOLUTION\nTrue on and below the diagonal.\n### END SOLUTION"),
        exercise_cell("T2-mask"),
        new_markdown_cell("**Exercise T3** (3 points): fit a line; the grader checks your weights."),
        exercise_cell("T3-fit"),
        new_code_cell("print('the answer key', 'is not here')", metadata={"tags": ["hidden"]}),
        new_code_cell("fit_line([0.0, 1.0], [1.0, 3.0]).weight"),
        new_markdown_cell("As in every lesson: check your piece against the library's, then use "
                          "the library's."),
        new_code_cell("from nblib.data.text import truncate\n\n"
                      "assert truncate_head_tail(list(range(9)), 5) == truncate(list(range(9)), 5, "
                      '"head+tail", 0.5)\n'
                      'print(truncate(list(range(20)), 6, "head+tail", 0.5))'),
    ]
    nbformat.validate(nb)
    return nb


def write_lesson(folder: Path) -> Path:
    """Write the solution notebook as ``folder/90_grading_demo.ipynb``; return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{LESSON}.ipynb"
    nbformat.write(solution_notebook(), path)
    return path
