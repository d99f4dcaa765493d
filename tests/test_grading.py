"""The grader: student versions, sandboxed runs, strict scoring, and cheats that gain nothing.

The fast tests use no sandbox. The slow ones grade real notebooks made from the test lesson in
tests/grading_fixtures (three exercises; standard library + torch only): one batch of honest and
hostile submissions graded together, then honest ones alone, and the fallbacks without bubblewrap.
"""

from __future__ import annotations

import base64
import csv
import importlib.util
import io
import json
import os
import shutil
import time
from pathlib import Path

import nbformat
import pytest
import torch
from nbformat.v4 import new_code_cell

import nblib
from nblib.grading import Case, Exercise, same, sandbox
from nblib.grading.__main__ import main as cli
from nblib.grading.checks import LessonChecks, Limits, load_checks
from nblib.grading.runner import inject_parameters
from nblib.grading.score import (
    UntrustedDataError,
    decode_value,
    decode_weights,
    find_submissions,
    grade,
    parse_frames,
    score_submission,
    strict_json,
)
from nblib.grading.strip import BEGIN, END, StripError, student_notebook

FIXTURES = Path(__file__).resolve().parent / "grading_fixtures"
_spec = importlib.util.spec_from_file_location("grading_demo_lesson", FIXTURES / "demo_lesson.py")
demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo)
CANARY = "hidden-checks-canary-5d1e"
LESSON = demo.LESSON
NB_NAME = f"{LESSON}.ipynb"


# ---------------------------------------------------------------- helpers
def solution() -> nbformat.NotebookNode:
    return demo.solution_notebook()


def stripped() -> nbformat.NotebookNode:
    return student_notebook(demo.solution_notebook())


def with_cell(nb: nbformat.NotebookNode, source: str, at: int | None = None) -> nbformat.NotebookNode:
    cell = new_code_cell(source)
    nb.cells.insert(len(nb.cells) if at is None else at, cell)
    return nb


def with_exercise(nb: nbformat.NotebookNode, ex_id: str, source: str) -> nbformat.NotebookNode:
    for cell in nb.cells:
        if cell.metadata.get("exercise", {}).get("id") == ex_id:
            cell.source = source
            return nb
    raise KeyError(ex_id)


def write_submissions(root: Path, notebooks: dict[str, nbformat.NotebookNode]) -> Path:
    for student, nb in notebooks.items():
        (root / student).mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, root / student / NB_NAME)
    return root


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as fh:
        return {row["student"]: row for row in csv.DictReader(fh)}


def summary(g) -> tuple:
    return g.status, g.total, tuple(e.points for e in g.exercises)


def hidden_copy(tmp: Path) -> Path:
    """The test lesson's hidden checks, copied so that no attack could touch the repository."""
    target = tmp / "hidden"
    shutil.copytree(demo.HIDDEN_DIR, target)
    return target


NAMESPACED = sandbox.choose_isolation() in ("bwrap", "unshare")
needs_namespaces = pytest.mark.skipif(
    not NAMESPACED, reason="no bubblewrap and not root: only the unisolated fallback is available")


# ---------------------------------------------------------------- student versions
def test_student_version_has_no_solution_no_outputs_and_is_valid():
    nb = solution()
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", text="an old output\n")]
    nb.cells[2].execution_count = 7
    solution_lines = []
    for cell in nb.cells:
        inside = False
        for line in cell.source.splitlines():
            if line.strip() in (BEGIN, END):
                inside = line.strip() == BEGIN
            elif inside and line.strip():
                solution_lines.append(line.strip())
    assert len(solution_lines) >= 10
    student = student_notebook(nb)
    text = nbformat.writes(student)
    nbformat.validate(nbformat.reads(text, as_version=4))
    for line in solution_lines:
        assert line not in text, line
    assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
    assert "the answer key" not in text  # the cell tagged hidden is gone
    for cell in student.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    exercises = [c for c in student.cells if "exercise" in c.metadata.get("tags", [])]
    assert [c.metadata.exercise["id"] for c in exercises] == ["T1-truncate", "T2-mask", "T3-fit"]
    # the replacement keeps the marker's indentation, the rest of the cell stays
    fit = exercises[2].source.splitlines()
    assert '    raise NotImplementedError("exercise T3-fit")' in fit
    assert fit[-1] == "    return model" and fit[0].startswith("def fit_line(")
    assert "*Write your answer here.*" in text  # the markdown solution
    assert solution().cells[4].source == nb.cells[4].source  # the input is untouched


