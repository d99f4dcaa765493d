"""A content-addressed cache of runs: a job whose inputs have not changed is not run again.

Used by :func:`nblib.training.pool.run_jobs` (notebook 02_elmo). A job's key is the sha256 of everything that fixes
its result:

- its function: the source of a function defined in a lesson, and the *values* of the globals it reads
  (the pretrained weights, the split's reviews, the preset, the collate and its vocabulary, ...),
  recursively through the lesson's own functions it calls;
- its arguments (data frames and tensors by content); a dataclass by its fields, except those marked
  ``grid`` (a preset's seeds and label counts: which runs a lesson makes, not how one goes), so a
  learner's sitting of one seed finds the runs `make report` made with three;
- the torch threads it runs at and torch's version;
- the source of every ``nblib`` module it reaches: the modules its function, globals and arguments come
  from, and what those import at module level (a function-level import is a lazy one, used elsewhere).
  So a change to ``gpt.py`` reruns the GPT runs and keeps the BERT ones (``tests/test_runcache.py``).

joblib's ``Memory`` hashes a function's own code and arguments but neither the globals a notebook function
reads nor the modules it calls, hence this module. Entries are pickles under ``runs/cache/``, written to a
temporary file and renamed, so a half-written entry is never read; an unreadable one is recomputed.
The folder is safe to delete. ``NBLIB_FRESH=1`` (``make report FRESH=1``) reads no entry (and rewrites them).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import inspect
import os
import pickle
import sys
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from nblib.results.records import RERUN_MAY_CHANGE, runs_dir

FRESH_ENV = "NBLIB_FRESH"  # "1": ignore cached runs and pretraining checkpoints (recompute, then overwrite)
PACKAGE = "nblib"
# Fields of the values a job reads that describe a run's clock, not its result (a pretraining's seconds,
# whether it came from the cache): a key leaves them out, so a rerun that loads a cached checkpoint
# still finds the runs made from it.
CLOCK_FIELDS = RERUN_MAY_CHANGE | {"cached"}


def fresh() -> bool:
    """Whether this run was asked to ignore every cache (``make report FRESH=1``)."""
    return os.environ.get(FRESH_ENV, "") not in ("", "0")


def cache_dir() -> Path:
    return runs_dir() / "cache"


# ---------------------------------------------------------------------------------------------
# The library's part of a key: the modules a job reaches


def _module_file(name: str) -> Path | None:
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    return Path(path) if path else None


def module_level_imports(name: str) -> set[str]:
    """The ``nblib`` modules that module ``name`` imports at module level (not inside functions,
    not under ``if TYPE_CHECKING``)."""
    path = _module_file(name)
    if path is None or not path.exists():
        return set()
    found: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        for sub in ast.walk(node) if isinstance(node, (ast.Try,)) else [node]:
            if isinstance(sub, ast.Import):
                found |= {a.name for a in sub.names if a.name.split(".")[0] == PACKAGE}
            elif isinstance(sub, ast.ImportFrom) and sub.module and sub.module.split(".")[0] == PACKAGE:
                found.add(sub.module)
                # `from nblib import elmo` names a module; `from nblib.models.bert import X` a member
                found |= {f"{sub.module}.{a.name}" for a in sub.names
                          if f"{sub.module}.{a.name}" in sys.modules}
    return {m for m in found if m in sys.modules and m != PACKAGE}


def module_closure(names: Iterable[str]) -> list[str]:
    """``names`` and every ``nblib`` module they reach by module-level imports, sorted."""
    todo, seen = [n for n in names if n != PACKAGE], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += sorted(module_level_imports(name) - seen)
    return sorted(seen)


def _source_bytes(name: str) -> bytes:
    path = _module_file(name)
    return path.read_bytes() if path and path.exists() else b""


# ---------------------------------------------------------------------------------------------
# Fingerprints of values


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):  # comprehensions, lambdas, nested functions
            names |= _global_names(const)
    return names


def _is_library(module: str | None) -> bool:
    return bool(module) and module.split(".")[0] == PACKAGE


class _Fingerprint:
    """Feeds a value into a sha256, content first; notes the ``nblib`` modules it meets."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.modules: set[str] = set()
        self._functions: set[int] = set()  # lesson functions already fed (recursion, cycles)

    def text(self, *parts: object) -> None:
        for part in parts:
            self.hash.update(f"{part}\x1f".encode())

    def module_of(self, obj: Any) -> None:
        module = getattr(obj, "__module__", None) or getattr(type(obj), "__module__", None)
        if _is_library(module):
            self.modules.add(module)

    def feed(self, value: Any) -> None:  # noqa: C901 - one branch per kind of value
        import numpy as np
        import pandas as pd
        import torch

        if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
            self.text(type(value).__name__, repr(value))
        elif isinstance(value, (list, tuple)):
            self.text(type(value).__name__, len(value))
            for v in value:
                self.feed(v)
        elif isinstance(value, dict):
            self.text("dict", len(value))
            for k in sorted((k for k in value if k not in CLOCK_FIELDS), key=repr):
                self.feed(k)
                self.feed(value[k])
        elif isinstance(value, (set, frozenset)):
            self.text("set", len(value))
            for v in sorted(value, key=repr):
                self.feed(v)
        elif isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            self.text("tensor", t.dtype, tuple(t.shape))
            self.hash.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(value, np.ndarray):
            self.text("ndarray", value.dtype, value.shape)
            self.hash.update(np.ascontiguousarray(value).tobytes())
        elif isinstance(value, (pd.DataFrame, pd.Series)):
            names = list(value.columns) if isinstance(value, pd.DataFrame) else [value.name]
            self.text(type(value).__name__, value.shape, names)
            self.hash.update(pd.util.hash_pandas_object(value, index=True).to_numpy().tobytes())
        elif isinstance(value, types.ModuleType):
            self.text("module", value.__name__)
            if _is_library(value.__name__):
                self.modules.add(value.__name__)
        elif isinstance(value, functools.partial):
            self.text("partial")
            self.feed(value.func)
            self.feed(value.args)
            self.feed(value.keywords)
        elif isinstance(value, types.FunctionType):
            self.function(value)
        elif isinstance(value, (types.BuiltinFunctionType, types.MethodType, type)):
            self.text(type(value).__name__, getattr(value, "__module__", ""), getattr(value, "__qualname__", ""))
            self.module_of(value)
        elif isinstance(value, torch.nn.Module):
            self.text("module-object", type(value).__module__, type(value).__qualname__)
            self.module_of(value)
            self.feed(dict(value.state_dict()))
        elif dataclasses.is_dataclass(value):
            self.text("dataclass", type(value).__module__, type(value).__qualname__)
            self.module_of(value)
            for f in dataclasses.fields(value):
                if f.metadata.get("grid"):  # says which runs to make, not how one goes (presets.GRID)
                    continue
                self.feed(f.name)
                self.feed(getattr(value, f.name))
        elif hasattr(value, "__dict__"):
            self.text("object", type(value).__module__, type(value).__qualname__)
            self.module_of(value)
            self.feed(vars(value))
        else:  # anything else pickles deterministically or is an error worth seeing
            self.text("pickle", type(value).__qualname__)
            self.hash.update(pickle.dumps(value, protocol=4))

    def function(self, fn: types.FunctionType) -> None:
        """A library function by name (its module's source is in the key); a lesson's by value."""
        if _is_library(fn.__module__):
            self.text("function", fn.__module__, fn.__qualname__)
            self.modules.add(fn.__module__)
            return
        if id(fn) in self._functions:
            self.text("function-again", fn.__qualname__)
            return
        self._functions.add(id(fn))
        try:
            source = inspect.getsource(fn)
        except (OSError, TypeError):  # no source file: its bytecode and constants
            source = repr((fn.__code__.co_code, fn.__code__.co_consts))
        self.text("function", fn.__qualname__, source)
        self.feed(fn.__defaults__)
        self.feed(fn.__kwdefaults__)
        for cell in fn.__closure__ or ():
            self.feed(cell.cell_contents)
        for name in sorted(_global_names(fn.__code__)):
            if name in fn.__globals__:
                self.text("global", name)
                self.feed(fn.__globals__[name])


