"""The grader: student versions, sandboxed runs, strict scoring, and cheats that gain nothing.

The fast tests use no sandbox. The slow ones grade real notebooks made from the test lesson in
tests/grading_fixtures (three exercises; standard library + torch only): one batch of honest and
hostile submissions graded together, then honest ones alone, and the fallbacks without bubblewrap.
The tests named ``test_hole_<n>_...`` are the grader's known holes, now closed, each shown with a real submission.
"""

from __future__ import annotations

import base64
import csv
import importlib.util
import io
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import torch
from nbformat.v4 import new_code_cell

import nblib
from grader import Case, Exercise, cgroups, host, isolation, launch, same, sandbox, uids
from grader.__main__ import main as cli
from grader.checks import HIDDEN_DIR, LessonChecks, Limits, load_checks
from grader.inside.runner import inject_parameters
from grader.inside.wire import (
    UntrustedDataError,
    decode_value,
    decode_weights,
    parse_frames,
    strict_json,
)
from grader.judge import score_submission
from grader.reports import file_name
from grader.score import grade
from grader.strip import BEGIN, END, StripError, student_notebook
from grader.submissions import Refused, find_submissions, read_submission

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


def sandbox_uids(out: Path) -> set[int]:
    """The uids the sandboxes of a grading run used (from its logs)."""
    found = set()
    for log in (out / "logs").glob("*.log"):
        found.update(int(m) for m in re.findall(r"^uid: (\d+)$", log.read_text(), re.M))
    return found


def leftovers(out: Path) -> dict[int, list[int]]:
    return {uid: pids for uid in sandbox_uids(out) if (pids := host.processes_of(uid))}


NAMESPACED = isolation.available("bwrap") or isolation.available("unshare")
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


def test_weights_come_back_as_plain_data_never_as_a_pickle(tmp_path):
    tensor = {"__tensor__": {"dtype": "float32", "shape": [1, 1], "values": [[1.5]]}}
    good = {"__weights__": {"__dict__": [["weight", tensor], ["bias", {"__tensor__": {
        "dtype": "float32", "shape": [1], "values": [-0.5]}}]]}}
    state = decode_weights(good)
    assert set(state) == {"weight", "bias"} and type(state["weight"]) is torch.Tensor
    assert state["weight"].tolist() == [[1.5]]
    # what torch.save sends (a pickle in a zip) is refused unread: nothing runs, nothing inflates
    marker = tmp_path / "pickle-ran"
    buffer = io.BytesIO()
    torch.save({"weight": _RunsCode(str(marker))}, buffer)
    with pytest.raises(UntrustedDataError, match="state dict"):
        decode_weights({"__weights__": base64.b64encode(buffer.getvalue()).decode()})
    assert not marker.exists()
    # element counts are checked before anything is allocated
    huge = {"__weights__": {"__dict__": [["w", {"__tensor__": {
        "dtype": "float32", "shape": [10**6, 10**6], "values": []}}]]}}
    with pytest.raises(UntrustedDataError, match="too large"):
        decode_weights(huge)
    with pytest.raises(UntrustedDataError):
        decode_weights({"__weights__": {"__dict__": [["w", 1.0]]}})


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
                "cy/notes.ipynb", "loose.ipynb", ".dotted/90_grading_demo.ipynb"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}")
    subs, skipped = find_submissions(tmp_path, [LESSON])
    assert [(s.student, s.path.name, s.refused) for s in subs] == [
        ("ann", NB_NAME, ""), ("b o=b", NB_NAME, "")]
    assert len(skipped) == 4  # the copy, cy's unrelated notebook, the loose file, the dot-folder
    assert any(".dotted" in line and "starts with '.'" in line for line in skipped)


def test_file_names_keep_the_name_and_never_collide():
    names = ["张三", "李四", "alice", "alice!", "alice-2", "a/b", "a%2Fb", ".x", "..", "", "a:b",
             "tab\there", "é", "e\u0301", "x" * 300, "x" * 299 + "y"]
    files = [file_name(n) for n in names]
    assert len(set(files)) == len(names)
    assert files[:5] == ["张三", "李四", "alice", "alice!", "alice-2"]
    for name, f in zip(names, files, strict=True):
        assert "/" not in f and not f.startswith(".") and len(f.encode()) <= 220 and f
        if len(name) < 100:
            from urllib.parse import unquote
            assert unquote(f) == name or (name == "" and f == "%00")


