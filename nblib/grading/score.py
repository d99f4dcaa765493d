"""Stage 2 of grading, the trusted side: parse what came out of each sandbox, score it, report it.

Never imports or runs student code. Everything that left a sandbox is treated as hostile data:
frames are parsed strictly (nonce, lengths, size limits, no duplicate keys, bounded nesting), values
are rebuilt from plain JSON into genuine built-in types (a float subclass or an always-equal object
cannot exist here), tensors are rebuilt from their values, and weights are reloaded with
``torch.load(weights_only=True)``. Then the hidden checks judge each case; a student scores
``points * passed / cases`` per exercise.

Writes, into an output folder only this process touches: ``grades.csv`` (one row per student and
lesson), ``feedback/<student>.md`` (what passed, what failed and why; never the hidden inputs or
expected values) and, for the instructor, ``results.json`` and ``logs/``.
"""

from __future__ import annotations

import base64
import builtins
import csv
import io
import json
import math
import os
import re
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nblib.grading import sandbox
from nblib.grading.checks import Case, LessonChecks, Limits, find_checks, load_checks
from nblib.grading.runner import FRAME_TAG

MAX_JSON_DEPTH = 200
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_JSON_BRACKET = re.compile(r"[\[\]{}]")
MAX_NOTEBOOK_BYTES = 64 * 2**20
TENSOR_DTYPES = ("bool", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16",
                 "float32", "float64")
MAX_TENSOR_ELEMENTS = 10**7
# Names shown to a student are only ever these fixed words, never text the submission chose
# (an exception or type name can be made up to carry the hidden input out in the feedback).
KNOWN_EXCEPTIONS = frozenset(
    name for name, obj in vars(builtins).items()
    if isinstance(obj, type) and issubclass(obj, BaseException)
)
KNOWN_TYPES = frozenset({"set", "frozenset", "bytes", "bytearray", "complex", "ndarray", "Tensor",
                         "Module", "Series", "DataFrame", "generator", "function", "range",
                         "OrderedDict", "defaultdict", "Counter", "NoneType"})
# When several apply, the first one names the submission's status in grades.csv.
STATUS_ORDER = ("timeout", "no-result", "memory", "crashed", "cell-timeout", "errors", "ok")
STATUS_TEXT = {
    "ok": "ran without errors",
    "errors": "some cells raised errors",
    "cell-timeout": "a cell ran past its time limit and was interrupted",
    "crashed": "the kernel died; the notebook was rerun without what killed it",
    "memory": "ran out of memory",
    "timeout": "ran past the time limit for the whole notebook and was stopped",
    "invalid": "the file is not a readable notebook",
    "no-result": "the grader got no result back",
}


class UntrustedDataError(ValueError):
    """Something that came out of a sandbox is not what an honest runner would send."""


# ---------------------------------------------------------------- strict parsing
def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise UntrustedDataError("duplicate key")
        result[key] = value
    return result


def _constant(name: str) -> float:
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[name]


def strict_json(text: str | bytes, max_bytes: int) -> Any:
    """Parse untrusted JSON: size limit, bounded nesting, no duplicate keys."""
    if len(text) > max_bytes:
        raise UntrustedDataError("too large")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise UntrustedDataError("not UTF-8") from None
    depth = 0
    skeleton = _JSON_STRING.sub('""', text)  # brackets inside strings do not nest
    for bracket in _JSON_BRACKET.finditer(skeleton):  # json itself recurses without a useful limit
        depth += 1 if bracket.group() in "[{" else -1
        if depth > MAX_JSON_DEPTH:
            raise UntrustedDataError("nested too deeply")
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_constant)
    except (ValueError, RecursionError) as err:
        raise UntrustedDataError(f"not valid JSON ({type(err).__name__})") from None


