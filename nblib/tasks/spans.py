"""Span extraction (BERT's use 4): a passage and a question in, the answer's start and end out.

Introduced in notebook 08_bert_four_uses on CMRC 2018. The input is ``[CLS] question [SEP] passage
piece [SEP]`` (segment ids 0/1); a linear layer gives every position a start and an end logit; the
answer is the best-scoring span with start ≤ end, at most ``max_answer_len`` characters, inside
the passage. A passage longer than the window is read in overlapping windows ``doc_stride``
characters apart and the best span over all windows wins. With a character tokenizer token
``passage_start + k`` is passage character ``offset + k``, so a span maps back to text exactly.

Scores follow CMRC 2018's official evaluation script (cmrc2018_evaluate.py, v5): exact match after
removing its punctuation list, and F1 from the longest common *substring* of the answer and the
prediction segmented into Chinese characters and non-Chinese runs (the script splits the runs
with nltk.word_tokenize; :func:`mixed_segmentation` splits them at spaces and at punctuation on
their edges, which agrees with it on numbers, dates and names but not on every English corner).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from nblib.data.task_data import QAExample
from nblib.training.classifier import adamw_with_warmup

# The official script's punctuation list ("……" is one two-character entry: it never matches).
SP_CHAR = ['-', ':', '_', '*', '^', '/', '\\', '~', '`', '+', '=', '，', '。', '：', '？', '！', '“',
           '”', '；', '’', '《', '》', '……', '·', '、', '「', '」', '（', '）', '－', '～', '『', '』']
_CHINESE = re.compile(r"[\u4e00-\u9fa5]")
_EDGE_PUNCT = "\"'()[]{},.;:!?<>"


@dataclass(frozen=True)
class QAFeature:
    """One window over one question's passage."""

    example: int  # index of the question in the list the features were made from
    input_ids: list[int]
    token_type_ids: list[int]
    passage_start: int  # position of the window's first passage token
    offset: int  # passage character of that token
    length: int  # passage tokens in the window
    start: int  # answer start/end positions in the window; 0 ([CLS]) when the answer is not inside
    end: int


def make_features(examples: Sequence[QAExample], tokenizer: Any, max_len: int, doc_stride: int,
                  max_question_len: int = 32) -> list[QAFeature]:
    """Windows of ``[CLS] question [SEP] passage[offset : offset + n] [SEP]``, ``doc_stride``
    characters apart, the last one reaching the passage's end. Training targets come from each
    question's first located answer; a window that does not hold it whole points at [CLS]."""
    if doc_stride < 1:
        raise ValueError(f"doc_stride must be >= 1, got {doc_stride}")
    features: list[QAFeature] = []
    for index, ex in enumerate(examples):
        q_ids = tokenizer.encode(ex.question, add_special=False)[:max_question_len]
        p_ids = tokenizer.encode(ex.context, add_special=False)
        if len(p_ids) != len(ex.context):
            raise ValueError("span extraction here needs one token per character (a CharTokenizer)")
        room = max_len - len(q_ids) - 3
        if room < 1:
            raise ValueError(f"max_len {max_len} leaves no room for the passage after a {len(q_ids)}-token question")
        answer = ex.spans[0] if ex.spans else None
        offset = 0
        while True:
            n = min(room, len(p_ids) - offset)
            start = end = 0
            if answer is not None:
                a_start, a_end = answer[0], answer[0] + len(answer[1]) - 1
                if offset <= a_start and a_end < offset + n:
                    start, end = (len(q_ids) + 2 + a_start - offset, len(q_ids) + 2 + a_end - offset)
            ids = [tokenizer.cls_id, *q_ids, tokenizer.sep_id, *p_ids[offset : offset + n], tokenizer.sep_id]
            features.append(QAFeature(index, ids, [0] * (len(q_ids) + 2) + [1] * (n + 1),
                                      len(q_ids) + 2, offset, n, start, end))
            if offset + n >= len(p_ids):
                break
            offset += doc_stride
    return features