def test_trusted_reads_refuse_links_pipes_devices_and_big_files(tmp_path):
    root = tmp_path / "subs"
    (root / "s").mkdir(parents=True)
    real = root / "s" / "real.ipynb"
    real.write_text("{}")
    assert read_submission(root, real) == b"{}"
    os.symlink("/dev/zero", root / "s" / "zero.ipynb")
    os.mkfifo(root / "s" / "fifo.ipynb")
    os.symlink(real, root / "s" / "link.ipynb")
    os.link(real, root / "s" / "hard.ipynb")
    (root / "s" / "big.ipynb").write_bytes(b"x" * 2000)
    os.symlink(root / "s", root / "linked-folder")
    started = time.monotonic()
    for name, why in (("zero.ipynb", "symbolic link"), ("fifo.ipynb", "not a regular file"),
                      ("link.ipynb", "symbolic link"), ("hard.ipynb", "hard link")):
        with pytest.raises(Refused, match=why):
            read_submission(root, root / "s" / name)
    with pytest.raises(Refused, match="larger than"):
        read_submission(root, root / "s" / "big.ipynb", max_bytes=1000)
    with pytest.raises(Refused, match="not a plain folder"):
        read_submission(root, root / "linked-folder" / "big.ipynb")
    assert time.monotonic() - started < 5  # the FIFO did not block


def test_cgroup_limits_are_written_where_the_host_allows_one(tmp_path, monkeypatch):
    """The files a cgroup v2 (delegated) or v1 hierarchy gets, on a stand-in /sys/fs/cgroup."""
    limits = Limits(total_memory_mb=1536, nproc=64, cpus=1.0)
    v2 = tmp_path / "v2"
    (v2 / "grader.scope").mkdir(parents=True)
    (v2 / "cgroup.controllers").write_text("cpu memory pids")
    (v2 / "grader.scope" / "cgroup.subtree_control").write_text("cpu memory pids")
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", v2)
    monkeypatch.setattr(cgroups.Cgroup, "_own", staticmethod(lambda c: Path("/grader.scope")))
    group = cgroups.Cgroup.make("sub", limits)
    leaf = v2 / "grader.scope" / "sub"
    assert group.version == 2 and group.dirs == {"all": leaf}
    assert (leaf / "memory.max").read_text() == str(1536 * 2**20)
    assert (leaf / "pids.max").read_text() == "64" and (leaf / "cpu.max").read_text() == "100000 100000"
    assert f"echo $$ > {leaf / 'cgroup.procs'}" in group.enter_command()[2]
    v1 = tmp_path / "v1"
    for controller in ("memory", "pids", "cpu"):
        (v1 / controller / "grader").mkdir(parents=True)
        (v1 / controller / "cgroup.procs").write_text("")
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", v1)
    monkeypatch.setattr(cgroups.Cgroup, "_own", staticmethod(lambda c: None if c is None else Path("/grader")))
    monkeypatch.setattr(host, "is_root", lambda: True)
    group = cgroups.Cgroup.make("sub", limits)
    assert group.version == 1 and set(group.dirs) == {"memory", "pids", "cpu"}
    assert (v1 / "memory" / "grader" / "sub" / "memory.limit_in_bytes").read_text() == str(1536 * 2**20)
    assert (v1 / "pids" / "grader" / "sub" / "pids.max").read_text() == "64"
    assert (v1 / "cpu" / "grader" / "sub" / "cpu.cfs_quota_us").read_text() == "100000"
    monkeypatch.setenv("NBLIB_GRADING_CGROUP", "off")
    assert cgroups.Cgroup.make("sub2", limits) is None


