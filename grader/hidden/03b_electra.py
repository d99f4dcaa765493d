"""Hidden checks for lesson 03b (trusted; never copied into a student's sandbox)."""

import torch

from grader import Case, Exercise
from nblib.models.electra import replace_tokens

_g = torch.Generator().manual_seed(20261203)


def _replaced(b: int, t: int, vocab: int, p_equal: float) -> Case:
    """Random text, ~15% selected, and samples of which a share ``p_equal`` equal the original."""
    original = torch.randint(5, vocab, (b, t), generator=_g)
    selected = torch.rand(b, t, generator=_g) < 0.15
    selected[0, 1] = True  # at least one selected position
    n = int(selected.sum())
    keep = torch.rand(n, generator=_g) < p_equal
    sampled = torch.where(keep, original[selected], torch.randint(5, vocab, (n,), generator=_g))
    corrupted = original.clone()
    corrupted[selected] = sampled
    return Case("replaced_token_labels", args=(original, selected, sampled),
                expect=(corrupted, (corrupted != original).float()))


EXERCISES = {
    "03b-replaced-labels": Exercise(points=2, references=[replace_tokens],
                                    cases=[_replaced(3, 12, 40, 0.5), _replaced(2, 30, 3000, 0.3),
                                           _replaced(1, 8, 6, 0.0)]),
}
