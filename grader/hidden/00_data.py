"""Hidden checks for lesson 00 (trusted; never copied into a student's sandbox)."""

import random

from grader import Case, Exercise
from nblib.data.text import truncate

_rng = random.Random(20261123)


def _case(n: int, max_len: int, head: int) -> Case:
    ids = [_rng.randrange(5, 4000) for _ in range(n)]
    return Case("head_tail", args=(ids, max_len, head),
                expect=truncate(ids, max_len, "head+tail", head_fraction=head / max_len if max_len else 0.0))


EXERCISES = {
    "00-head-tail": Exercise(points=2, references=[truncate], cases=[
        _case(10, 20, 5),      # short input: unchanged
        _case(20, 20, 7),      # exactly max_len: unchanged
        _case(300, 126, 32),   # the usual cut
        _case(50, 10, 0),      # tail only
        _case(50, 10, 10),     # head only
        _case(700, 510, 128),  # Sun et al.'s 128 + 382
    ]),
}