def test_the_course_notebooks_are_never_a_submissions_folder(tmp_path):
    repo = Path(nblib.__file__).resolve().parents[1]
    for folder in (repo, repo / "notebooks"):
        with pytest.raises(ValueError, match="notebooks folder"):
            grade(folder, tmp_path / "out", demo.HIDDEN_DIR, progress=None)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- hostile submissions
def _truncate_leaking():
    # raises with the hidden input in the message, in a made-up exception type name, or as the
    # choice among built-in exception types (hole 9: that choice was shown)
    return '''def truncate_head_tail(ids, max_len):
    if max_len == 5:
        raise type("Leak_" + "_".join(map(str, ids)), (Exception,), {})(repr(ids))
    kinds = [ValueError, KeyError, TypeError, IndexError, ZeroDivisionError, LookupError,
             OSError, EOFError]
    raise kinds[max_len % len(kinds)](repr(ids))'''


def _mask_forever():
    return '''def causal_mask(T):
    while True:
        pass'''


# hole 5: three processes of 900 MB each, where the submission may use 1536 MB in all
HOG_PROCESSES = '''import subprocess, sys
code = "import time; b = bytearray(b'x') * (900 * 2**20); time.sleep(4); print('held')"
procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE) for _ in range(3)]
held = sum(p.communicate()[0] == b"held\\n" for p in procs)
raise RuntimeError(f"held {held} of 3")'''

FORK_BOMB = '''import os, signal, time
children = 0
for _ in range(100000):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if os.fork() == 0:  # a grandchild in a session of its own, ignoring SIGTERM too
            os.setsid()
            time.sleep(300)
        time.sleep(300)
        os._exit(0)
    children += 1
raise RuntimeError(f"children {children}")'''

# The old wire format of weights (base64 of a torch.save zip), sent in place of the harness's
# answer: 200 MB of float32 zeros deflated to ~200 KB. Built here without holding the 200 MB.
WEIGHTS_BOMB = '''import base64, collections, io, json, pickle, zipfile
import torch
N = 50_000_000

class FakeStorage:
    pass

class Zeros:
    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2,
                (FakeStorage(), 0, (N,), (1,), False, collections.OrderedDict()))

class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return ("storage", torch.FloatStorage, "0", "cpu", N) if isinstance(obj, FakeStorage) else None

pkl = io.BytesIO()
Pickler(pkl, protocol=2).dump({"weight": Zeros()})
out = io.BytesIO()
with zipfile.ZipFile(out, "w", compresslevel=1) as z:
    z.writestr("archive/data.pkl", pkl.getvalue())
    z.writestr("archive/byteorder", "little")
    z.writestr("archive/version", "3\\n")
    info = zipfile.ZipInfo("archive/data/0")
    info.compress_type = zipfile.ZIP_DEFLATED
    with z.open(info, "w", force_zip64=True) as fh:
        chunk, left = bytes(2**22), N * 4
        while left:
            fh.write(chunk[:left])
            left -= min(left, len(chunk))
bomb = json.dumps({"ok": True, "value": {"__weights__": base64.b64encode(out.getvalue()).decode()}})
real_dumps = json.dumps
json.dumps = lambda obj, *a, **k: bomb if isinstance(obj, dict) and "ok" in obj else real_dumps(obj, *a, **k)'''


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
                "/proc/1/environ", str(HIDDEN_DIR), str(HIDDEN_DIR / "00_data.py"),
                str(repo / "grader" / "score.py"), str(hidden), str(subs)]
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
    fork_bomb = FORK_BOMB
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
    # hole 1: the exercise is the library's function, or wraps it (and retries if stopped)
    returns_library = '''import functools
from nblib.data.text import truncate
truncate_head_tail = functools.partial(truncate, strategy="head+tail", head_fraction=0.5)'''
    wraps_library = '''def truncate_head_tail(ids, max_len):
    from nblib.data import text
    try:
        return text.truncate(ids, max_len, "head+tail", 0.5)
    except BaseException:
        return text.truncate(ids, max_len, "head+tail", 0.5)'''
    switches_guard_off = '''import sys
from nblib.data.text import truncate

def truncate_head_tail(ids, max_len):
    sys.setprofile(None)  # the reference guard is a profiler hook
    return truncate(ids, max_len, "head+tail", 0.5)'''
    # hole 9: an error message that writes report lines of its own
    forges = '''raise ValueError("oops\\n- **T1-truncate**: 2 / 2 points (3 of 3 hidden cases passed)\\r\\n"
                 "## 90_grading_demo: 7 / 7 points")'''
    # hole 10: no nested user namespace (root inside), no /sys
    userns = '''import os, subprocess
done = subprocess.run(["unshare", "-Ur", "true"], capture_output=True)
raise RuntimeError(f"userns={done.returncode} sys={os.path.exists('/sys/kernel')}")'''
    hog_processes = HOG_PROCESSES
    nina = with_cell(with_exercise(solution(), "T1-truncate", stash_and_die), stash_cell, at=3)
    nina.cells = [c for c in nina.cells if not c.source.startswith("truncate_head_tail(")]
    return {
        "alice": solution(),
        "张三": stripped(),  # hole 8: was graded as `student`
        "carol": with_cell(with_exercise(with_exercise(solution(), "T1-truncate", _truncate_leaking()),
                                         "T2-mask", _mask_forever()), forges, at=3),
        "alice!": with_cell(solution(), "while True:\n    pass"),  # hole 8: was graded as alice-2
        "frank": with_cell(solution(), stubborn),
        "gina": with_cell(with_cell(solution(), "import sys\nsys.exit(3)"),
                          "import os\nos._exit(0)"),
        "hank": with_cell(with_cell(solution(), hog_processes),
                          "hog = []\nwhile True:\n    hog.append(bytearray(64 * 2**20))"),
        "ivan": with_cell(solution(), fork_bomb),
        "judy": with_cell(solution(), detached),
        "ken": with_cell(with_cell(stripped(), reader, at=3), userns, at=3),
        "liam": with_cell(with_cell(stripped(), always_equal), WEIGHTS_BOMB),
        "mia": with_cell(stripped(), monkeypatch),
        "nina": nina,
        "oscar": with_exercise(solution(), "T1-truncate", returns_library),
        "olga": with_exercise(solution(), "T1-truncate", wraps_library),
        "otto": with_exercise(solution(), "T1-truncate", switches_guard_off),
    }


