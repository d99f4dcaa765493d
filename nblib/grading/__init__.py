"""Graded exercises: student versions of the lessons, and a two-stage grader.

- ``strip``: the lessons are the solution source; ``python -m nblib.grading student`` writes the
  student versions (solutions, outputs and hidden cells removed).
- stage 1, untrusted (``sandbox`` + ``runner``): each submission runs in its own sandbox with the
  smoke preset, with limits, and sends back only plain values and weights-only state dicts.
- stage 2, trusted (``score``): the hidden checks in ``grading/hidden/<lesson>.py`` (see
  ``checks``) judge those values; ``grades.csv`` and one feedback file per student come out.

Instructor guide: docs/grading.md. Introduced for the graded exercises of the lessons.
"""

from nblib.grading.checks import Case, Exercise, Limits, close_to, same

__all__ = ["Case", "Exercise", "Limits", "close_to", "same"]