def parse_frames(data: bytes, nonce: str, max_frame: int) -> tuple[list[dict], str | None]:
    """Split the runner's stdout into frames; stop at the first thing that is not a frame."""
    header = FRAME_TAG + b" " + nonce.encode("ascii") + b" "
    frames: list[dict] = []
    pos = 0
    while pos < len(data):
        if not data.startswith(header, pos):
            return frames, "unexpected bytes on the result pipe"
        start = pos + len(header)
        end = data.find(b"\n", start, start + 16)
        digits = data[start:end] if end != -1 else b""
        if not digits.isdigit():
            return frames, "malformed frame header"
        size = int(digits)
        body = data[end + 1: end + 1 + size]
        if size > max_frame or len(body) < size or data[end + 1 + size: end + 2 + size] != b"\n":
            return frames, "truncated or oversized frame"
        try:
            frame = strict_json(body, max_frame)
        except UntrustedDataError as err:
            return frames, f"bad frame: {err}"
        if type(frame) is not dict or type(frame.get("type")) is not str:
            return frames, "bad frame"
        frames.append(frame)
        pos = end + 2 + size
    return frames, None


def decode_value(obj: Any, budget: list[int] | None = None) -> Any:
    """Rebuild a returned value from plain JSON as genuine built-in values and tensors."""
    import torch

    budget = budget if budget is not None else [MAX_TENSOR_ELEMENTS]
    budget[0] -= 1
    if budget[0] < 0:
        raise UntrustedDataError("too many elements")
    if obj is None or type(obj) in (bool, int, float, str):
        return obj
    if type(obj) is list:
        return [decode_value(v, budget) for v in obj]
    if type(obj) is not dict or len(obj) != 1:
        raise UntrustedDataError("not plain data")
    (tag, payload), = obj.items()
    if tag == "__dict__":
        if type(payload) is not list:
            raise UntrustedDataError("bad dict")
        result = {}
        for pair in payload:
            if type(pair) is not list or len(pair) != 2:
                raise UntrustedDataError("bad dict")
            key = decode_value(pair[0], budget)
            if not (key is None or type(key) in (bool, int, float, str)) or key in result:
                raise UntrustedDataError("bad dict key")
            result[key] = decode_value(pair[1], budget)
        return result
    if tag == "__tensor__":
        if type(payload) is not dict or set(payload) != {"dtype", "shape", "values"}:
            raise UntrustedDataError("bad tensor")
        dtype, shape, values = payload["dtype"], payload["shape"], payload["values"]
        if dtype not in TENSOR_DTYPES or type(shape) is not list or len(shape) > 8:
            raise UntrustedDataError("bad tensor")
        if not all(type(s) is int and 0 <= s for s in shape):
            raise UntrustedDataError("bad tensor shape")
        numel = math.prod(shape)
        budget[0] -= numel
        if budget[0] < 0:
            raise UntrustedDataError("tensor too large")
        _check_numbers(values, len(shape))
        try:
            tensor = torch.tensor(values, dtype=getattr(torch, dtype))
        except (TypeError, ValueError, RuntimeError, OverflowError):
            raise UntrustedDataError("bad tensor values") from None
        if list(tensor.shape) != shape:
            if numel != 0 or tensor.numel() != 0:
                raise UntrustedDataError("tensor values do not match its shape")
            tensor = tensor.reshape(shape)  # torch.tensor([]) is (0,), the shape may be (0, 4)
        return tensor
    raise UntrustedDataError("not plain data")


def _check_numbers(values: Any, depth: int) -> None:
    if depth == 0:
        if type(values) not in (bool, int, float):
            raise UntrustedDataError("tensor values must be numbers")
        return
    if type(values) is not list:
        raise UntrustedDataError("bad tensor nesting")
    for v in values:
        _check_numbers(v, depth - 1)