@pytest.fixture(scope="module")
def battery(tmp_path_factory):
    if not NAMESPACED:
        pytest.skip("no sandbox works here (bubblewrap, or root with util-linux): nothing to grade in")
    tmp = tmp_path_factory.mktemp("battery")
    subs, out = tmp / "submissions", tmp / "grades"
    hidden = hidden_copy(tmp)
    notebooks = battery_notebooks(tmp, out, subs, hidden)
    write_submissions(subs, notebooks)
    write_submissions(subs, {".hidden-student": solution()})  # not graded, but listed
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    grades = grade(subs, out, hidden, jobs=2, progress=None)
    ended = time.monotonic()
    rss_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    snapshot = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    return {"grades": {g.student: g for g in grades}, "out": out, "subs": subs, "tmp": tmp,
            "hidden": hidden, "snapshot": snapshot, "seconds": ended - started,
            "rss_growth_mb": rss_growth_mb,
            "feedback": {s: (out / "feedback" / f"{file_name(s)}.md").read_text() for s in notebooks}}


@pytest.mark.slow
def test_solution_full_marks_student_version_zero(battery):
    g = battery["grades"]
    assert summary(g["alice"]) == ("ok", 7.0, (2.0, 2.0, 3.0))
    assert summary(g["张三"]) == ("errors", 0.0, (0.0, 0.0, 0.0))
    assert "raised NotImplementedError (not written yet)" in battery["feedback"]["张三"]
    rows = read_csv(battery["out"] / "grades.csv")
    assert set(rows) == set(g) and rows["alice"]["total"] == "7" and rows["张三"]["T3-fit"] == "0"
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
    assert summary(g["alice!"]) == ("cell-timeout", 7.0, (2.0, 2.0, 3.0))
    assert "ran past the 10 s limit per cell" in battery["feedback"]["alice!"]
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
    assert "raised an exception (when rerun after a kernel death)" in feedback
    assert "stash" not in feedback and "100" not in feedback and "exit code 7" not in feedback


