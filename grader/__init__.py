"""The instructors' grader: student versions of the lessons, and a sandboxed two-stage grader.

A package of its own beside ``nblib`` (learners never need it); how to use it: ``grader/README.md``.

- ``strip``: the lessons are the solution source; ``python -m grader student`` writes the student
  versions (solutions, outputs and hidden cells removed).
- stage 1, untrusted (``sandbox`` + ``inside.runner``): each submission runs in its own sandbox with
  the smoke preset, with limits, and sends back only plain values and weights-only state dicts.
  Grader side: ``isolation`` (which sandbox works here), ``launch`` (the bwrap / unshare command
  line), ``uids`` (the sandboxes' own uids), ``cgroups`` and ``watchdog`` (the submission's memory
  total and CPU quota), ``host`` (root? tools, user namespaces, /proc). Inside the sandbox, the
  subpackage ``inside`` (the only part of this package a sandbox can see): ``runner`` (runs the
  notebook), ``confine`` (rlimits, seccomp), ``harness`` (the hidden calls and the reference guard),
  ``wire`` (the result frames and plain-JSON values, parsed strictly by the trusted side).
- stage 2, trusted (``score``): ``submissions`` reads the files without following links; the
  hidden checks in ``grader/hidden/<lesson>.py`` (see ``checks``) judge the values (``judge``);
  ``cache`` reuses the grades of unchanged submissions; ``reports`` writes ``grades.csv``,
  ``gradebook.csv`` and one feedback file per student (Markdown and HTML).

The names below are what a hidden-checks module imports (``from grader import Case, Exercise``).
They load lazily: the sandbox imports this file to reach ``grader.inside.runner`` and sees nothing
else of the package (neither ``checks.py`` nor the hidden checks), so this file imports nothing.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Case", "Exercise", "Limits", "close_to", "same"]


def __getattr__(name: str) -> Any:
    """``from grader import Case`` etc.: loaded from ``grader.checks`` on first use (PEP 562)."""
    if name in __all__:
        from grader import checks

        return getattr(checks, name)
    raise AttributeError(f"module 'grader' has no attribute {name!r}")
