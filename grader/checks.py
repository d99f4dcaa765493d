"""How an instructor writes the hidden checks of one lesson (trusted code, never in a notebook).

One module per lesson, ``grader/hidden/<notebook stem>.py``, defines ``EXERCISES``: for each
exercise id (the id in the exercise cell's metadata) its points and its cases. A case names a
function of the student's notebook, the hidden inputs to call it with (plain values or tensors,
built here, in the trusted process) and how to judge what comes back::

    from grader import Case, Exercise

    EXERCISES = {
        "03-mask": Exercise(points=2, cases=[
            Case("causal_mask", args=(4,), expect=torch.ones(4, 4, dtype=torch.bool).tril()),
            Case("causal_mask", args=(1,), check=lambda got: ...),   # your own judge
        ]),
        "03-fit": Exercise(points=3, cases=[
            Case("fit_line", args=(xs, ys), returns="weights", check=loss_is_small),
        ]),
    }

Optional module constants: ``PARAMETERS`` (literals injected after the notebook's ``parameters``
cell, on top of ``PRESET="smoke"``) and ``LIMITS`` (a :class:`Limits`).

A student scores ``points * passed_cases / len(cases)`` per exercise. Only plain values leave the
student's kernel: None, bool, int, float, str, lists, dicts and tensors (rebuilt here from their
values); ``returns="weights"`` brings back a state dict saved weights-only and reloaded with
``torch.load(weights_only=True)``, which your ``check`` then evaluates (on hidden data if you like).

Introduced for the graded exercises of the lessons (see docs/grading.md).
"""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXERCISE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
RETURN_KINDS = ("value", "weights")
_NO_EXPECT = object()
PACKAGE_DIR = Path(__file__).resolve().parent
HIDDEN_DIR = PACKAGE_DIR / "hidden"  # the course's own hidden checks (``--checks`` picks others)
COURSE_NOTEBOOKS = PACKAGE_DIR.parent / "notebooks"  # the lessons (the solution source) in the checkout


@dataclass(frozen=True)
class Limits:
    """What one submission may use. Defaults suit a lesson in the smoke preset on a laptop.

    ``memory_mb`` bounds each process (RLIMIT_AS: a cell that allocates too much gets a
    MemoryError); ``total_memory_mb`` bounds all the submission's processes together (a cgroup, or
    the grader's watchdog, kills the largest above it); ``cpus`` is the CPU quota (cgroup) and
    ``cpu_s`` the CPU seconds all its processes may use in all (default ``wall_s * cpus``).
    """

    wall_s: float = 300.0  # the whole submission: notebook + hidden calls; then everything is killed
    cell_s: float = 120.0  # one notebook cell; then the kernel is interrupted and the next cell runs
    call_s: float = 30.0  # one call of a student function on hidden inputs
    memory_mb: int = 4096  # address space of each process (RLIMIT_AS); torch alone maps ~1 GB
    total_memory_mb: int = 3072  # resident memory of all the submission's processes together
    cpus: float = 1.0  # CPU quota of the whole submission (where a cgroup can enforce it)
    cpu_s: float | None = None  # CPU seconds of all its processes together (default wall_s * cpus)
    nproc: int = 256  # processes + threads of the submission (RLIMIT_NPROC / pids.max): no fork bombs
    fsize_mb: int = 256  # largest file the submission may write (RLIMIT_FSIZE)
    tmpfs_mb: int = 1024  # size of the private scratch filesystem (bwrap)
    max_restarts: int = 2  # kernel deaths survived: rerun the notebook without the killing cell
    max_result_mb: int = 32  # largest single value sent back for one call

    def __post_init__(self) -> None:
        if self.cpu_s is None:
            object.__setattr__(self, "cpu_s", float(self.wall_s) * float(self.cpus) + 10.0)

    def replace(self, **changes: Any) -> Limits:
        import dataclasses

        if "wall_s" in changes or "cpus" in changes:  # a derived default follows its inputs
            changes.setdefault("cpu_s", None)
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Case:
    """One hidden call: ``function(*args, **kwargs)`` in the student's kernel, judged here.

    function: a name defined by the notebook, optionally dotted (``"tokenizer.encode"``).
    expect:   the right answer; compared with :func:`same` (exact types, float tolerance).
    check:    instead of ``expect``: ``check(value) -> bool | str`` (a str fails with that hint;
              never put the hidden input or the expected value in it).
    returns:  "value" (plain values) or "weights" (a module or state dict, reloaded weights-only).
    """

    function: str
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    expect: Any = _NO_EXPECT
    check: Callable[[Any], bool | str] | None = None
    returns: str = "value"

    def __post_init__(self) -> None:
        if not FUNCTION_NAME.match(self.function):
            raise ValueError(f"Case.function must be a (dotted) Python name, got {self.function!r}")
        if self.returns not in RETURN_KINDS:
            raise ValueError(f"Case.returns must be one of {RETURN_KINDS}, got {self.returns!r}")
        if (self.check is None) == (self.expect is _NO_EXPECT):
            raise ValueError(f"Case({self.function!r}): give exactly one of expect= or check=")
        if self.returns == "weights" and self.check is None:
            raise ValueError(f"Case({self.function!r}): returns='weights' needs a check= function")
        if self.expect is not _NO_EXPECT:
            _require_comparable(self.expect, f"Case({self.function!r}).expect")

    def judge(self, value: Any) -> bool | str:
        """Trusted: True if ``value`` (already decoded from plain data) passes this case."""
        if self.check is not None:
            return self.check(value)
        return same(value, self.expect)