@pytest.mark.slow
def test_memory_hog_is_stopped_by_the_limit(battery):
    g = battery["grades"]["hank"]
    # the hog comes after the exercises: it loses nothing of them, and the limit stopped it
    assert summary(g) == ("memory", 7.0, (2.0, 2.0, 3.0))
    assert "MemoryError" in battery["feedback"]["hank"]


@pytest.mark.slow
@needs_namespaces
def test_fork_bomb_is_bounded_and_nothing_survives(battery):
    g, feedback = battery["grades"]["ivan"], battery["feedback"]["ivan"]
    assert g.total == 7.0 and g.status in ("errors", "crashed", "cell-timeout")
    children = re.search(r"children (\d+)", feedback)
    if children:  # the cell finished: it made at most the submission's process limit
        assert 0 < int(children.group(1)) <= 64
    if os.geteuid() == 0:
        assert sandbox_uids(battery["out"]) and leftovers(battery["out"]) == {}


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
        assert leftovers(out) == {}


@pytest.mark.slow
@needs_namespaces
def test_hidden_checks_grades_and_other_submissions_are_invisible(battery):
    g, feedback = battery["grades"]["ken"], battery["feedback"]["ken"]
    assert g.total == 0.0
    assert "raised RuntimeError: `readable: []`" in feedback
    assert CANARY not in feedback


@pytest.mark.slow
@needs_namespaces
def test_hole_10_no_nested_user_namespace_and_no_sys(battery):
    """`unshare -Ur` gave root in a user namespace inside the sandbox, and /sys was mounted."""
    assert "raised RuntimeError: `userns=1 sys=False`" in battery["feedback"]["ken"]


@pytest.mark.slow
def test_hole_1_returning_or_wrapping_the_library_earns_nothing(battery):
    """oscar's exercise *is* nblib.data.text.truncate (a partial); olga's calls it (and retries when
    stopped); otto's switches the guard off first. All scored 2/2 on T1. alice's notebook uses the library after the exercise, as
    lessons do, and keeps full marks with status ok."""
    g, feedback = battery["grades"], battery["feedback"]
    for student in ("oscar", "olga"):
        assert summary(g[student]) == ("ok", 5.0, (0.0, 2.0, 3.0)), student
        assert "called the library's own version of this exercise" in feedback[student]
    assert summary(g["otto"]) == ("ok", 5.0, (0.0, 2.0, 3.0))
    assert "turned off the grader's profiler" in feedback["otto"]
    assert summary(g["alice"]) == ("ok", 7.0, (2.0, 2.0, 3.0))


@pytest.mark.slow
def test_hole_9_feedback_is_fixed_words_on_single_lines(battery):
    """carol's function raised an exception type picked by the hidden max_len (its name was
    shown), and one of her cells raised a message that wrote report lines into her feedback."""
    feedback = battery["feedback"]["carol"]
    cases = [line for line in feedback.splitlines() if line.startswith("    - case")]
    assert [c.split(": ", 1)[1] for c in cases[:3]] == ["`truncate_head_tail` raised an exception"] * 3
    lines = feedback.splitlines()
    assert not any(line.startswith(("- **T1-truncate**: 2", "## 90_grading_demo: 7")) for line in lines)
    assert sum("oops" in line for line in lines) == 1
    assert all(c.isprintable() for line in lines for c in line)


@pytest.mark.slow
def test_hole_5_memory_total_of_all_processes_is_limited(battery):
    """hank's three processes of 900 MB each all held their memory under a 1536 MB limit."""
    g, feedback = battery["grades"]["hank"], battery["feedback"]["hank"]
    assert "held 3 of 3" not in feedback and "held 2 of 3" not in feedback
    assert summary(g) == ("memory", 7.0, (2.0, 2.0, 3.0))
    assert "together used more than the 1536 MB allowed" in feedback


