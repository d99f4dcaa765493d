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

import contextlib
import csv
import errno
import io
import json
import math
import os
import re
import stat
import sys
import threading
import time
import traceback
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nblib.grading import host
from nblib.grading.checks import (
    EXERCISE_ID,
    Case,
    LessonChecks,
    Limits,
    find_checks,
    load_checks,
)
from nblib.grading.isolation import (
    ISOLATIONS,
    UNSAFE,
    WARNING,
    SandboxUnavailable,
    choose_isolation,
    unavailable_reasons,
    why_unavailable,
)
from nblib.grading.launch import readable_data
from nblib.grading.runner import FRAME_TAG
from nblib.grading.sandbox import SandboxResult, run_in_sandbox
from nblib.grading.uids import UidBusy, UidPool

MAX_JSON_DEPTH = 200
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_JSON_BRACKET = re.compile(r"[\[\]{}]")
MAX_NOTEBOOK_BYTES = 64 * 2**20
TENSOR_DTYPES = ("bool", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16",
                 "float32", "float64")
MAX_TENSOR_ELEMENTS = 10**7
# What a student is told about a hidden call that raised: one of these fixed categories, never the
# exception's own name or text (a submission could pick among many types, or write the message,
# to carry a hidden input out in the feedback). NotImplementedError means "not written yet".
EXCEPTION_CATEGORIES = {"NotImplementedError": "raised NotImplementedError (not written yet)"}
OTHER_EXCEPTION = "raised an exception"
MAX_NOTE = 200  # characters of a notebook's own error text shown in its feedback (one line)
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
    "refused": "the file was not read (see the reason column of grades.csv)",
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


def decode_weights(obj: Any, budget: list[int] | None = None) -> dict[str, Any]:
    """A state dict sent back as plain data: ``{"__weights__": <dict of name -> tensor>}``.

    Rebuilt by :func:`decode_value` (exact types, element counts checked before anything is
    allocated): no pickle and no zip are ever opened on the trusted side, so a few bytes cannot
    inflate into gigabytes here.
    """
    import torch

    if type(obj) is not dict or set(obj) != {"__weights__"}:
        raise UntrustedDataError("not a state dict")
    state = decode_value(obj["__weights__"], budget)
    if type(state) is not dict:
        raise UntrustedDataError("not a state dict")
    for key, value in state.items():
        if type(key) is not str or type(value) is not torch.Tensor:
            raise UntrustedDataError("a state dict holds only named tensors")
    return state


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
    reason: str = ""  # why the submission was refused (status "refused"), for grades.csv

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
            shown = EXCEPTION_CATEGORIES.get(result.get("exception"), OTHER_EXCEPTION)
            return CaseResult(False, f"`{fn}` {shown}"), None
        if error == "tampered":
            return CaseResult(False, f"`{fn}` turned off the grader's profiler or started another "
                                     "program while graded (no points)"), None
        if error == "reference":
            return CaseResult(False, f"`{fn}` called the library's own version of this exercise; "
                                     "write it yourself (no points)"), None
        if error == "interrupted":
            return CaseResult(False, f"`{fn}` ran past the {limits.call_s:g} s limit per call"), None
        if error == "unsupported" and result.get("type") == "too-large":
            return CaseResult(False, f"`{fn}` returned a value too large to send back"), None
        if error == "unsupported":
            return CaseResult(False, f"`{fn}` returned something that is not plain data: "
                                     "return None, bool, int, float, str, lists, dicts or tensors"
                                     + (" (a module or state dict here)"
                                        if case.returns == "weights" else "")), None
        return CaseResult(False, "no result came back"), None
    try:
        if case.returns == "weights":
            value = decode_weights(result.get("value"))
        else:
            value = decode_value(result.get("value"))
    except UntrustedDataError:
        what = "a module or a state dict of tensors" if case.returns == "weights" else "plain data"
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