def collate_features(features: Sequence[QAFeature], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Padded input_ids, token_type_ids, attention_mask, passage_mask (True at passage tokens),
    start/end targets and each row's feature number (``feature``: where it sits in ``features``)."""
    width = max(len(f.input_ids) for f in features)
    B = len(features)
    batch = {"input_ids": torch.full((B, width), pad_id, dtype=torch.long),
             "token_type_ids": torch.zeros((B, width), dtype=torch.long),
             "attention_mask": torch.zeros((B, width), dtype=torch.bool),
             "passage_mask": torch.zeros((B, width), dtype=torch.bool)}
    for r, f in enumerate(features):
        batch["input_ids"][r, : len(f.input_ids)] = torch.tensor(f.input_ids)
        batch["token_type_ids"][r, : len(f.token_type_ids)] = torch.tensor(f.token_type_ids)
        batch["attention_mask"][r, : len(f.input_ids)] = True
        batch["passage_mask"][r, f.passage_start : f.passage_start + f.length] = True
    batch["start"] = torch.tensor([f.start for f in features])
    batch["end"] = torch.tensor([f.end for f in features])
    return batch


def best_span(start_logits: torch.Tensor, end_logits: torch.Tensor, allowed: torch.Tensor,
              max_answer_len: int) -> tuple[int, int, float]:
    """The (start, end, score) maximising start_logit + end_logit over start ≤ end < start +
    ``max_answer_len`` with both positions ``allowed`` (T,), as one (T, T) table."""
    T = start_logits.shape[0]
    scores = start_logits[:, None] + end_logits[None, :]  # (T, T): row = start, column = end
    i = torch.arange(T)
    ok = (i[None, :] >= i[:, None]) & (i[None, :] < i[:, None] + max_answer_len)
    ok &= allowed[:, None] & allowed[None, :]
    if not ok.any():
        raise ValueError("no allowed span: the window holds no passage token")
    flat = int(scores.masked_fill(~ok, float("-inf")).argmax())
    s, e = divmod(flat, T)
    return s, e, float(scores[s, e])


def decode_answers(examples: Sequence[QAExample], features: Sequence[QAFeature], start_logits: Sequence[torch.Tensor],
                   end_logits: Sequence[torch.Tensor], max_answer_len: int) -> list[str]:
    """The best answer text per question over all its windows (logits given per feature)."""
    best: dict[int, tuple[float, str]] = {}
    for f, s_log, e_log in zip(features, start_logits, end_logits, strict=True):
        allowed = torch.zeros(s_log.shape[0], dtype=torch.bool)
        allowed[f.passage_start : f.passage_start + f.length] = True
        s, e, score = best_span(s_log.float(), e_log.float(), allowed, max_answer_len)
        a, b = f.offset + s - f.passage_start, f.offset + e - f.passage_start
        if f.example not in best or score > best[f.example][0]:
            best[f.example] = (score, examples[f.example].context[a : b + 1])
    return [best[i][1] if i in best else "" for i in range(len(examples))]


# --- CMRC 2018's metrics

def mixed_segmentation(text: str, remove_punctuation: bool = False) -> list[str]:
    """Lower-cased, stripped; each Chinese character and each listed punctuation mark one segment,
    runs of other characters split at spaces and at punctuation on their edges (see the module)."""
    segments: list[str] = []
    run = ""

    def flush() -> None:
        for word in run.split():
            head = len(word) - len(word.lstrip(_EDGE_PUNCT))
            tail = len(word.rstrip(_EDGE_PUNCT))
            core = word[head:tail] if tail > head else ""
            segments.extend([*word[:head], *([core] if core else []), *word[max(tail, head):]])

    for ch in str(text).lower().strip():
        if remove_punctuation and ch in SP_CHAR:
            continue
        if _CHINESE.match(ch) or ch in SP_CHAR:
            flush()
            run = ""
            segments.append(ch)
        else:
            run += ch
    flush()
    return segments


def strip_punctuation(text: str) -> str:
    """The official ``remove_punctuation``: lower-case, strip, drop every listed mark."""
    return "".join(ch for ch in str(text).lower().strip() if ch not in SP_CHAR)


def longest_common_substring(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest run of segments that ``a`` and ``b`` share (the script's find_lcs)."""
    best, previous = 0, [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                current[j + 1] = previous[j] + 1
                best = max(best, current[j + 1])
        previous = current
    return best


def cmrc_f1(answers: Sequence[str], prediction: str) -> float:
    """The best F1 over the reference answers, from the longest common substring of segments."""
    scores = []
    for answer in answers:
        a, p = mixed_segmentation(answer, True), mixed_segmentation(prediction, True)
        common = longest_common_substring(a, p)
        if common == 0:
            scores.append(0.0)
            continue
        precision, recall = common / len(p), common / len(a)
        scores.append(2 * precision * recall / (precision + recall))
    return max(scores)


def cmrc_em(answers: Sequence[str], prediction: str) -> float:
    """1.0 when the prediction equals some answer after :func:`strip_punctuation`."""
    p = strip_punctuation(prediction)
    return float(any(strip_punctuation(a) == p for a in answers))


def span_scores(examples: Sequence[QAExample], predictions: Sequence[str]) -> dict:
    """Mean EM and F1 (fractions; the official script prints them ×100). In the record format's keys:
    ``accuracy`` = EM; there is no macro-F1 or per-class recall for spans (None)."""
    em = [cmrc_em(e.answers, p) for e, p in zip(examples, predictions, strict=True)]
    f1 = [cmrc_f1(e.answers, p) for e, p in zip(examples, predictions, strict=True)]
    n = max(1, len(em))
    return {"em": sum(em) / n, "f1": sum(f1) / n, "accuracy": sum(em) / n, "macro_f1": None,
            "recall": None, "n": len(em)}


class SpanExtractor(pl.LightningModule):
    """Any encoder + a linear layer giving each position a start and an end logit (notebook 08).

    Loss: the mean of the start and end cross-entropies. Validation decodes every window of the
    questions in ``val_examples`` and logs ``val_f1`` / ``val_em`` (CMRC's metrics): the selection.
    """

    def __init__(self, encoder: nn.Module, lr: float = 2e-4, weight_decay: float = 0.01,
                 warmup_ratio: float = 0.1, max_answer_len: int = 30,
                 val_examples: Sequence[QAExample] = (), val_features: Sequence[QAFeature] = ()):
        super().__init__()
        self.save_hyperparameters(ignore=["encoder", "val_examples", "val_features"])
        self.encoder = encoder
        self.head = nn.Linear(encoder.hidden_size, 2)
        self.val_examples, self.val_features = list(val_examples), list(val_features)
        self._val: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder.encode(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])[-1]
        logits = self.head(h).float()  # (B, T, 2)
        return logits[..., 0], logits[..., 1]  # start, end: (B, T)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        start, end = self(batch)
        pad = ~batch["attention_mask"].bool()
        start, end = start.masked_fill(pad, -1e4), end.masked_fill(pad, -1e4)
        loss = (nn.functional.cross_entropy(start, batch["start"]) + nn.functional.cross_entropy(end, batch["end"])) / 2
        self.log("train_loss", loss, prog_bar=True, batch_size=len(start))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        start, end = self(batch)
        for r, index in enumerate(batch["feature"].tolist()):
            n = int(batch["attention_mask"][r].sum())
            self._val[index] = (start[r, :n].cpu(), end[r, :n].cpu())

    def on_validation_epoch_end(self) -> None:
        if self._val:
            order = sorted(self._val)
            preds = decode_answers(self.val_examples, [self.val_features[i] for i in order],
                                   [self._val[i][0] for i in order], [self._val[i][1] for i in order],
                                   self.hparams.max_answer_len)
            scores = span_scores(self.val_examples, preds)
            self.log("val_f1", scores["f1"], prog_bar=True)
            self.log("val_em", scores["em"])
        self._val = {}

    def configure_optimizers(self) -> Any:
        return adamw_with_warmup(self, self.hparams.lr, self.hparams.weight_decay,
                                 self.hparams.warmup_ratio, betas=(0.9, 0.999))


def collate_indexed(items: Sequence[tuple[int, QAFeature]], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """:func:`collate_features` for ``(feature number, feature)`` pairs (what the data module holds)."""
    batch = collate_features([f for _, f in items], pad_id)
    batch["feature"] = torch.tensor([i for i, _ in items])
    return batch


@torch.no_grad()
def predict_answers(model: SpanExtractor, examples: Sequence[QAExample], features: Sequence[QAFeature],
                    max_answer_len: int, batch_size: int = 64) -> list[str]:
    """The answer text the model picks for each question, over all its windows (eval mode)."""
    model.eval()
    device = next(model.parameters()).device
    starts: list[torch.Tensor] = [torch.empty(0)] * len(features)
    ends: list[torch.Tensor] = [torch.empty(0)] * len(features)
    for i in range(0, len(features), batch_size):
        chunk = features[i : i + batch_size]
        batch = {k: v.to(device) for k, v in collate_features(chunk).items()}
        s, e = model(batch)
        for r, f in enumerate(chunk):
            starts[i + r], ends[i + r] = s[r, : len(f.input_ids)].cpu(), e[r, : len(f.input_ids)].cpu()
    return decode_answers(examples, features, starts, ends, max_answer_len)