@pytest.mark.slow
def test_hole_6_weights_never_expand_in_the_grader(battery):
    """liam's harness answer is a 200 KB zip that the old grader inflated to 200 MB in its own
    process; now no zip or pickle is opened on the trusted side."""
    g, feedback = battery["grades"]["liam"], battery["feedback"]["liam"]
    assert g.total == 0.0
    assert "`fit_line` did not return a module or a state dict of tensors" in feedback
    assert battery["rss_growth_mb"] < 150


@pytest.mark.slow
def test_hole_8_names_are_kept_as_given(battery):
    """张三 was graded as `student`, alice! as `alice-2`; folders starting with '.' vanished."""
    rows = read_csv(battery["out"] / "grades.csv")
    assert {"张三", "alice!", "alice"} <= set(rows)
    assert rows["张三"]["total"] == "0" and rows["alice!"]["total"] == "7"
    assert rows["alice"]["total"] == "7"
    feedback = {p.name for p in (battery["out"] / "feedback").iterdir()}
    assert {"张三.md", "alice!.md", "alice.md"} <= feedback
    assert "# Grading feedback for `张三`" in battery["feedback"]["张三"]
    skipped = (battery["out"] / "skipped.txt").read_text()
    assert ".hidden-student" in skipped and ".hidden-student" not in rows


@pytest.mark.slow
def test_always_equal_objects_and_monkeypatching_gain_nothing(battery):
    g = battery["grades"]
    assert summary(g["liam"])[1:] == (0.0, (0.0, 0.0, 0.0))
    # (liam also sends a forged answer in place of every result: see the test of hole 6)
    assert battery["feedback"]["liam"].count("`causal_mask` did not return plain data") == 3
    assert summary(g["mia"])[1:] == (0.0, (0.0, 0.0, 0.0))


@pytest.mark.slow
def test_honest_students_get_their_solo_grades(battery, tmp_path):
    """alice, bob and carol graded alone, through the command line, as in the hostile batch."""
    subs = write_submissions(tmp_path / "subs", {
        "alice": solution(), "张三": stripped(),
        "carol": with_exercise(with_exercise(solution(), "T1-truncate", _truncate_leaking()),
                               "T2-mask", _mask_forever())})
    out = tmp_path / "grades"
    assert cli(["grade", str(subs), "--out", str(out), "--checks", str(demo.HIDDEN_DIR),
                "--jobs", "2"]) == 0
    solo = read_csv(out / "grades.csv")
    batch = read_csv(battery["out"] / "grades.csv")
    for student in ("alice", "张三"):
        assert solo[student] == batch[student]
    assert (solo["carol"]["status"], solo["carol"]["total"]) == ("errors", "3")
    # each student's feedback as Markdown and as HTML
    assert sorted(p.name for p in (out / "feedback").iterdir()) == [
        "alice.html", "alice.md", "carol.html", "carol.md", "张三.html", "张三.md"]


@pytest.mark.slow
@needs_namespaces
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
@pytest.mark.skipif(not isolation.available("unshare"), reason="the unshare fallback needs root")
def test_unshare_fallback_isolates_too(tmp_path):
    hidden = hidden_copy(tmp_path)
    subs, out = tmp_path / "subs", tmp_path / "out"
    nbs = battery_notebooks(tmp_path, out, subs, hidden)
    write_submissions(subs, {k: nbs[k] for k in ("judy", "ken")})
    grades = {g.student: g for g in grade(subs, out, hidden, jobs=2, isolation="unshare",
                                          progress=None)}
    assert summary(grades["judy"]) == ("ok", 7.0, (2.0, 2.0, 3.0))  # a solution + the attack
    feedback = (out / "feedback" / "ken.md").read_text()
    assert "`readable: []`" in feedback and "`userns=1 sys=False`" in feedback
    before = (out / "grades.csv").read_bytes()
    time.sleep(6)
    assert (out / "grades.csv").read_bytes() == before
    assert not (tmp_path / "pwned-by-detached-process").exists()
    assert leftovers(out) == {}


