"""Graded exercises: student versions of the lessons, and a two-stage grader.

- ``strip``: the lessons are the solution source; ``python -m nblib.grading student`` writes the
  student versions (solutions, outputs and hidden cells removed).
- stage 1, untrusted (``sandbox`` + ``runner``): each submission runs in its own sandbox with the
  smoke preset, with limits, and sends back only plain values and weights-only state dicts.
  Grader side: ``isolation`` (which sandbox works here), ``launch`` (the bwrap / unshare command
  line), ``uids`` (the sandboxes' own uids), ``cgroups`` and ``watchdog`` (the submission's memory
  total and CPU quota), ``host`` (root? tools, /proc). Inside the sandbox: ``runner`` (runs the
  notebook), ``confine`` (rlimits, seccomp), ``harness`` (the hidden calls and the reference guard).
- between them, ``wire``: the result frames and the plain-JSON values, parsed strictly.
- stage 2, trusted (``score``): ``submissions`` reads the files without following links; the
  hidden checks in ``grading/hidden/<lesson>.py`` (see ``checks``) judge the values (``judge``);
  ``grades.csv`` and one feedback file per student come out (``reports``).

Instructor guide: docs/grading.md. Introduced for the graded exercises of the lessons.
"""

from nblib.grading.checks import Case, Exercise, Limits, close_to, same

__all__ = ["Case", "Exercise", "Limits", "close_to", "same"]