def decode_weights(obj: Any, max_bytes: int) -> dict[str, Any]:
    """A weights-only state dict: base64 of ``torch.save`` bytes, reloaded with weights_only."""
    import torch

    if type(obj) is not dict or set(obj) != {"__weights__"} or type(obj["__weights__"]) is not str:
        raise UntrustedDataError("not a state dict")
    text = obj["__weights__"]
    if len(text) > max_bytes * 4 // 3 + 4:
        raise UntrustedDataError("weights too large")
    try:
        raw = base64.b64decode(text, validate=True)
        state = torch.load(io.BytesIO(raw), weights_only=True, map_location="cpu")
    except Exception:  # the weights-only unpickler refuses anything but tensors and containers
        raise UntrustedDataError("not a weights-only state dict") from None
    if type(state) not in (dict, OrderedDict):
        raise UntrustedDataError("not a state dict")
    for key, value in state.items():
        if type(key) is not str or type(value) is not torch.Tensor:
            raise UntrustedDataError("a state dict holds only named tensors")
    return dict(state)


# ---------------------------------------------------------------- encoding hidden inputs
def encode_input(value: Any) -> Any:
    """A hidden input as plain JSON for the runner (trusted side; tensors by value)."""
    import torch

    if value is None or type(value) in (bool, int, float, str):
        return value
    if type(value) in (list, tuple):
        return [encode_input(v) for v in value]
    if type(value) is dict:
        return {"__dict__": [[encode_input(k), encode_input(v)] for k, v in value.items()]}
    if isinstance(value, torch.Tensor):
        dtype = str(value.dtype).replace("torch.", "")
        if dtype not in TENSOR_DTYPES:
            raise TypeError(f"hidden input tensor of unsupported dtype {value.dtype}")
        return {"__tensor__": {"dtype": dtype, "shape": list(value.shape),
                               "values": value.detach().cpu().tolist()}}
    raise TypeError(f"a hidden input must be plain data or a tensor, got {type(value).__name__}")


# ---------------------------------------------------------------- scoring one submission
@dataclass
class CaseResult:
    passed: bool
    message: str  # for the student: fixed wording, or the check's own hint


@dataclass
class ExerciseResult:
    id: str
    points: float
    max_points: float
    cases: list[CaseResult]


@dataclass
class Grade:
    student: str
    lesson: str
    status: str
    exercises: list[ExerciseResult]
    notes: list[str] = field(default_factory=list)  # about the notebook run, for the student
    log: list[str] = field(default_factory=list)  # for the instructor only (may quote the student)
    seconds: float = 0.0
    isolation: str = ""
    source: str = ""

    @property
    def total(self) -> float:
        return round(sum(e.points for e in self.exercises), 3)

    @property
    def max_points(self) -> float:
        return round(sum(e.max_points for e in self.exercises), 3)