def close_to(expected: Any, rtol: float = 1e-4, atol: float = 1e-5) -> Callable[[Any], bool | str]:
    """A ``check=`` for float tensors a student may compute another way (other op order, other
    masking constant): same type, dtype and shape, values within a tolerance looser than :func:`same`'s."""
    import torch

    def judge(got: Any) -> bool | str:
        if type(got) is not torch.Tensor or got.dtype != expected.dtype or got.shape != expected.shape:
            return "expected a tensor of the right dtype and shape"  # never the hidden shape itself
        return bool(torch.allclose(got, expected, rtol=rtol, atol=atol)) or "values differ"

    return judge


@dataclass(frozen=True)
class Exercise:
    """Points and hidden cases of one exercise; partial credit per passed case.

    references: the library's own versions of what the exercise asks for: the functions or
    classes themselves (``[truncate]``, a class such as ``ScalarMix`` covers its methods) or their
    dotted names (``"nblib.data.text.truncate"``).
    While a hidden case of this exercise runs, calling one of them from the student's function
    (directly, through a wrapper, a ``functools.partial``, a copy of its code or a reloaded module)
    makes the case fail: returning or wrapping the library's answer earns nothing. Outside the
    hidden calls the notebook may use them freely (a lesson checks its piece against the library's,
    then uses the library's).
    """

    points: float
    cases: Sequence[Case]
    references: Sequence[Any] = ()

    def __post_init__(self) -> None:
        if not (isinstance(self.points, int | float) and self.points > 0):
            raise ValueError(f"Exercise.points must be a positive number, got {self.points!r}")
        if not self.cases:
            raise ValueError("an Exercise needs at least one Case")
        if isinstance(self.references, str) or callable(self.references):
            raise ValueError("Exercise.references must be a list (of functions, classes or names)")
        for ref in self.references:
            reference_target(ref)  # fails here, when the checks load, if it does not exist

    def reference_targets(self) -> list[list[str]]:
        return [reference_target(ref) for ref in self.references]


def reference_target(ref: Any) -> list[str]:
    """Where a reference's code lives: ``[file, qualified name, "exact" | "prefix"]`` (trusted).

    The sandbox sees the library at the same path, so it can recognise the reference's code by
    file and qualified name, however the student got hold of it.
    """
    import importlib

    if not isinstance(ref, str):
        return _target_of(ref, repr(ref))
    name = ref
    if not (FUNCTION_NAME.match(name) and "." in name):
        raise ValueError(f"Exercise.references: {name!r} is not a dotted name like "
                         "'nblib.data.text.truncate'")
    module_name, _, attr = name.rpartition(".")
    obj: Any = None
    while module_name:
        try:
            obj = importlib.import_module(module_name)
            break
        except ImportError:
            module_name, _, head = module_name.rpartition(".")
            attr = f"{head}.{attr}"
    if obj is None:
        raise ValueError(f"reference {name!r}: no such module")
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ValueError(f"reference {name!r}: {module_name} has no {attr}")
    return _target_of(obj, name)


def _target_of(obj: Any, name: str) -> list[str]:
    import inspect

    obj = inspect.unwrap(obj)
    if inspect.isclass(obj):
        return [str(Path(inspect.getfile(obj)).resolve()), obj.__qualname__ + ".", "prefix"]
    code = getattr(obj, "__code__", None)
    if code is None:
        raise ValueError(f"reference {name!r} is neither a Python function nor a class")
    return [str(Path(code.co_filename).resolve()), code.co_qualname, "exact"]


@dataclass(frozen=True)
class LessonChecks:
    """The loaded hidden checks of one lesson."""

    lesson: str  # the notebook stem, e.g. "03_bert"
    path: Path
    exercises: dict[str, Exercise]
    parameters: dict[str, Any]
    limits: Limits

    @property
    def max_points(self) -> float:
        return float(sum(ex.points for ex in self.exercises.values()))