@pytest.mark.slow
def test_hole_7_no_silent_run_without_a_sandbox(tmp_path, monkeypatch, capsys):
    """A PATH without setpriv (or no bwrap, or not root) used to grade unsandboxed, quietly."""
    subs = write_submissions(tmp_path / "subs", {"alice": solution()})
    real_tool = host.tool
    monkeypatch.setattr(host, "tool", lambda name: "/nonexistent/" + name
                        if name in ("setpriv", "bwrap") else real_tool(name))
    monkeypatch.setattr(isolation, "_probe_cache", {})
    monkeypatch.delenv("NBLIB_GRADING_ISOLATION", raising=False)
    with pytest.raises(isolation.SandboxUnavailable) as err:
        grade(subs, tmp_path / "out", demo.HIDDEN_DIR, progress=None)
    assert "bwrap" in str(err.value) and ("setpriv" in str(err.value) or "root" in str(err.value))
    assert not (tmp_path / "out").exists()
    monkeypatch.setenv("NBLIB_GRADING_ISOLATION", "none")
    with pytest.raises(isolation.SandboxUnavailable, match="--unsafe-no-sandbox"):
        grade(subs, tmp_path / "out", demo.HIDDEN_DIR, progress=None)
    monkeypatch.delenv("NBLIB_GRADING_ISOLATION")
    argv = ["grade", str(subs), "--out", str(tmp_path / "out"), "--checks", str(demo.HIDDEN_DIR)]
    assert cli(argv) == 1
    assert "no sandbox works on this machine" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli([*argv, "--isolation", "none"])
    capsys.readouterr()
    # the instructor's explicit flag: graded, with the real reason and the warning
    assert cli([*argv, "--unsafe-no-sandbox"]) == 0
    err_text = capsys.readouterr().err
    assert "WITHOUT a sandbox" in err_text and "not found: bwrap" in err_text
    assert read_csv(tmp_path / "out" / "grades.csv")["alice"]["total"] == "7"
    assert "WITHOUT a sandbox" in (tmp_path / "out" / "feedback" / "alice.md").read_text()


@pytest.mark.slow
@needs_namespaces
def test_hole_2_and_3_links_pipes_and_devices_are_refused_visibly(tmp_path):
    """Links to the solution, to another student or to the hidden checks scored or were read by
    the trusted side; a FIFO hung the whole class; a link to /dev/zero was read without bound."""
    course = tmp_path / "course"
    demo.write_lesson(course)  # stands for notebooks/: the solution source
    subs = write_submissions(tmp_path / "subs", {"alice": solution()})
    for student in ("mallory", "pat", "quinn", "rita", "hugo"):
        (subs / student).mkdir()
    os.symlink(course / NB_NAME, subs / "mallory" / NB_NAME)
    os.mkfifo(subs / "pat" / NB_NAME)
    os.symlink("/dev/zero", subs / "quinn" / NB_NAME)
    os.symlink(demo.HIDDEN_DIR / f"{LESSON}.py", subs / "rita" / NB_NAME)
    os.link(course / NB_NAME, subs / "hugo" / NB_NAME)
    os.symlink(subs / "alice", subs / "oscar")  # a whole folder: alice's
    out = tmp_path / "out"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "grader", "grade", str(subs), "--out", str(out),
                           "--checks", str(demo.HIDDEN_DIR), "--jobs", "2"],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert time.monotonic() - started < 120
    rows = read_csv(out / "grades.csv")
    assert set(rows) == {"alice", "mallory", "pat", "quinn", "rita", "hugo", "oscar"}
    assert (rows["alice"]["status"], rows["alice"]["total"]) == ("ok", "7")
    reasons = {"mallory": "symbolic link", "pat": "named pipe", "quinn": "symbolic link",
               "rita": "symbolic link", "hugo": "hard link", "oscar": "symbolic link"}
    for student, why in reasons.items():
        assert (rows[student]["status"], rows[student]["total"]) == ("refused", "0"), student
        assert why in rows[student]["reason"], (student, rows[student]["reason"])
    for path in out.rglob("*"):
        if path.is_file():
            assert CANARY not in path.read_text(errors="replace"), path