def _call_message(frame: dict | None, case: Case, limits: Limits, max_bytes: int,
                  log: list[str] | None = None) -> tuple[CaseResult, Any]:
    """Judge one hidden call from its (untrusted) frame."""
    fn = case.function
    if frame is None:
        return CaseResult(False, "no result came back"), None
    status = frame.get("status")
    if status == "timeout":
        return CaseResult(False, f"`{fn}` ran past the {limits.call_s:g} s limit per call"), None
    if status == "died":
        return CaseResult(False, f"the kernel died while running `{fn}`"), None
    if status == "not-run":
        return CaseResult(False, "not run: the run stopped before this call (see below)"), None
    if status == "too-large":
        return CaseResult(False, f"`{fn}` returned a value too large to send back"), None
    if status != "returned" or type(frame.get("result")) is not str:
        return CaseResult(False, "no result came back"), None
    try:
        result = strict_json(frame["result"], max_bytes)
    except UntrustedDataError:
        return CaseResult(False, "the result was not plain data"), None
    if type(result) is not dict or type(result.get("ok")) is not bool:
        return CaseResult(False, "the result was not plain data"), None
    if result["ok"] is not True:
        error = result.get("error")
        if error == "undefined":
            return CaseResult(False, f"`{fn.split('.')[0]}` is not defined after running your "
                                     "notebook"), None
        if error == "raised":
            name = result.get("exception")
            shown = name if name in KNOWN_EXCEPTIONS else "an exception"
            return CaseResult(False, f"`{fn}` raised {shown}"), None
        if error == "interrupted":
            return CaseResult(False, f"`{fn}` ran past the {limits.call_s:g} s limit per call"), None
        if error == "unsupported" and result.get("type") == "too-large":
            return CaseResult(False, f"`{fn}` returned a value too large to send back"), None
        if error == "unsupported":
            kind = result.get("type")
            shown = f" ({kind})" if kind in KNOWN_TYPES else ""
            return CaseResult(False, f"`{fn}` returned something that is not plain data{shown}: "
                                     "return None, bool, int, float, str, lists, dicts or tensors"
                                     + (" (a module or state dict here)"
                                        if case.returns == "weights" else "")), None
        return CaseResult(False, "no result came back"), None
    try:
        if case.returns == "weights":
            value = decode_weights(result.get("value"), max_bytes)
        else:
            value = decode_value(result.get("value"))
    except UntrustedDataError:
        what = "a module or weights-only state dict" if case.returns == "weights" else "plain data"
        return CaseResult(False, f"`{fn}` did not return {what}"), None
    try:
        verdict = case.judge(value)
    except Exception as err:  # the check met a value of the wrong form (or has a bug: see the log)
        if log is not None:
            log.append(f"check of {fn} raised {type(err).__name__}: {err}")
        return CaseResult(False, f"`{fn}` returned a result of the wrong form"), None
    if verdict is True:
        return CaseResult(True, "passed"), value
    hint = verdict if isinstance(verdict, str) and verdict else "wrong result"
    return CaseResult(False, hint), value


def score_submission(student: str, lesson: LessonChecks, run: sandbox.SandboxResult,
                     source: str = "") -> Grade:
    """Score one sandbox run against the lesson's hidden checks (trusted, pure data)."""
    limits = lesson.limits
    max_bytes = limits.max_result_mb * 2**20
    frames, problem = parse_frames(run.stdout, run.nonce, max_bytes + 2**20)
    cells: dict | None = None
    calls: dict[int, dict] = {}
    invalid = done = runner_error = False
    log: list[str] = []
    after_calls = False  # a rerun after hidden calls could show text derived from hidden inputs
    for frame in frames:
        kind = frame["type"]
        if kind == "cells" and type(frame.get("cells")) is list:
            cells = {**frame, "after_calls": after_calls}
        elif kind == "call" and type(frame.get("index")) is int:
            after_calls = True
            calls.setdefault(frame["index"], frame)
        elif kind == "invalid":
            invalid = True
        elif kind == "runner-error":
            runner_error = True
            log.append(f"runner error: {frame.get('error')!r}")
        elif kind == "done":
            done = True
    notes: list[str] = []
    flags: set[str] = set()
    log.append(f"frames: {len(frames)}; problem: {problem}")
    if run.isolation == "none":
        notes.append(sandbox.WARNING)
    if problem:
        notes.append(f"The grader stopped reading your results early ({problem}).")
    if run.timed_out:
        flags.add("timeout")
        notes.append(f"Your notebook ran past the {limits.wall_s:g} s limit and was stopped; "
                     "only what finished before counts.")
    if cells is not None:
        notes += _cell_notes(cells, limits, flags)
    for frame in calls.values():
        if frame.get("status") == "died":
            flags.add("crashed")

    index = 0
    exercises: list[ExerciseResult] = []
    for ex_id, ex in lesson.exercises.items():
        results = []
        for case in ex.cases:
            result, _ = _call_message(calls.get(index), case, limits, max_bytes, log)
            results.append(result)
            index += 1
        passed = sum(r.passed for r in results)
        exercises.append(ExerciseResult(ex_id, round(ex.points * passed / len(results), 3),
                                        float(ex.points), results))
    if runner_error:
        flags.add("no-result")
        notes.append("The grader lost contact with your notebook's kernel; what came back before "
                     "counts.")
    if invalid:
        status = "invalid"
    elif cells is None and not run.timed_out:
        status = "no-result"
    else:
        status = next((s for s in STATUS_ORDER if s in flags), "ok")
        if not done and status == "ok":
            status = "no-result"
    return Grade(student, lesson.lesson, status, exercises, notes, log, run.seconds,
                 run.isolation, source)


