"""Character tagging (BERT's use 2): one label per character, BIO decoding, entity-level scores.

Introduced in notebook 08_bert_four_uses on MSRA named entities. The encoder reads
``[CLS] characters [SEP]``; a linear layer maps every position's last hidden state to a tag. With a
character tokenizer position ``i + 1`` is character ``i``, so no word-piece alignment is needed.
Entities are scored as seqeval (the CoNLL convention) does: a predicted entity counts only when
its type and both boundaries match a gold one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from nblib.data.task_data import BIO_TAGS, TaggedSentence
from nblib.training.classifier import adamw_with_warmup

IGNORE = -100  # label of [CLS], [SEP] and padding: no loss there
TAG_TO_ID = {t: i for i, t in enumerate(BIO_TAGS)}


def repair_bio(tags: Sequence[str]) -> list[str]:
    """Make a tag sequence valid BIO: an ``I-X`` that does not follow ``B-X`` or ``I-X`` becomes
    ``B-X`` (it starts an entity). This is how CoNLL's scorer and seqeval read such a tag anyway."""
    out: list[str] = []
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            tag = "B-" + tag[2:]
        out.append(tag)
        previous = tag
    return out


def bio_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """The entities of a (repaired) BIO sequence as ``(type, start, end)``, end exclusive."""
    entities: list[tuple[str, int, int]] = []
    start, kind = None, None
    for i, tag in enumerate([*repair_bio(tags), "O"]):
        if start is not None and not (tag.startswith("I-") and tag[2:] == kind):
            entities.append((kind, start, i))
            start = None
        if tag.startswith("B-"):
            start, kind = i, tag[2:]
    return entities


def encode_tagged(sentence: TaggedSentence | str, tokenizer: Any, max_len: int) -> tuple[list[int], list[int]]:
    """``[CLS] chars [SEP]`` ids (cut to ``max_len``) and tag ids aligned with them (-100 at the
    specials; -100 everywhere for an untagged string)."""
    chars = sentence.text if isinstance(sentence, TaggedSentence) else sentence
    tags = sentence.tags if isinstance(sentence, TaggedSentence) else None
    ids = tokenizer.encode(chars, add_special=False)
    if len(ids) != len(chars):
        raise ValueError("character tagging needs one token per character (a CharTokenizer)")
    n = min(len(ids), max_len - 2)
    labels = [IGNORE] * n if tags is None else [TAG_TO_ID[t] for t in tags[:n]]
    return [tokenizer.cls_id, *ids[:n], tokenizer.sep_id], [IGNORE, *labels, IGNORE]


def collate_tagged(sentences: Sequence[TaggedSentence | str], tokenizer: Any, max_len: int) -> dict[str, torch.Tensor]:
    """A padded batch: input_ids, attention_mask (bool), labels (-100 where no tag is predicted)."""
    rows = [encode_tagged(s, tokenizer, max_len) for s in sentences]
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for r, (ids, tags) in enumerate(rows):
        input_ids[r, : len(ids)] = torch.tensor(ids)
        labels[r, : len(tags)] = torch.tensor(tags)
        mask[r, : len(ids)] = True
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def decode_tags(logits: torch.Tensor, lengths: Sequence[int]) -> list[list[str]]:
    """Best tag per character from (B, T, C) logits (position 1 + i is character i), repaired to
    valid BIO; characters cut by the length budget get ``O``."""
    best = logits.argmax(-1).tolist()
    out = []
    for row, n in zip(best, lengths, strict=True):
        kept = [BIO_TAGS[k] for k in row[1 : 1 + n]]
        out.append(repair_bio(kept + ["O"] * (n - len(kept))))
    return out


def entity_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict:
    """Entity-level micro precision/recall/F1 and per-type F1 (seqeval, CoNLL convention), plus the
    character accuracy. In the record format's keys: ``accuracy`` = characters, ``macro_f1`` = mean
    of the per-type entity F1s, ``recall`` = entity recall per type."""
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

    gold, pred = [list(g) for g in gold], [list(p) for p in pred]
    if [len(g) for g in gold] != [len(p) for p in pred]:
        raise ValueError("gold and predicted tag sequences differ in length")
    report = classification_report(gold, pred, output_dict=True, zero_division=0)
    types = sorted({t[2:] for g in gold for t in g if t != "O"})
    n_chars = sum(len(g) for g in gold)
    correct = sum(a == b for g, p in zip(gold, pred, strict=True) for a, b in zip(g, p, strict=True))
    per_type = {t: report.get(t, {"f1-score": 0.0, "recall": 0.0}) for t in types}
    return {
        "entity_f1": float(f1_score(gold, pred, zero_division=0)),
        "entity_precision": float(precision_score(gold, pred, zero_division=0)),
        "entity_recall": float(recall_score(gold, pred, zero_division=0)),
        "f1_per_type": {t: float(v["f1-score"]) for t, v in per_type.items()},
        "accuracy": correct / max(1, n_chars),
        "macro_f1": sum(float(v["f1-score"]) for v in per_type.values()) / max(1, len(per_type)),
        "recall": {t: float(v["recall"]) for t, v in per_type.items()},
        "n": len(gold),
    }


class TokenTagger(pl.LightningModule):
    """Any encoder + dropout + a linear layer per position (notebook 08_bert_four_uses).

    Trained with cross-entropy over the real characters; validation logs ``val_entity_f1``
    (seqeval), the model-selection metric. Optimiser and schedule: the classifier's.
    """

    def __init__(self, encoder: nn.Module, num_tags: int = len(BIO_TAGS), lr: float = 2e-4,
                 weight_decay: float = 0.01, warmup_ratio: float = 0.1, dropout: float = 0.1):
        super().__init__()
        self.save_hyperparameters(ignore=["encoder"])
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.hidden_size, num_tags)
        self._val: list[tuple[list[str], list[str]]] = []

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        h = self.encoder.encode(batch["input_ids"], batch["attention_mask"])[-1]  # (B, T, H)
        return self.head(self.dropout(h))  # (B, T, C)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(logits))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        labels = batch["labels"]
        lengths = (labels != IGNORE).sum(1).tolist()
        pred = decode_tags(self(batch), lengths)
        for row, p in zip(labels.tolist(), pred, strict=True):
            self._val.append(([BIO_TAGS[k] for k in row if k != IGNORE], p))

    def on_validation_epoch_end(self) -> None:
        scores = entity_scores([g for g, _ in self._val], [p for _, p in self._val])
        self.log("val_entity_f1", scores["entity_f1"], prog_bar=True)
        self._val = []

    def configure_optimizers(self) -> Any:
        return adamw_with_warmup(self, self.hparams.lr, self.hparams.weight_decay,
                                 self.hparams.warmup_ratio, betas=(0.9, 0.999))


@torch.no_grad()
def predict_tags(model: TokenTagger, sentences: Sequence[TaggedSentence | str], tokenizer: Any,
                 max_len: int, batch_size: int = 64) -> list[list[str]]:
    """Predicted BIO tags for every character of every sentence (eval mode, input order kept)."""
    model.eval()
    device = next(model.parameters()).device
    texts = [s.text if isinstance(s, TaggedSentence) else s for s in sentences]
    out: list[list[str]] = [[] for _ in texts]
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    for i in range(0, len(order), batch_size):
        rows = order[i : i + batch_size]
        batch = collate_tagged([texts[r] for r in rows], tokenizer, max_len)
        logits = model({k: v.to(device) for k, v in batch.items()}).float().cpu()
        for r, tags in zip(rows, decode_tags(logits, [len(texts[r]) for r in rows]), strict=True):
            out[r] = tags
    return out