@pytest.mark.slow
@needs_namespaces
def test_hole_4_a_fork_bomb_costs_the_next_students_nothing(tmp_path):
    """After a fork bomb whose children ignore SIGTERM, the next run in the same slot found its uid
    busy and two correct submissions were recorded no-result, 0/2. Here the bomb runs first in the
    only slot, and a process left on the first sandbox uid (as a previous run's survivor would be)
    holds that uid throughout: the grader must pick another uid, never blame the students."""
    subs = write_submissions(tmp_path / "subs", {
        "a-ivan": with_cell(solution(), FORK_BOMB), "b-alice": solution(), "c-bob": solution()})
    squatter = None
    if os.geteuid() == 0:
        squatter = subprocess.Popen(["setpriv", f"--reuid={uids.UID_BASE}", f"--regid={uids.UID_BASE}",
                                     "--clear-groups", "sleep", "300"])
    try:
        grades = {g.student: g for g in grade(subs, tmp_path / "out", demo.HIDDEN_DIR, jobs=1,
                                              progress=None)}
    finally:
        if squatter is not None:
            squatter.kill()
            squatter.wait()
    assert grades["a-ivan"].total == 7.0
    for student in ("b-alice", "c-bob"):
        assert summary(grades[student]) == ("ok", 7.0, (2.0, 2.0, 3.0)), student
    if os.geteuid() == 0:
        assert uids.UID_BASE not in sandbox_uids(tmp_path / "out")
        assert leftovers(tmp_path / "out") == {}


@pytest.mark.slow
@needs_namespaces
def test_hole_10_two_graders_on_one_machine_do_not_collide(tmp_path):
    """A second grading run (or the test suite) on the same machine used the same uids: every
    submission of one run was refused, and one run could kill the other's sandboxes."""
    first = write_submissions(tmp_path / "first", {"alice": solution(), "bob": solution()})
    second = write_submissions(tmp_path / "second", {"carol": solution(), "dave": solution()})
    other = subprocess.Popen([sys.executable, "-m", "grader", "grade", str(first),
                              "--out", str(tmp_path / "out1"), "--checks", str(demo.HIDDEN_DIR),
                              "--jobs", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        mine = grade(second, tmp_path / "out2", demo.HIDDEN_DIR, jobs=2, progress=None)
        _, stderr = other.communicate(timeout=300)
    finally:
        other.kill()
    assert other.returncode == 0, stderr[-2000:]
    assert [summary(g) for g in mine] == [("ok", 7.0, (2.0, 2.0, 3.0))] * 2
    rows = read_csv(tmp_path / "out1" / "grades.csv")
    assert [(r["status"], r["total"]) for r in rows.values()] == [("ok", "7")] * 2
    if os.geteuid() == 0:
        assert not sandbox_uids(tmp_path / "out1") & sandbox_uids(tmp_path / "out2")


@pytest.mark.slow
@needs_namespaces
def test_memory_total_is_kept_by_the_watchdog_where_there_is_no_cgroup(tmp_path, monkeypatch):
    """Without a cgroup (NBLIB_GRADING_CGROUP=off stands for a host that allows none), the
    grader's watchdog sums the memory of all the sandbox's processes and stops the largest."""
    monkeypatch.setenv("NBLIB_GRADING_CGROUP", "off")
    hog = with_cell(solution(), HOG_PROCESSES)
    subs = write_submissions(tmp_path / "subs", {"rosa": hog})
    g, = grade(subs, tmp_path / "out", demo.HIDDEN_DIR, jobs=1, progress=None)
    feedback = (tmp_path / "out" / "feedback" / "rosa.md").read_text()
    assert "held 3 of 3" not in feedback and "held 2 of 3" not in feedback
    assert summary(g) == ("memory", 7.0, (2.0, 2.0, 3.0))
    assert "watchdog" in (tmp_path / "out" / "logs" / f"rosa__{LESSON}.log").read_text()


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
    with launch.readable_data("bwrap") as view:
        assert view != raw and (view / "corpus.csv").read_text() == "text,label\n"
        assert (view / "corpus.csv").stat().st_mode & 0o777 == 0o644
    assert not view.exists() and (raw / "corpus.csv").stat().st_mode & 0o777 == 0o600
    with launch.readable_data("none") as view:
        assert view == raw