def _is_memory(ename: Any, evalue: Any) -> bool:
    text = f"{ename} {evalue}".lower()
    return ename == "MemoryError" or "can't allocate memory" in text or "out of memory" in text


def _cell_notes(cells: dict, limits: Limits, flags: set[str]) -> list[str]:
    """Notes on the notebook run. Error messages and exit codes are the submission's own text, shown
    only from a run before any hidden call (afterwards they could carry hidden inputs out)."""
    notes = []
    quiet = cells["after_calls"]
    for cell in cells["cells"]:
        if type(cell) is not dict:
            continue
        number = cell.get("number")
        where = f"code cell {number}" if type(number) is int else "a code cell"
        ex = cell.get("exercise")
        if type(ex) is str:
            where += f" (exercise {ex})"
        first = cell.get("first_line")
        if type(first) is str and first:
            where += f" `{first}`"
        status = cell.get("status")
        if status == "error":
            ename, evalue = cell.get("ename", ""), cell.get("evalue", "")
            flags.add("memory" if _is_memory(ename, evalue) else "errors")
            if quiet:
                shown = ename if ename in KNOWN_EXCEPTIONS else "an exception"
                notes.append(f"{where} raised {shown} (when rerun after a kernel death)")
            else:
                notes.append(f"{where} raised {ename}: {evalue}")
        elif status == "timeout":
            flags.add("cell-timeout")
            notes.append(f"{where} ran past the {limits.cell_s:g} s limit per cell and was "
                         "interrupted")
        elif status == "died":
            code = None if quiet else cell.get("exit")
            how = (f" (signal {-code})" if type(code) is int and code < 0
                   else f" (exit code {code})" if type(code) is int else "")
            if cell.get("reason") == "ignored the interrupt":
                flags.add("cell-timeout")
                notes.append(f"{where} ignored the interrupt at its time limit; the kernel was "
                             "killed and the notebook rerun without this cell")
            else:
                flags.add("crashed")
                notes.append(f"{where} killed the kernel{how}; the notebook was rerun without it")
    return notes


# ---------------------------------------------------------------- finding and grading submissions
@dataclass(frozen=True)
class Submission:
    student: str
    lesson: str
    path: Path


def safe_name(name: str) -> str:
    """A student name fit for a file name and a CSV cell (no path tricks, no formulas)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")
    return cleaned[:80] or "student"


def find_submissions(root: Path, lessons: list[str], lesson: str | None = None
                     ) -> tuple[list[Submission], list[str]]:
    """Submissions laid out as ``root/<student>/<lesson>.ipynb`` (or ``root/<student>.ipynb`` with
    ``lesson`` given). A file counts for the lesson whose name starts it (``03_bert-Copy1.ipynb``);
    with several files for one student and lesson, the exact name wins, then the newest."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no submissions folder {root}")
    chosen: dict[tuple[str, str], Path] = {}
    skipped: list[str] = []
    names: dict[str, str] = {}

    def student_name(raw: str) -> str:
        name = safe_name(raw)
        base, n = name, 2
        while name in names and names[name] != raw:
            name, n = f"{base}-{n}", n + 1
        names[name] = raw
        return name

    def consider(student: str, path: Path) -> None:
        matches = [ls for ls in lessons if path.stem.startswith(ls)]
        if lesson is not None:
            matches = [lesson] if (lesson in matches or path.parent == root) else []
        if not matches:
            skipped.append(f"{path}: no hidden checks for this notebook name")
            return
        key = (student, max(matches, key=len))
        old = chosen.get(key)
        if old is None or _preferred(path, old, key[1]):
            if old is not None:
                skipped.append(f"{old}: another file of {student} for {key[1]} is graded")
            chosen[key] = path
        else:
            skipped.append(f"{path}: another file of {student} for {key[1]} is graded")

    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            student = student_name(entry.name)
            for nb in sorted(entry.rglob("*.ipynb")):
                if ".ipynb_checkpoints" not in nb.parts:
                    consider(student, nb)
        elif entry.suffix == ".ipynb":
            if lesson is None:
                skipped.append(f"{entry}: loose notebook; put it in a folder named after the "
                               "student, or pass --lesson")
            else:
                consider(student_name(entry.stem), entry)
    subs = [Submission(s, ls, p) for (s, ls), p in sorted(chosen.items())]
    return subs, skipped


