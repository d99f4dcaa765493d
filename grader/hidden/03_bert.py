"""Hidden checks for lesson 03 (trusted; never copied into a student's sandbox)."""

import torch

from grader import Case, Exercise, close_to
from nblib.models.bert import BertEmbeddings
from nblib.models.layers import MultiHeadAttention, attention, attention_weights

_g = torch.Generator().manual_seed(20261125)


def _mask(lengths: list[int], T: int) -> torch.Tensor:
    return torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]


def _padding(lengths: list[int], T: int) -> Case:
    return Case("padding_mask", args=(torch.tensor(lengths), T), expect=_mask(lengths, T))


def _attention(b: int, nh: int, tq: int, tk: int, d: int) -> Case:
    q, k, v = (torch.randn(b, nh, t, d, generator=_g) for t in (tq, tk, tk))
    lengths = torch.randint(1, tk + 1, (b,), generator=_g).tolist()
    mask = _mask(lengths, tk)
    return Case("attention_with_padding", args=(q, k, v, mask),
                check=close_to(attention(q, k, v, key_padding_mask=mask)))


def _embeddings(b: int, t: int, v: int, p: int, h: int) -> Case:
    ids = torch.randint(0, v, (b, t), generator=_g)
    types = torch.randint(0, 2, (b, t), generator=_g)
    word, seg, pos = (torch.randn(n, h, generator=_g) for n in (v, 2, p))
    return Case("embeddings_sum", args=(ids, types, word, seg, pos),
                check=close_to(word[ids] + seg[types] + pos[:t][None]))


def _labels(b: int, t: int) -> Case:
    ids = torch.randint(5, 3000, (b, t), generator=_g)
    selected = torch.rand(b, t, generator=_g) < 0.15
    return Case("mlm_labels", args=(ids, selected), expect=torch.where(selected, ids, torch.full_like(ids, -100)))


EXERCISES = {
    "03-padding-mask": Exercise(points=1, cases=[_padding([3, 1, 6], 6), _padding([1], 1), _padding([2, 9], 12)]),
    "03-attention": Exercise(points=3, references=[attention, attention_weights, MultiHeadAttention], cases=[_attention(2, 2, 5, 5, 4), _attention(3, 4, 7, 7, 8),
                                              _attention(1, 1, 2, 6, 3)]),
    "03-embeddings": Exercise(points=2, references=[BertEmbeddings], cases=[_embeddings(2, 5, 30, 8, 4), _embeddings(1, 7, 12, 7, 6)]),
    "03-mlm-labels": Exercise(points=1, cases=[_labels(3, 10), _labels(1, 40)]),
}
