"""Hidden checks for lesson 04 (trusted; never copied into a student's sandbox)."""

import torch

from grader import Case, Exercise
from nblib.models.gpt import filter_logits
from nblib.models.layers import attention_allowed
from nblib.training.classifier import last_real_token

_g = torch.Generator().manual_seed(20261124)


def _causal(T: int) -> Case:
    return Case("causal_mask", args=(T,), expect=torch.ones(T, T, dtype=torch.bool).tril())


def _top_k(b: int, v: int, k: int) -> Case:
    logits = torch.randn(b, v, generator=_g) * 3
    return Case("top_k_filter", args=(logits, k), expect=filter_logits(logits, top_k=k))


def _last(b: int, t: int, h: int, side: str) -> Case:
    hidden = torch.randn(b, t, h, generator=_g)
    lengths = torch.randint(1, t + 1, (b,), generator=_g)
    positions = torch.arange(t).expand(b, t)
    if side == "left":
        mask = positions >= (t - lengths[:, None])
    elif side == "right":
        mask = positions < lengths[:, None]
    else:
        mask = torch.ones(b, t, dtype=torch.bool)
    return Case("last_real_token", args=(hidden, mask), expect=last_real_token(hidden, mask))


EXERCISES = {
    "04-causal-mask": Exercise(points=1, references=[attention_allowed], cases=[_causal(1), _causal(4), _causal(9)]),
    "04-top-k-filter": Exercise(points=2, references=[filter_logits], cases=[_top_k(2, 11, 1), _top_k(3, 50, 3), _top_k(1, 6, 6)]),
    "04-last-real-token": Exercise(points=2, references=[last_real_token], cases=[_last(4, 9, 5, "right"), _last(3, 7, 2, "left"),
                                                   _last(2, 5, 3, "none")]),
}