def _preferred(new: Path, old: Path, lesson: str) -> bool:
    if (new.stem == lesson) != (old.stem == lesson):
        return new.stem == lesson
    return new.stat().st_mtime > old.stat().st_mtime


def build_request(lesson: LessonChecks, notebook_text: str) -> dict[str, Any]:
    calls = []
    for ex in lesson.exercises.values():
        for case in ex.cases:
            calls.append({"function": case.function, "args": encode_input(list(case.args)),
                          "kwargs": encode_input(dict(case.kwargs)), "returns": case.returns})
    return {"notebook": notebook_text, "parameters": lesson.parameters, "calls": calls}


def grade(
    submissions_dir: Path,
    out_dir: Path,
    checks_dir: Path,
    lesson: str | None = None,
    jobs: int | None = None,
    isolation: str | None = None,
    limits: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = print,
) -> list[Grade]:
    """Grade every submission in ``submissions_dir``; write grades.csv and feedback to ``out_dir``.

    ``limits`` overrides fields of each lesson's Limits (e.g. ``{"wall_s": 60}``).
    """
    say = progress or (lambda _msg: None)
    checks_dir, out_dir = Path(checks_dir).resolve(), Path(out_dir).resolve()
    submissions_dir = Path(submissions_dir).resolve()
    available = find_checks(checks_dir)
    if not available:
        raise FileNotFoundError(f"no hidden checks (*.py) in {checks_dir}")
    if lesson is not None and lesson not in available:
        raise ValueError(f"no hidden checks for lesson {lesson!r} in {checks_dir}")
    subs, skipped = find_submissions(submissions_dir, list(available), lesson)
    for line in skipped:
        say(f"skipped {line}")
    lessons = {name: load_checks(available[name]) for name in sorted({s.lesson for s in subs})}
    if limits:
        lessons = {k: LessonChecks(v.lesson, v.path, v.exercises, v.parameters,
                                   v.limits.replace(**limits)) for k, v in lessons.items()}
    for checks in lessons.values():  # an instructor's mistake fails here, not per student
        try:
            json.dumps(build_request(checks, ""), allow_nan=True)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{checks.path}: a hidden input cannot be sent: {err}") from None
    mode = sandbox.choose_isolation(isolation)
    if mode == "none":
        print("\n" + "!" * 78 + "\n" + sandbox.WARNING + "\n" + "!" * 78 + "\n", file=sys.stderr)
    elif mode == "unshare":
        print("note: bubblewrap not found; isolating with unshare + chroot instead",
              file=sys.stderr)
    secret = [checks_dir, out_dir, submissions_dir]
    jobs = max(1, jobs or min(8, os.cpu_count() or 1))
    slots = list(range(jobs))
    slot_lock = threading.Lock()
    done_count = [0]
    data_view: list[Path | None] = [None]  # the data folder the sandboxes see (set below)

    def one(sub: Submission) -> tuple[Grade, str]:
        with slot_lock:
            slot = slots.pop()
        checks = lessons[sub.lesson]
        try:
            notebook = sub.path.read_bytes()[: MAX_NOTEBOOK_BYTES + 1]
            if len(notebook) > MAX_NOTEBOOK_BYTES:
                notebook = b"{}"  # the runner reports it as invalid
            request = build_request(checks, notebook.decode("utf-8", errors="replace"))
            run = sandbox.run_in_sandbox(request, checks.limits, mode, slot=slot,
                                         secret_paths=secret, data=data_view[0])
            result, log = score_submission(sub.student, checks, run, str(sub.path)), run.log
        except Exception:  # a grader problem: this submission gets no grade, the others go on
            log = traceback.format_exc()
            result = Grade(sub.student, sub.lesson, "no-result",
                           [ExerciseResult(k, 0.0, float(v.points),
                                           [CaseResult(False, "not graded (grader error)")])
                            for k, v in checks.exercises.items()],
                           ["The grader failed on this submission; your instructor has the log."],
                           source=str(sub.path))
        finally:
            with slot_lock:
                slots.append(slot)
        with slot_lock:
            done_count[0] += 1
            say(f"[{done_count[0]}/{len(subs)}] {sub.student} {sub.lesson}: "
                f"{result.total:g}/{result.max_points:g} {result.status} ({result.seconds:.1f} s)")
        return result, log

    started = time.monotonic()
    with sandbox.readable_data(mode) as data, ThreadPoolExecutor(max_workers=jobs) as pool:
        data_view[0] = data
        outcomes = list(pool.map(one, subs))
    grades = [g for g, _ in outcomes]
    write_reports(out_dir, grades, lessons, [log for _, log in outcomes])
    say(f"graded {len(grades)} submission(s) in {time.monotonic() - started:.1f} s "
        f"({mode} isolation, {jobs} at a time) -> {out_dir / 'grades.csv'}, "
        f"{out_dir / 'feedback'}/")
    return grades


