"""Progress over a class: a tqdm bar on a terminal, one line per submission otherwise (a log file,
CI, a pipe), where a bar's carriage returns would make one unreadable line. Trusted code.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

from tqdm.auto import tqdm


class ClassProgress:
    """Counts the submissions of one grading run as they finish.

    ``say`` prints a line (``None``: silent). ``bar``: draw a tqdm bar instead of the per-student
    lines; by default only when ``stream`` (stderr) is a terminal. Lines that are not per-student
    (skipped files, the summary) always go through ``say``; with a bar, through ``tqdm.write`` so
    the bar stays below them.
    """

    def __init__(self, total: int, say: Callable[[str], None] | None,
                 bar: bool | None = None, stream: TextIO | None = None) -> None:
        self.say = say
        stream = stream or sys.stderr
        if bar is None:
            bar = say is not None and stream.isatty()
        self.bar = tqdm(total=total, unit="submission", file=stream, dynamic_ncols=True,
                        smoothing=0.1) if bar else None

    def student_done(self, line: str, short: str) -> None:
        """One submission finished: ``line`` (when there is no bar) or ``short`` (the bar's tail)."""
        if self.bar is not None:
            self.bar.set_postfix_str(short[:40], refresh=False)
            self.bar.update(1)
        elif self.say is not None:
            self.say(line)

    def note(self, line: str) -> None:
        """A line that is not a submission's (it never breaks the bar)."""
        if self.bar is not None:
            self.bar.write(line, file=sys.stdout)
        elif self.say is not None:
            self.say(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
