"""Sentence pairs (BERT's use 3): ``[CLS] A [SEP] B [SEP]`` with segment ids 0/1, one label per pair.

Introduced in notebook 08_bert_four_uses on OCNLI (entailment / neutral / contradiction). The
classifier is the course's own :class:`nblib.training.classifier.SentimentClassifier` with [CLS] pooling and
three classes: only the batch changes. Its ``token_type_ids`` reach the encoder's segment
embeddings, which for single reviews always held 0 and here, for the first time, tell A from B.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from nblib.models.bert import _trim_pair
from nblib.training.classifier import SentimentClassifier, evaluate_predictions


def pair_lengths(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """How many tokens of A and of B fit in ``budget`` shared between them: the longer side is cut
    first, until both are equal, then both in turn (BERT's ``_truncate_seq_pair``)."""
    return _trim_pair(len_a, len_b, budget)


def encode_pair(a: str, b: str, tokenizer: Any, max_len: int) -> tuple[list[int], list[int]]:
    """Ids of ``[CLS] A [SEP] B [SEP]`` within ``max_len`` tokens (each side keeps its start) and
    the segment ids: 0 for [CLS], A and the first [SEP]; 1 for B and the last [SEP]."""
    if not a.strip() or not b.strip():
        raise ValueError(f"a sentence pair needs two non-empty sentences, got A={a!r}, B={b!r}")
    if max_len < 5:
        raise ValueError(f"max_len {max_len} leaves no room for both sentences and three special tokens")
    a_ids = tokenizer.encode(a, add_special=False)
    b_ids = tokenizer.encode(b, add_special=False)
    la, lb = pair_lengths(len(a_ids), len(b_ids), max_len - 3)
    ids = [tokenizer.cls_id, *a_ids[:la], tokenizer.sep_id, *b_ids[:lb], tokenizer.sep_id]
    return ids, [0] * (la + 2) + [1] * (lb + 1)


def collate_pairs(pairs: Sequence[tuple], tokenizer: Any, max_len: int) -> dict[str, torch.Tensor]:
    """A padded batch from ``(A, B)`` or ``(A, B, label)`` tuples: input_ids, token_type_ids,
    attention_mask (bool) and, when labelled, labels."""
    rows = [encode_pair(p[0], p[1], tokenizer, max_len) for p in pairs]
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_id, dtype=torch.long)
    token_type_ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for r, (ids, types) in enumerate(rows):
        input_ids[r, : len(ids)] = torch.tensor(ids)
        token_type_ids[r, : len(types)] = torch.tensor(types)
        mask[r, : len(ids)] = True
    batch = {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": mask}
    if pairs and len(pairs[0]) == 3:
        batch["labels"] = torch.tensor([int(p[2]) for p in pairs], dtype=torch.long)
    return batch


def pair_classifier(encoder: Any, num_classes: int = 3, lr: float = 2e-4, **options: Any) -> SentimentClassifier:
    """The course classifier on pairs: [CLS] pooling (through BERT's pooler when the encoder has one)."""
    return SentimentClassifier(encoder, pooling="cls", num_classes=num_classes, lr=lr, **options)


@torch.no_grad()
def predict_pairs(model: SentimentClassifier, pairs: Sequence[tuple], tokenizer: Any, max_len: int,
                  batch_size: int = 128) -> list[int]:
    """Predicted label ids for ``(A, B, ...)`` pairs (eval mode, input order kept)."""
    model.eval()
    device = next(model.parameters()).device
    out = [0] * len(pairs)
    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    for i in range(0, len(order), batch_size):
        rows = order[i : i + batch_size]
        batch = collate_pairs([tuple(pairs[r][:2]) for r in rows], tokenizer, max_len)
        for r, y in zip(rows, model({k: v.to(device) for k, v in batch.items()}).argmax(-1).tolist(), strict=True):
            out[r] = y
    return out


def pair_scores(gold: Sequence[int], pred: Sequence[int], num_classes: int = 3) -> dict:
    """Accuracy, macro-F1 and per-class recall: the classifier's metrics code, with three classes."""
    return evaluate_predictions(gold, pred, num_classes=num_classes)
