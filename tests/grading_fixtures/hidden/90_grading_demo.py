"""Hidden checks of the test lesson 90_grading_demo (a model for grader/hidden/<lesson>.py).

hidden-checks-canary-5d1e: a submission that could read this file would see this line.
"""

import torch
from torch import nn

from grader import Case, Exercise, Limits


def _truncate(ids, max_len):
    if len(ids) <= max_len:
        return list(ids)
    head = max_len // 2
    return list(ids[:head]) + list(ids[len(ids) - (max_len - head):])


def _mask(size):
    return torch.ones(size, size, dtype=torch.bool).tril()


# The line the student's fit_line is trained on, and points it has not seen (checked here).
XS = [i / 10 for i in range(-10, 11)]
YS = [1.5 * x - 0.5 for x in XS]
HELD_OUT_X = torch.tensor([[-0.35], [0.05], [0.77]])
HELD_OUT_Y = 1.5 * HELD_OUT_X - 0.5


def fits_held_out_points(state_dict):
    model = nn.Linear(1, 1)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        return "return the nn.Linear(1, 1) itself (or its state_dict)"
    with torch.no_grad():
        error = nn.functional.mse_loss(model(HELD_OUT_X), HELD_OUT_Y).item()
    return error < 1e-3


IDS = list(range(100, 137))
EXERCISES = {
    # The library's truncate(ids, n, "head+tail", 0.5) gives the same answer: calling it from
    # truncate_head_tail during a hidden case earns nothing.
    "T1-truncate": Exercise(points=2, references=["nblib.data.text.truncate"], cases=[
        Case("truncate_head_tail", args=(IDS, 8), expect=_truncate(IDS, 8)),
        Case("truncate_head_tail", args=(IDS[:5], 8), expect=IDS[:5]),
        Case("truncate_head_tail", args=(IDS[:9], 5), expect=_truncate(IDS[:9], 5)),
    ]),
    "T2-mask": Exercise(points=2, cases=[
        Case("causal_mask", args=(n,), expect=_mask(n)) for n in (5, 1, 0)
    ]),
    "T3-fit": Exercise(points=3, cases=[
        Case("fit_line", args=(XS, YS), returns="weights", check=fits_held_out_points),
    ]),
}

# Generous per-cell time (importing torch on a busy 2-core machine), short per hidden call.
LIMITS = Limits(wall_s=150, cell_s=10, call_s=3, memory_mb=2048, total_memory_mb=1536, nproc=64,
                tmpfs_mb=64)