# ---------------------------------------------------------------- reports
def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def feedback_text(student: str, grades: list[Grade]) -> str:
    """The feedback file of one student (all their lessons)."""
    lines = [f"# Grading feedback for {student}", ""]
    for g in grades:
        lines += [f"## {g.lesson}: {g.total:g} / {g.max_points:g} points", "",
                  f"Status: **{g.status}** ({STATUS_TEXT.get(g.status, g.status)}).", ""]
        for ex in g.exercises:
            passed = sum(c.passed for c in ex.cases)
            lines.append(f"- **{ex.id}**: {ex.points:g} / {ex.max_points:g} points "
                         f"({passed} of {len(ex.cases)} hidden cases passed)")
            for number, case in enumerate(ex.cases, start=1):
                if not case.passed:
                    lines.append(f"    - case {number}: {case.message}")
        if g.notes:
            lines += ["", "Running your notebook:"]
            lines += [f"- {note}" for note in g.notes]
        lines.append("")
    return "\n".join(lines)


def write_reports(out_dir: Path, grades: list[Grade], lessons: dict[str, LessonChecks],
                  logs: list[str]) -> None:
    """grades.csv, feedback/<student>.md, results.json and logs/ (only the trusted side writes)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = [ex for ls in lessons.values() for ex in ls.exercises]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["student", "lesson", "status", *columns, "total", "max_points"])
    for g in grades:
        points = {e.id: f"{e.points:g}" for e in g.exercises}
        writer.writerow([g.student, g.lesson, g.status, *[points.get(c, "") for c in columns],
                         f"{g.total:g}", f"{g.max_points:g}"])
    _atomic_write(out_dir / "grades.csv", buffer.getvalue())
    by_student: dict[str, list[Grade]] = {}
    for g in grades:
        by_student.setdefault(g.student, []).append(g)
    for student, own in by_student.items():
        _atomic_write(out_dir / "feedback" / f"{student}.md", feedback_text(student, own))
    for g, log in zip(grades, logs, strict=True):
        _atomic_write(out_dir / "logs" / f"{g.student}__{g.lesson}.log",
                      f"source: {g.source}\nseconds: {g.seconds:.2f}\nstatus: {g.status}\n"
                      + "".join(f"{line}\n" for line in g.log) + log)
    _atomic_write(out_dir / "results.json",
                  json.dumps([{**asdict(g), "total": g.total, "max_points": g.max_points}
                              for g in grades], indent=1))