def job_keys(job: Callable[..., Any], jobs: Iterable[dict[str, Any]], threads: int,
             source_of: Callable[[str], bytes] = _source_bytes) -> list[str]:
    """:func:`job_key` of each of ``jobs`` (argument dicts) for one ``job``: the function and the values it
    reads (the pretrained weights, the reviews) are fingerprinted once for the whole grid, not once a job."""
    import torch

    common = _Fingerprint()
    common.text("threads", threads, "torch", torch.__version__)
    common.feed(job)
    sources: dict[frozenset[str], list[tuple[str, bytes]]] = {}
    keys = []
    for kwargs in jobs:
        fp = _Fingerprint()
        fp.hash, fp.modules, fp._functions = common.hash.copy(), set(common.modules), set(common._functions)
        fp.feed(kwargs)
        reached = frozenset(fp.modules)
        if reached not in sources:  # the closure and its sources, once per set of modules
            sources[reached] = [(name, hashlib.sha256(source_of(name)).digest()) for name in module_closure(reached)]
        for name, digest in sources[reached]:
            fp.text("source", name)
            fp.hash.update(digest)
        keys.append(fp.hash.hexdigest())
    return keys


def job_key(job: Callable[..., Any], kwargs: dict[str, Any], threads: int,
            source_of: Callable[[str], bytes] = _source_bytes) -> str:
    """The sha256 of what fixes ``job(**kwargs)``'s result at ``threads`` torch threads (see the module's
    docstring). ``source_of`` reads a module's source (a test changes one module's)."""
    return job_keys(job, [kwargs], threads, source_of)[0]


def job_modules(job: Callable[..., Any], kwargs: dict[str, Any]) -> list[str]:
    """The ``nblib`` modules whose source is part of the job's key."""
    fp = _Fingerprint()
    fp.feed(job)
    fp.feed(kwargs)
    return module_closure(fp.modules)


# ---------------------------------------------------------------------------------------------
# Entries


MISSING = object()


def load(key: str) -> Any:
    """The cached result of ``key``, or :data:`MISSING` (none, ``NBLIB_FRESH`` set, or unreadable)."""
    path = cache_dir() / f"{key}.pkl"
    if fresh() or not path.exists():
        return MISSING
    try:
        with path.open("rb") as f:
            return pickle.load(f)
    except Exception as err:  # noqa: BLE001 - a damaged entry is recomputed, never trusted
        print(f"cache entry {path.name} is unreadable ({type(err).__name__}): recomputing it", flush=True)
        return MISSING


def store(key: str, result: Any) -> Path:
    """Save ``result`` under ``key``: written beside, then renamed (atomic on one file system)."""
    path = cache_dir() / f"{key}.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)
    return path