def score_submission(student: str, lesson: LessonChecks, run: SandboxResult,
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
    if run.isolation == UNSAFE:
        notes.append(WARNING)
    if run.memory_kills:
        flags.add("memory")
        notes.append(f"Your notebook's processes together used more than the "
                     f"{limits.total_memory_mb} MB allowed; the largest was stopped.")
    if run.cpu_exceeded:
        notes.append(f"Your notebook's processes used up their {limits.cpu_s:g} CPU seconds and "
                     "were stopped; only what finished before counts.")
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


def one_line(text: Any, limit: int = MAX_NOTE) -> str:
    """A submission's own text made safe to quote in its feedback: one line, no control or
    formatting characters that could fake a line of the report, shortened, in a code span."""
    text = str(text)
    text = "".join(" " if (unicodedata.category(c)[0] in "CZ" and c != " ") else c for c in text)
    text = " ".join(text.replace("`", "'").split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"`{text}`" if text else "``"


def _exception_name(name: Any) -> str:
    return name if type(name) is str and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]{0,60}", name) else "an exception"


def _cell_notes(cells: dict, limits: Limits, flags: set[str]) -> list[str]:
    """Notes on the notebook run. Error messages and exit codes are the submission's own text, shown
    (on one line, quoted) only from a run before any hidden call (afterwards they could carry
    hidden inputs out); after one, only fixed words."""
    notes = []
    quiet = cells["after_calls"]
    for cell in cells["cells"]:
        if type(cell) is not dict:
            continue
        number = cell.get("number")
        where = f"code cell {number}" if type(number) is int and 0 < number < 10**6 else "a code cell"
        ex = cell.get("exercise")
        if type(ex) is str and EXERCISE_ID.match(ex):
            where += f" (exercise {ex})"
        first = cell.get("first_line")
        if type(first) is str and first.strip() and not quiet:
            where += " " + one_line(first, 80)
        status = cell.get("status")
        if status == "error":
            ename, evalue = cell.get("ename", ""), cell.get("evalue", "")
            flags.add("memory" if _is_memory(ename, evalue) else "errors")
            if quiet:
                shown = EXCEPTION_CATEGORIES.get(ename, OTHER_EXCEPTION)
                notes.append(f"{where} {shown} (when rerun after a kernel death)")
            else:
                notes.append(f"{where} raised {_exception_name(ename)}: {one_line(evalue)}")
        elif status == "timeout":
            flags.add("cell-timeout")
            notes.append(f"{where} ran past the {limits.cell_s:g} s limit per cell and was "
                         "interrupted")
        elif status == "died":
            code = None if quiet else cell.get("exit")
            how = (f" (signal {-code})" if type(code) is int and -256 < code < 0
                   else f" (exit code {code})" if type(code) is int and 0 <= code < 256 else "")
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
    student: str  # the folder's name as given (or the loose file's stem)
    lesson: str  # "" when a refused folder's lesson is unknown
    path: Path
    refused: str = ""  # why it will not be read; a row in grades.csv says so


class Refused(Exception):
    """A submission file the trusted side will not read (the message is the reason)."""


_UNSAFE_IN_FILE_NAMES = set('/\\%:*?"<>|')


def file_name(student: str) -> str:
    """The student's name as a file name, reversibly: Unicode stays, only characters unsafe in a
    path (``/ \\ % : * ? " < > |``, control characters, a leading dot) become ``%XX`` (UTF-8).
    Distinct names give distinct file names; ``urllib.parse.unquote`` gives the name back (for
    names over 200 bytes, a hash keeps them distinct)."""
    import hashlib

    out = []
    for index, char in enumerate(student):
        if (char in _UNSAFE_IN_FILE_NAMES or unicodedata.category(char)[0] == "C"
                or (index == 0 and char in ".-") or (char == " " and index in (0, len(student) - 1))):
            out.append("".join(f"%{b:02X}" for b in char.encode("utf-8")))
        else:
            out.append(char)
    name = "".join(out) or "%00"
    if len(name.encode("utf-8")) > 200:
        digest = hashlib.sha256(student.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        name = name.encode("utf-8")[:150].decode("utf-8", "ignore") + "~" + digest
    return name


def find_submissions(root: Path, lessons: list[str], lesson: str | None = None
                     ) -> tuple[list[Submission], list[str]]:
    """Submissions laid out as ``root/<student>/<lesson>.ipynb`` (or ``root/<student>.ipynb`` with
    ``lesson`` given). A file counts for the lesson whose name starts it (``03_bert-Copy1.ipynb``);
    with several files for one student and lesson, the exact name wins, then the newest.

    Nothing is followed or opened here (``lstat`` only): a symbolic link, a FIFO, a device or any
    other non-regular file named like a lesson becomes a refused submission (a row in grades.csv
    with its reason) unless the student also has a regular file for that lesson. Everything else
    left out is listed in the second return value (dot-folders included).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no submissions folder {root}")
    candidates: dict[tuple[str, str], list[tuple[Path, str]]] = {}  # -> [(path, refusal)]
    refused_folders: list[Submission] = []
    skipped: list[str] = []

    def lesson_of(path: Path, loose: bool) -> str | None:
        matches = [ls for ls in lessons if path.stem.startswith(ls)]
        if lesson is not None:
            return lesson if (lesson in matches or loose) else None
        return max(matches, key=len) if matches else None

    def kind(info: os.stat_result) -> str:
        if stat.S_ISLNK(info.st_mode):
            return "a symbolic link: links are not followed; submit the file itself"
        if stat.S_ISFIFO(info.st_mode):
            return "a named pipe, not a regular file"
        if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
            return "a device, not a regular file"
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file"
        return ""

    def consider(student: str, path: Path, info: os.stat_result, loose: bool = False) -> None:
        matched = lesson_of(path, loose)
        if matched is None:
            skipped.append(f"{path}: no hidden checks for this notebook name")
            return
        candidates.setdefault((student, matched), []).append((path, kind(info)))

    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        path = Path(entry.path)
        if entry.name.startswith("."):
            skipped.append(f"{path}: its name starts with '.', so it is not read as a student's "
                           "folder (rename it to grade it)")
            continue
        info = os.lstat(path)
        if stat.S_ISDIR(info.st_mode):
            for folder, dirs, files in os.walk(path, followlinks=False):
                dirs[:] = sorted(d for d in dirs if d != ".ipynb_checkpoints")
                for name in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
                    inner = Path(folder) / name
                    inner_info = os.lstat(inner)
                    if name.endswith(".ipynb") or stat.S_ISLNK(inner_info.st_mode):
                        consider(entry.name, inner, inner_info)
        elif entry.name.endswith(".ipynb") and lesson is not None:
            consider(path.stem, path, info, loose=True)
        elif entry.name.endswith(".ipynb"):
            skipped.append(f"{path}: loose notebook; put it in a folder named after the "
                           "student, or pass --lesson")
        elif stat.S_ISLNK(info.st_mode):
            refused_folders.append(Submission(entry.name, "", path, kind(info)))
        else:
            skipped.append(f"{path}: not a folder or a notebook")

    subs: list[Submission] = list(refused_folders)
    for (student, matched), found in sorted(candidates.items()):
        readable = [p for p, why in found if not why]
        if readable:
            best = max(readable, key=lambda p: (p.stem == matched, os.lstat(p).st_mtime, str(p)))
            subs.append(Submission(student, matched, best))
            skipped += [f"{p}: another file of {student} for {matched} is graded"
                        for p, _ in found if p != best]
        else:
            path, why = found[0]
            subs.append(Submission(student, matched, path, why))
            skipped += [f"{p}: {w}" for p, w in found[1:]]
    subs.sort(key=lambda s: (s.student, s.lesson))
    return subs, skipped


def read_submission(root: Path, path: Path, max_bytes: int = MAX_NOTEBOOK_BYTES,
                    forbidden: set[tuple[int, int]] | None = None) -> bytes:
    """The bytes of one submission, read without following any link below ``root``.

    Every folder on the way is opened with ``O_NOFOLLOW``, the file too (and ``O_NONBLOCK``: a
    FIFO cannot stall us); it must be a regular file with a single name, not one of the files in
    ``forbidden`` (the course's own notebooks, by device and inode), and at most ``max_bytes``
    long, counted while reading. :class:`Refused` says why not.
    """
    rel = Path(path).relative_to(root)
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in rel.parts[:-1]:
            try:
                inner = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
            except OSError:
                raise Refused(f"its folder {part} is not a plain folder (a link?)") from None
            os.close(fd)
            fd = inner
        try:
            file_fd = os.open(rel.parts[-1], flags | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=fd)
        except OSError as err:
            raise Refused("a symbolic link: links are not followed; submit the file itself"
                          if err.errno == errno.ELOOP else f"cannot be opened ({err.strerror})") from None
    finally:
        os.close(fd)
    try:
        info = os.fstat(file_fd)
        if not stat.S_ISREG(info.st_mode):
            raise Refused("not a regular file")
        if info.st_nlink > 1:
            raise Refused("a hard link to another file; submit a copy of your own")
        if forbidden and (info.st_dev, info.st_ino) in forbidden:
            raise Refused("the course's own lesson notebook, not a submission")
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(file_fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:
            raise Refused(f"larger than {max_bytes // 2**20} MB")
        return b"".join(chunks)
    finally:
        os.close(file_fd)


def build_request(lesson: LessonChecks, notebook_text: str) -> dict[str, Any]:
    calls = []
    for ex in lesson.exercises.values():
        references = ex.reference_targets()
        for case in ex.cases:
            calls.append({"function": case.function, "args": encode_input(list(case.args)),
                          "kwargs": encode_input(dict(case.kwargs)), "returns": case.returns,
                          "references": references})
    return {"notebook": notebook_text, "parameters": lesson.parameters, "calls": calls}


def _check_folders(submissions_dir: Path, course_notebooks: Path | None) -> set[tuple[int, int]]:
    """The submissions folder may not be, hold or lie in the course's notebooks/ (the solution
    source). Returns the (device, inode) of each course notebook, refused if found below."""
    if course_notebooks is None or not Path(course_notebooks).is_dir():
        return set()
    course = Path(course_notebooks).resolve()
    if submissions_dir == course or course in submissions_dir.parents or submissions_dir in course.parents:
        raise ValueError(f"the submissions folder {submissions_dir} is, holds or lies in the "
                         f"course's notebooks folder {course}; put the submissions elsewhere")
    found = set()
    for nb in course.glob("*.ipynb"):
        with contextlib.suppress(OSError):
            info = nb.stat()
            found.add((info.st_dev, info.st_ino))
    return found


def _zero_grade(sub: Submission, checks: LessonChecks | None, status: str, message: str,
                notes: list[str], reason: str = "") -> Grade:
    exercises = [ExerciseResult(k, 0.0, float(v.points), [CaseResult(False, message)])
                 for k, v in (checks.exercises.items() if checks else [])]
    return Grade(sub.student, sub.lesson, status, exercises, notes, source=str(sub.path),
                 reason=reason)


def grade(
    submissions_dir: Path,
    out_dir: Path,
    checks_dir: Path,
    lesson: str | None = None,
    jobs: int | None = None,
    isolation: str | None = None,
    limits: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = print,
    allow_unsafe: bool = False,
    course_notebooks: Path | None | str = "default",
) -> list[Grade]:
    """Grade every submission in ``submissions_dir``; write grades.csv and feedback to ``out_dir``.

    ``limits`` overrides fields of each lesson's Limits (e.g. ``{"wall_s": 60}``). ``isolation``
    "none" runs submissions unsandboxed and needs ``allow_unsafe`` (``--unsafe-no-sandbox``).
    ``course_notebooks``: the lessons' own folder, which the submissions folder may not be or hold.
    """
    say = progress or (lambda _msg: None)
    checks_dir, out_dir = Path(checks_dir).resolve(), Path(out_dir).resolve()
    submissions_dir = Path(submissions_dir).resolve()
    if course_notebooks == "default":
        course_notebooks = Path(__file__).resolve().parents[2] / "notebooks"
    forbidden = _check_folders(submissions_dir, course_notebooks)
    available = find_checks(checks_dir)
    if not available:
        raise FileNotFoundError(f"no hidden checks (*.py) in {checks_dir}")
    if lesson is not None and lesson not in available:
        raise ValueError(f"no hidden checks for lesson {lesson!r} in {checks_dir}")
    mode = choose_isolation(isolation, allow_unsafe=allow_unsafe)
    subs, skipped = find_submissions(submissions_dir, list(available), lesson)
    for line in skipped:
        say(f"skipped {line}")
    lessons = {name: load_checks(available[name]) for name in sorted({s.lesson for s in subs if s.lesson})}
    if limits:
        lessons = {k: LessonChecks(v.lesson, v.path, v.exercises, v.parameters,
                                   v.limits.replace(**limits)) for k, v in lessons.items()}
    for checks in lessons.values():  # an instructor's mistake fails here, not per student
        try:
            json.dumps(build_request(checks, ""), allow_nan=True)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{checks.path}: a hidden input cannot be sent: {err}") from None
    if mode == UNSAFE:
        print("\n" + "!" * 78 + "\n" + WARNING + "\nWhy no sandbox: "
              + unavailable_reasons() + "\n" + "!" * 78 + "\n", file=sys.stderr)
    elif mode == "unshare":
        print(f"note: isolating with unshare + chroot (bwrap: {why_unavailable('bwrap')})",
              file=sys.stderr)
    secret = [checks_dir, out_dir, submissions_dir]
    jobs = max(1, jobs or min(8, os.cpu_count() or 1))
    pool = UidPool() if mode in ISOLATIONS and os.geteuid() == 0 else None
    count_lock = threading.Lock()
    done_count = [0]
    data_view: list[Path | None] = [None]  # the data folder the sandboxes see (set below)

    def run(sub: Submission, checks: LessonChecks, notebook: bytes) -> SandboxResult:
        request = build_request(checks, notebook.decode("utf-8", errors="replace"))
        for _attempt in range(5):  # a busy uid is the machine's problem, never the student's
            uid = pool.acquire() if pool is not None else None
            try:
                result = run_in_sandbox(request, checks.limits, mode, uid=uid,
                                                secret_paths=secret, data=data_view[0])
            except UidBusy:
                pool.release(uid, clean=False)
                continue
            except BaseException:
                if pool is not None:
                    pool.release(uid, clean=not host.processes_of(uid))
                raise
            if pool is not None:
                pool.release(uid, result.clean)
            return result
        raise SandboxUnavailable("no free sandbox uid after 5 tries")

    def one(sub: Submission) -> tuple[Grade, str]:
        checks = lessons.get(sub.lesson)
        log = ""
        try:
            if sub.refused:
                raise Refused(sub.refused)
            notebook = read_submission(submissions_dir, sub.path, forbidden=forbidden)
            result_run = run(sub, checks, notebook)
            result, log = score_submission(sub.student, checks, result_run, str(sub.path)), result_run.log
        except Refused as why:
            reason = one_line(str(why))[1:-1]
            result = _zero_grade(sub, checks, "refused", "not graded: the file was not read",
                                 [f"Your submission was not read: {reason}."], reason)
        except Exception:  # a grader problem: this submission gets no grade, the others go on
            log = traceback.format_exc()
            result = _zero_grade(sub, checks, "no-result", "not graded (grader error)",
                                 ["The grader failed on this submission; your instructor has the log."])
        with count_lock:
            done_count[0] += 1
            say(f"[{done_count[0]}/{len(subs)}] {one_line(sub.student, 80)[1:-1]} {sub.lesson}: "
                f"{result.total:g}/{result.max_points:g} {result.status} ({result.seconds:.1f} s)"
                + (f" - {result.reason}" if result.reason else ""))
        return result, log

    started = time.monotonic()
    try:
        with readable_data(mode) as data, ThreadPoolExecutor(max_workers=jobs) as executor:
            data_view[0] = data
            outcomes = list(executor.map(one, subs))
    finally:
        if pool is not None:
            pool.close()
    grades = [g for g, _ in outcomes]
    write_reports(out_dir, grades, lessons, [log for _, log in outcomes], skipped)
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
    lines = [f"# Grading feedback for {one_line(student, 120)}", ""]
    for g in grades:
        lines += [f"## {g.lesson or '(no lesson)'}: {g.total:g} / {g.max_points:g} points", "",
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


def csv_cell(text: str) -> str:
    """A name as given, except that a leading = + - @ (a spreadsheet formula) gets a ' first."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def write_reports(out_dir: Path, grades: list[Grade], lessons: dict[str, LessonChecks],
                  logs: list[str], skipped: list[str] | None = None) -> None:
    """grades.csv, feedback/<student>.md, results.json, skipped.txt and logs/ (trusted side only).

    File names are :func:`file_name` of the student's name, so no two students share a file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = [ex for ls in lessons.values() for ex in ls.exercises]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["student", "lesson", "status", *columns, "total", "max_points", "reason"])
    for g in grades:
        points = {e.id: f"{e.points:g}" for e in g.exercises}
        writer.writerow([csv_cell(g.student), g.lesson, g.status,
                         *[points.get(c, "") for c in columns],
                         f"{g.total:g}", f"{g.max_points:g}", g.reason])
    _atomic_write(out_dir / "grades.csv", buffer.getvalue())
    by_student: dict[str, list[Grade]] = {}
    for g in grades:
        by_student.setdefault(g.student, []).append(g)
    for student, own in by_student.items():
        _atomic_write(out_dir / "feedback" / f"{file_name(student)}.md", feedback_text(student, own))
    for g, log in zip(grades, logs, strict=True):
        _atomic_write(out_dir / "logs" / f"{file_name(g.student)}__{g.lesson or 'none'}.log",
                      f"student: {g.student!r}\nsource: {g.source}\nseconds: {g.seconds:.2f}\n"
                      f"status: {g.status}\n" + "".join(f"{line}\n" for line in g.log) + log)
    _atomic_write(out_dir / "skipped.txt", "".join(f"{line}\n" for line in skipped or []))
    _atomic_write(out_dir / "results.json",
                  json.dumps([{**asdict(g), "total": g.total, "max_points": g.max_points}
                              for g in grades], indent=1, ensure_ascii=False))