@pytest.mark.parametrize("source, message", [
    ("def f():\n    ### BEGIN SOLUTION\n    return 1\n", "without a matching"),
    ("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\n    ### END SOLUTION\n",
     "without a '### BEGIN"),
    ("def f():\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION\n", "unrecognised"),
    ("def f():\n    ### BEGIN SOLUTION\n    ### BEGIN SOLUTION\n", "inside another"),
    ("def f():\n    return 1\n", "has no '### BEGIN SOLUTION'"),
])
def test_stripper_refuses_what_could_leak(source, message):
    nb = with_exercise(solution(), "T1-truncate", source)
    with pytest.raises(StripError, match=message):
        student_notebook(nb)


def test_stripper_refuses_markers_outside_exercises_and_duplicate_ids():
    nb = with_cell(solution(), f"x = 1\n{BEGIN}\ny = 2\n{END}\n")
    with pytest.raises(StripError, match="not tagged 'exercise'"):
        student_notebook(nb)
    nb = solution()
    nb.cells[7].metadata["exercise"]["id"] = "T1-truncate"
    with pytest.raises(StripError, match="used twice"):
        student_notebook(nb)


def test_student_command_writes_lessons_with_exercises_and_checks_points(tmp_path, capsys):
    lessons = tmp_path / "notebooks"
    path = demo.write_lesson(lessons)
    plain = nbformat.v4.new_notebook(cells=[new_code_cell("x = 1")])
    nbformat.write(plain, lessons / "91_no_exercises.ipynb")
    out = tmp_path / "student"
    argv = ["student", str(path), str(lessons / "91_no_exercises.ipynb"), "--out", str(out),
            "--checks", str(demo.HIDDEN_DIR)]
    assert cli(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == [NB_NAME]
    assert "raise NotImplementedError" in (out / NB_NAME).read_text()
    # points in the notebook must agree with the hidden checks
    nb = nbformat.read(path, as_version=4)
    nb.cells[4].metadata["exercise"]["points"] = 5
    nbformat.write(nb, path)
    assert cli(argv) == 1
    assert "T1-truncate: 5 points in the notebook, 2 in 90_grading_demo.py" in capsys.readouterr().err


def test_parameters_are_injected_after_the_parameters_cell():
    nb = solution()
    at = inject_parameters(nb, {"PRESET": "smoke", "SEED": 3})
    assert at == 2 and nb.cells[at].metadata["tags"] == ["injected-parameters"]
    assert 'PRESET = \'smoke\'\nSEED = 3' in nb.cells[at].source


# ---------------------------------------------------------------- stage 2 on hand-made data
def test_strict_json_refuses_duplicates_depth_and_size():
    assert strict_json('{"a": [1, 2.5, NaN, "x]"]}', 100)["a"][:2] == [1, 2.5]
    for bad in ('{"a": 1, "a": 2}', "[" * 500 + "]" * 500, "{'a': 1}", b"\xff"):
        with pytest.raises(UntrustedDataError):
            strict_json(bad, 10_000)
    with pytest.raises(UntrustedDataError, match="too large"):
        strict_json("[" + "1," * 100 + "1]", 50)


def test_decode_value_rebuilds_only_builtin_values_and_tensors():
    value = decode_value({"__dict__": [["ids", [1, 2]], [3, {"__tensor__": {
        "dtype": "bool", "shape": [2, 2], "values": [[True, False], [True, True]]}}]]})
    assert type(value) is dict and value["ids"] == [1, 2]
    assert value[3].dtype == torch.bool and value[3].tolist() == [[True, False], [True, True]]
    empty = decode_value({"__tensor__": {"dtype": "float32", "shape": [0, 4], "values": []}})
    assert tuple(empty.shape) == (0, 4)
    for bad in (
        {"__tensor__": {"dtype": "bool", "shape": [3], "values": [[True], [False], [True]]}},
        {"__tensor__": {"dtype": "float32", "shape": [2, 2], "values": [1.0, 2.0, 3.0, 4.0]}},
        {"__tensor__": {"dtype": "object", "shape": [1], "values": [1]}},
        {"__tensor__": {"dtype": "int64", "shape": [2], "values": ["1", "2"]}},
        {"__dict__": [[[1], 2]]},
        {"__weights__": "AAAA"},
        {"x": 1},
        {"__dict__": [], "extra": 1},
    ):
        with pytest.raises(UntrustedDataError):
            decode_value(bad)


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_weights_are_reloaded_weights_only(tmp_path):
    buffer = io.BytesIO()
    torch.save({"weight": torch.ones(1, 1), "bias": torch.zeros(1)}, buffer)
    good = {"__weights__": base64.b64encode(buffer.getvalue()).decode()}
    state = decode_weights(good, 2**20)
    assert set(state) == {"weight", "bias"} and type(state["weight"]) is torch.Tensor
    marker = tmp_path / "pickle-ran"
    buffer = io.BytesIO()
    torch.save({"weight": _RunsCode(str(marker))}, buffer)
    evil = {"__weights__": base64.b64encode(buffer.getvalue()).decode()}
    with pytest.raises(UntrustedDataError, match="weights-only"):
        decode_weights(evil, 2**20)
    assert not marker.exists()
    with pytest.raises(UntrustedDataError):
        decode_weights({"__weights__": "not base64!"}, 2**20)


def test_same_is_strict_about_types():
    assert same([1, 2], (1, 2)) and same(0.1 + 0.2, 0.3) and same(2, 2.0)
    assert not same(True, 1) and not same(1, True) and not same(2.0, 2) and not same("1", 1)
    mask = torch.ones(2, 2, dtype=torch.bool)
    assert same(mask.clone(), mask) and not same(mask.long(), mask)
    assert not same(mask.tolist(), mask) and not same(torch.ones(2, 3, dtype=torch.bool), mask)


def _fake_run(frames: list[dict], nonce: str = "ab" * 16, timed_out: bool = False):
    data = b""
    for frame in frames:
        body = json.dumps(frame).encode()
        data += b"NBLIB-FRAME " + nonce.encode() + b" " + str(len(body)).encode() + b"\n" + body + b"\n"
    return sandbox.SandboxResult(data, nonce, "bwrap", timed_out, 0, 1.0)


def _tiny_lesson() -> LessonChecks:
    exercises = {"E1": Exercise(points=2, cases=[Case("f", args=([7, 8, 9],), expect=[9]),
                                                 Case("f", args=([5],), expect=[5])])}
    return LessonChecks("99_tiny", Path("99_tiny.py"), exercises, {}, Limits(call_s=3))


def test_frames_need_the_nonce_and_feedback_shows_only_fixed_words():
    secret_type = "Leak_7_8_9"  # a student-made exception name carrying the hidden input
    frames = [
        {"type": "cells", "cells": [{"number": 1, "status": "ok"}], "deaths": [], "restarts": 0},
        {"type": "call", "index": 0, "status": "returned",
         "result": json.dumps({"ok": False, "error": "raised", "exception": secret_type})},
        {"type": "call", "index": 1, "status": "returned",
         "result": json.dumps({"ok": True, "value": [5]})},
        {"type": "done"},
    ]
    g = score_submission("s", _tiny_lesson(), _fake_run(frames))
    assert g.total == 1.0 and g.status == "ok"
    assert "raised an exception" in g.exercises[0].cases[0].message
    assert secret_type not in json.dumps([c.message for c in g.exercises[0].cases])
    # frames under another nonce (e.g. printed by the student) are not read at all
    run = _fake_run(frames)
    forged = _fake_run(frames, nonce="cd" * 16)
    forged = sandbox.SandboxResult(forged.stdout, run.nonce, "bwrap", False, 0, 1.0)
    assert parse_frames(forged.stdout, run.nonce, 2**20) == ([], "unexpected bytes on the result pipe")
    assert score_submission("s", _tiny_lesson(), forged).total == 0


def test_submissions_are_found_per_student_folder(tmp_path):
    for rel in ("ann/90_grading_demo.ipynb", "ann/90_grading_demo-Copy1.ipynb",
                "ann/.ipynb_checkpoints/90_grading_demo-checkpoint.ipynb", "b o=b/90_grading_demo.ipynb",
                "cy/notes.ipynb", "loose.ipynb"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}")
    subs, skipped = find_submissions(tmp_path, [LESSON])
    assert [(s.student, s.path.name) for s in subs] == [
        ("ann", NB_NAME), ("b_o_b", NB_NAME)]
    assert len(skipped) == 3  # the copy, cy's unrelated notebook, the loose file


# ---------------------------------------------------------------- hostile submissions
def _truncate_leaking():
    # raises with the hidden input in the message and in a made-up exception type name
    return '''def truncate_head_tail(ids, max_len):
    raise type("Leak_" + "_".join(map(str, ids)), (Exception,), {})(repr(ids))'''


def _mask_forever():
    return '''def causal_mask(T):
    while True:
        pass'''


def battery_notebooks(tmp: Path, out: Path, subs: Path, hidden: Path) -> dict[str, nbformat.NotebookNode]:
    marker = tmp / "pwned-by-detached-process"
    targets = [str(out / "grades.csv"), str(out / "feedback" / "alice.md"),
               str(subs / "alice" / NB_NAME), str(hidden / f"{LESSON}.py"), str(marker)]
    detached = f'''import subprocess, sys
attack = """
import pathlib, time
def attack():
    for target in {targets!r}:
        try:
            path = pathlib.Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("pwned")
        except Exception:
            pass
attack()
time.sleep(5)
attack()
"""
subprocess.Popen([sys.executable, "-c", attack], start_new_session=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)'''
    repo = Path(nblib.__file__).resolve().parents[1]
    readable = [str(hidden / f"{LESSON}.py"), str(demo.HIDDEN_DIR / f"{LESSON}.py"),
                str(out / "grades.csv"), str(subs / "alice" / NB_NAME), "/etc/shadow",
                "/proc/1/environ", str(repo / "grading" / "hidden"), str(hidden), str(subs)]
    reader = f'''import os, pathlib
hits = []
for target in {readable!r}:
    try:
        if os.path.isdir(target):
            os.listdir(target)
        else:
            pathlib.Path(target).read_bytes()
        hits.append(target)
    except Exception:
        pass
raise RuntimeError(f"readable: {{hits}}")'''
    always_equal = '''import torch

class AlwaysEqual:
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False

class SneakyFloat(float):
    def __eq__(self, other):
        return True

class SneakyList(list):
    def __eq__(self, other):
        return True

class EvilTensor(torch.Tensor):
    def __eq__(self, other):
        return True

class FakeModel:
    def state_dict(self):
        return {"weight": AlwaysEqual(), "bias": SneakyFloat(0.0)}

def truncate_head_tail(ids, max_len):
    return SneakyList([AlwaysEqual()])

def causal_mask(T):
    return torch.zeros(T, T, dtype=torch.bool).as_subclass(EvilTensor)

def fit_line(xs, ys, steps=0):
    return FakeModel()'''
    monkeypatch = '''import json, os, sys, torch
fake = '{"ok": true, "value": "ALL PASSED"}'
json.dumps = lambda *args, **kwargs: fake
json.dump = lambda obj, fh, *args, **kwargs: fh.write(fake)
torch.equal = lambda *args, **kwargs: True
torch.allclose = lambda *args, **kwargs: True
sys.stdout.write("NBLIB-FRAME 00 44\\n" + '{"type": "call", "index": 0, "status": "ok"}' + "\\n")
os.write(1, b'NBLIB-FRAME 00 2\\n{}\\n')'''
    fork_bomb = '''import os, time
children = 0
for _ in range(100000):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    children += 1
print(children)'''
    stubborn = '''import time
while True:
    try:
        time.sleep(0.1)
    except KeyboardInterrupt:
        pass'''
    stash_cell = '''import os
if os.path.exists("stash.txt"):
    raise RuntimeError("stash " + open("stash.txt").read())'''
    stash_and_die = '''def truncate_head_tail(ids, max_len):
    import os
    with open("stash.txt", "w") as fh:
        fh.write("_".join(map(str, ids)))
    os._exit(7)'''
    nina = with_cell(with_exercise(solution(), "T1-truncate", stash_and_die), stash_cell, at=3)
    nina.cells = [c for c in nina.cells if not c.source.startswith("truncate_head_tail(")]
    return {
        "alice": solution(),
        "bob": stripped(),
        "carol": with_exercise(with_exercise(solution(), "T1-truncate", _truncate_leaking()),
                               "T2-mask", _mask_forever()),
        "dave": with_cell(solution(), "while True:\n    pass"),
        "frank": with_cell(solution(), stubborn),
        "gina": with_cell(with_cell(solution(), "import sys\nsys.exit(3)"),
                          "import os\nos._exit(0)"),
        "hank": with_cell(solution(), "hog = []\nwhile True:\n    hog.append(bytearray(64 * 2**20))"),
        "ivan": with_cell(solution(), fork_bomb),
        "judy": with_cell(solution(), detached),
        "ken": with_cell(stripped(), reader, at=3),
        "liam": with_cell(stripped(), always_equal),
        "mia": with_cell(stripped(), monkeypatch),
        "nina": nina,
    }


@pytest.fixture(scope="module")
def battery(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("battery")
    subs, out = tmp / "submissions", tmp / "grades"
    hidden = hidden_copy(tmp)
    notebooks = battery_notebooks(tmp, out, subs, hidden)
    if not NAMESPACED:  # without a sandbox these two would really do harm; the warning says so
        del notebooks["judy"], notebooks["ivan"]
    write_submissions(subs, notebooks)
    started = time.monotonic()
    grades = grade(subs, out, hidden, jobs=2, progress=None)
    ended = time.monotonic()
    snapshot = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    return {"grades": {g.student: g for g in grades}, "out": out, "subs": subs, "tmp": tmp,
            "hidden": hidden, "snapshot": snapshot, "seconds": ended - started,
            "feedback": {s: (out / "feedback" / f"{s}.md").read_text() for s in notebooks}}


@pytest.mark.slow
def test_solution_full_marks_student_version_zero(battery):
    g = battery["grades"]
    assert summary(g["alice"]) == ("ok", 7.0, (2.0, 2.0, 3.0))
    assert summary(g["bob"]) == ("errors", 0.0, (0.0, 0.0, 0.0))
    assert "raised NotImplementedError" in battery["feedback"]["bob"]
    rows = read_csv(battery["out"] / "grades.csv")
    assert set(rows) == set(g) and rows["alice"]["total"] == "7" and rows["bob"]["T3-fit"] == "0"
    assert rows["alice"]["status"] == "ok" and rows["alice"]["max_points"] == "7"


@pytest.mark.slow
def test_partial_credit_and_feedback_never_shows_hidden_inputs(battery):
    g, feedback = battery["grades"]["carol"], battery["feedback"]["carol"]
    assert summary(g) == ("errors", 3.0, (0.0, 0.0, 3.0))
    assert "`truncate_head_tail` raised an exception" in feedback
    assert "`causal_mask` ran past the 3 s limit per call" in feedback
    ids = list(range(100, 137))
    for leaked in ("100_101_102", repr(ids[:5])[:-1], CANARY):
        for name, text in battery["feedback"].items():
            assert leaked not in text, (name, leaked)


@pytest.mark.slow
def test_runaway_cells_are_interrupted_and_lose_nothing_else(battery):
    g = battery["grades"]
    assert summary(g["dave"]) == ("cell-timeout", 7.0, (2.0, 2.0, 3.0))
    assert "ran past the 10 s limit per cell" in battery["feedback"]["dave"]
    # a loop that swallows the interrupt: the kernel is killed, the notebook rerun without it
    assert summary(g["frank"]) == ("cell-timeout", 7.0, (2.0, 2.0, 3.0))
    assert "ignored the interrupt" in battery["feedback"]["frank"]


@pytest.mark.slow
def test_exit_and_kernel_death_gain_nothing(battery):
    g = battery["grades"]["gina"]
    assert summary(g) == ("crashed", 7.0, (2.0, 2.0, 3.0))
    assert "raised SystemExit" in battery["feedback"]["gina"]
    assert "killed the kernel (exit code 0)" in battery["feedback"]["gina"]


@pytest.mark.slow
def test_no_hidden_input_escapes_through_a_rerun_after_a_kernel_death(battery):
    """nina's function stashes its hidden input in a file and kills the kernel; her rerun
    notebook raises with the stash. Reruns after hidden calls report fixed words only."""
    g, feedback = battery["grades"]["nina"], battery["feedback"]["nina"]
    assert summary(g) == ("crashed", 0.0, (0.0, 0.0, 0.0))
    assert "the kernel died while running `truncate_head_tail`" in feedback
    assert "raised RuntimeError (when rerun after a kernel death)" in feedback
    assert "stash" not in feedback and "100" not in feedback and "exit code 7" not in feedback


@pytest.mark.slow
def test_memory_hog_is_stopped_by_the_limit(battery):
    g = battery["grades"]["hank"]
    assert g.status == "memory" and g.total <= 7.0
    assert "MemoryError" in battery["feedback"]["hank"]


@pytest.mark.slow
@needs_namespaces
def test_fork_bomb_is_bounded_and_nothing_survives(battery):
    g = battery["grades"]["ivan"]
    assert g.total <= 7.0 and g.status in ("ok", "errors", "crashed", "cell-timeout")
    if os.geteuid() == 0 and NAMESPACED:
        for slot in range(2):
            assert sandbox.processes_of(sandbox.UID_BASE + slot) == []


@pytest.mark.slow
@needs_namespaces
def test_detached_process_leaves_no_trace(battery):
    g = battery["grades"]["judy"]
    assert summary(g) == ("ok", 7.0, (2.0, 2.0, 3.0))
    time.sleep(6)  # its second attack comes 5 s after the first
    out = battery["out"]
    after = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == battery["snapshot"]
    assert not (battery["tmp"] / "pwned-by-detached-process").exists()
    assert "pwned" not in (battery["hidden"] / f"{LESSON}.py").read_text()
    assert "pwned" not in (battery["subs"] / "alice" / NB_NAME).read_text()
    if os.geteuid() == 0:
        for slot in range(2):
            assert sandbox.processes_of(sandbox.UID_BASE + slot) == []


@pytest.mark.slow
@needs_namespaces
def test_hidden_checks_grades_and_other_submissions_are_invisible(battery):
    g, feedback = battery["grades"]["ken"], battery["feedback"]["ken"]
    assert g.total == 0.0
    assert "raised RuntimeError: readable: []" in feedback
    assert CANARY not in feedback


@pytest.mark.slow
def test_always_equal_objects_and_monkeypatching_gain_nothing(battery):
    g = battery["grades"]
    assert summary(g["liam"])[1:] == (0.0, (0.0, 0.0, 0.0))
    assert "not plain data" in battery["feedback"]["liam"]
    assert "did not return a module or weights-only state dict" in battery["feedback"]["liam"] or \
        "returned something that is not plain data" in battery["feedback"]["liam"]
    assert summary(g["mia"])[1:] == (0.0, (0.0, 0.0, 0.0))


@pytest.mark.slow
def test_honest_students_get_their_solo_grades(battery, tmp_path):
    """alice, bob and carol graded alone, through the command line, as in the hostile batch."""
    subs = write_submissions(tmp_path / "subs", {
        "alice": solution(), "bob": stripped(),
        "carol": with_exercise(with_exercise(solution(), "T1-truncate", _truncate_leaking()),
                               "T2-mask", _mask_forever())})
    out = tmp_path / "grades"
    assert cli(["grade", str(subs), "--out", str(out), "--checks", str(demo.HIDDEN_DIR),
                "--jobs", "2"]) == 0
    solo = read_csv(out / "grades.csv")
    batch = read_csv(battery["out"] / "grades.csv")
    for student in ("alice", "bob", "carol"):
        assert solo[student] == batch[student]
    assert sorted(p.name for p in (out / "feedback").iterdir()) == ["alice.md", "bob.md", "carol.md"]


@pytest.mark.slow
def test_a_frozen_grader_is_killed_at_the_wall_clock_limit(tmp_path):
    freeze = "import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)"  # stops the runner
    subs = write_submissions(tmp_path / "subs", {"erin": with_cell(solution(), freeze, at=3),
                                                 "alice": solution()})
    start = time.monotonic()
    grades = {g.student: g for g in grade(subs, tmp_path / "out", demo.HIDDEN_DIR, jobs=2,
                                          limits={"wall_s": 20}, progress=None)}
    assert summary(grades["erin"]) == ("timeout", 0.0, (0.0, 0.0, 0.0))
    assert summary(grades["alice"]) == ("ok", 7.0, (2.0, 2.0, 3.0))
    assert time.monotonic() - start < 20 + sandbox.START_ALLOWANCE_S + 20
    assert "ran past the 20 s limit" in (tmp_path / "out" / "feedback" / "erin.md").read_text()


@pytest.mark.slow
@pytest.mark.skipif(not sandbox.available("unshare"), reason="the unshare fallback needs root")
def test_unshare_fallback_isolates_too(tmp_path):
    hidden = hidden_copy(tmp_path)
    subs, out = tmp_path / "subs", tmp_path / "out"
    nbs = battery_notebooks(tmp_path, out, subs, hidden)
    write_submissions(subs, {k: nbs[k] for k in ("judy", "ken")})
    grades = {g.student: g for g in grade(subs, out, hidden, jobs=2, isolation="unshare",
                                          progress=None)}
    assert summary(grades["judy"]) == ("ok", 7.0, (2.0, 2.0, 3.0))  # a solution + the attack
    assert "readable: []" in (out / "feedback" / "ken.md").read_text()
    before = (out / "grades.csv").read_bytes()
    time.sleep(6)
    assert (out / "grades.csv").read_bytes() == before
    assert not (tmp_path / "pwned-by-detached-process").exists()
    assert sandbox.processes_of(sandbox.UID_BASE) == sandbox.processes_of(sandbox.UID_BASE + 1) == []


@pytest.mark.slow
def test_without_a_sandbox_grading_still_works_and_warns_loudly(tmp_path, capsys):
    subs = write_submissions(tmp_path / "subs", {"alice": solution()})
    grades = grade(subs, tmp_path / "out", demo.HIDDEN_DIR, isolation="none", progress=None)
    assert summary(grades[0]) == ("ok", 7.0, (2.0, 2.0, 3.0))
    assert "WITHOUT a sandbox" in capsys.readouterr().err
    assert "WITHOUT a sandbox" in (tmp_path / "out" / "feedback" / "alice.md").read_text()


def test_hidden_checks_of_the_test_lesson_load():
    checks = load_checks(demo.HIDDEN_DIR / f"{LESSON}.py")
    assert checks.max_points == 7.0 and checks.parameters["PRESET"] == "smoke"
    assert [len(e.cases) for e in checks.exercises.values()] == [3, 3, 1]


def test_authoring_mistakes_are_caught_when_the_checks_load():
    with pytest.raises(ValueError, match="exactly one of expect= or check="):
        Case("f", args=(1,))
    with pytest.raises(ValueError, match="expect must be a literal"):
        Case("f", expect={1, 2})
    with pytest.raises(ValueError, match="needs a check"):
        Case("f", expect=[1], returns="weights")
    with pytest.raises(ValueError, match="dotted"):
        Case("f(1)", expect=1)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root sandboxes run as another user")
def test_private_data_files_are_shown_to_the_sandbox_as_a_readable_copy(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "corpus.csv").write_text("text,label\n")
    (raw / "corpus.csv").chmod(0o600)  # as a download leaves it
    monkeypatch.setenv("NBLIB_DATA_DIR", str(raw))
    with sandbox.readable_data("bwrap") as view:
        assert view != raw and (view / "corpus.csv").read_text() == "text,label\n"
        assert (view / "corpus.csv").stat().st_mode & 0o777 == 0o644
    assert not view.exists() and (raw / "corpus.csv").stat().st_mode & 0o777 == 0o600
    with sandbox.readable_data("none") as view:
        assert view == raw
