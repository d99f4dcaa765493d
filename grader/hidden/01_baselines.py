"""Hidden checks for lesson 01 (trusted; never copied into a student's sandbox)."""

import torch

from grader import Case, Exercise, close_to
from nblib.training.classifier import masked_mean

_g = torch.Generator().manual_seed(20261123)


def _case(b: int, t: int, h: int, left_padded: bool = False) -> Case:
    hidden = torch.randn(b, t, h, generator=_g)
    lengths = torch.randint(1, t + 1, (b,), generator=_g)
    positions = torch.arange(t).expand(b, t)
    mask = positions >= (t - lengths[:, None]) if left_padded else positions < lengths[:, None]
    return Case("masked_mean", args=(hidden, mask), check=close_to(masked_mean(hidden, mask)))


EXERCISES = {
    "01-masked-mean": Exercise(points=2, references=[masked_mean], cases=[
        _case(3, 5, 4), _case(8, 17, 16), _case(2, 9, 3, left_padded=True), _case(1, 1, 7),
    ]),
}