DEFAULT_PARAMETERS: dict[str, Any] = {"PRESET": "smoke", "FIGURES": "figures"}


def load_checks(path: Path) -> LessonChecks:
    """Import a hidden-checks module by path (trusted code) and validate what it defines."""
    path = Path(path)
    name = f"_nblib_hidden_checks_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import hidden checks {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses defined in the module need it while it executes
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    exercises = getattr(module, "EXERCISES", None)
    if not isinstance(exercises, dict) or not exercises:
        raise ValueError(f"{path} must define EXERCISES = {{'id': Exercise(...), ...}}")
    for ex_id, ex in exercises.items():
        if not isinstance(ex_id, str) or not EXERCISE_ID.match(ex_id):
            raise ValueError(f"{path}: bad exercise id {ex_id!r} (letters, digits, '-', '_', '.')")
        if not isinstance(ex, Exercise):
            raise ValueError(f"{path}: EXERCISES[{ex_id!r}] must be an Exercise, got {type(ex)}")
    parameters = {**DEFAULT_PARAMETERS, **dict(getattr(module, "PARAMETERS", {}))}
    for key, value in parameters.items():
        if not key.isidentifier():
            raise ValueError(f"{path}: PARAMETERS key {key!r} is not a Python name")
        _require_literal(value, f"{path}: PARAMETERS[{key!r}]")
    limits = getattr(module, "LIMITS", Limits())
    if not isinstance(limits, Limits):
        raise ValueError(f"{path}: LIMITS must be a grader.Limits")
    return LessonChecks(path.stem, path, dict(exercises), parameters, limits)


def find_checks(checks_dir: Path) -> dict[str, Path]:
    """Every lesson that has hidden checks: ``{notebook stem: module path}``."""
    checks_dir = Path(checks_dir)
    if not checks_dir.is_dir():
        return {}
    return {p.stem: p for p in sorted(checks_dir.glob("*.py")) if not p.name.startswith("_")}


def _require_literal(value: Any, where: str) -> None:
    if value is None or type(value) in (bool, int, float, str):
        return
    if type(value) in (list, tuple):
        for v in value:
            _require_literal(v, where)
        return
    if type(value) is dict:
        for k, v in value.items():
            _require_literal(k, where)
            _require_literal(v, where)
        return
    raise ValueError(f"{where} must be a literal (None, bool, int, float, str, list, dict)")


def _require_comparable(value: Any, where: str) -> None:
    """What :func:`same` can compare: literals, lists, tuples, dicts and tensors."""
    if type(value) in (list, tuple):
        for v in value:
            _require_comparable(v, where)
    elif type(value) is dict:
        for k, v in value.items():
            _require_literal(k, where)
            _require_comparable(v, where)
    elif type(value).__name__ in ("Tensor", "Parameter") and type(value).__module__.startswith("torch"):
        return
    else:
        _require_literal(value, where)


def same(got: Any, expected: Any, rel: float = 1e-6, abs_tol: float = 1e-8) -> bool:
    """Strict equality for plain values and tensors: exact types, floats within a tolerance.

    ``True`` never equals ``1``; an int is accepted where a float is expected (not the reverse);
    a tuple in ``expected`` means a list (plain data has no tuples); tensors need the same dtype
    and shape. ``got`` comes from the decoder, so it holds only genuine built-in values.
    """
    import torch

    if type(expected) is bool or expected is None:
        return type(got) is type(expected) and got == expected
    if type(expected) is int:
        return type(got) is int and got == expected
    if type(expected) is float:
        if type(got) not in (int, float):
            return False
        if math.isnan(expected):
            return isinstance(got, float) and math.isnan(got)
        return math.isclose(got, expected, rel_tol=rel, abs_tol=abs_tol)
    if type(expected) is str:
        return type(got) is str and got == expected
    if type(expected) in (list, tuple):
        return (
            type(got) is list
            and len(got) == len(expected)
            and all(same(g, e, rel, abs_tol) for g, e in zip(got, expected, strict=True))
        )
    if type(expected) is dict:
        return (
            type(got) is dict
            and set(got) == set(expected)
            and all(same(got[k], expected[k], rel, abs_tol) for k in expected)
        )
    if isinstance(expected, torch.Tensor):
        if type(got) is not torch.Tensor or got.dtype != expected.dtype:
            return False
        if got.shape != expected.shape:
            return False
        if expected.dtype.is_floating_point or expected.dtype.is_complex:
            return bool(torch.allclose(got, expected, rtol=rel, atol=abs_tol, equal_nan=True))
        return bool(torch.equal(got, expected))
    raise TypeError(f"same(): cannot compare with an expected value of type {type(expected)}")
