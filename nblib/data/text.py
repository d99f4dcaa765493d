"""Tokenizers and truncation: text → ids.

Introduced in notebook 00_data. BERT and GPT read characters (Chinese needs no word segmentation
for them, as bert-base-chinese shows); ELMo reads jieba words, each spelt by its characters.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import torch

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORD_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "<S>", "</S>"]

TruncationStrategy = Literal["head", "tail", "head+tail"]
# Sun et al. (2019) keep the first 128 and the last 382 tokens of 510: about a quarter from the head.
HEAD_FRACTION = 128 / 510


def characters_in_window(text: str, room: int) -> int:
    """How many characters of ``text`` a model reads when ``room`` positions of its window are left for
    text (the others hold special tokens): what the pretraining budget counts for BERT and GPT."""
    return min(len(text), room)


def truncate(
    ids: Sequence[int],
    max_len: int,
    strategy: TruncationStrategy = "head",
    head_fraction: float = HEAD_FRACTION,
) -> list[int]:
    """Cut ``ids`` to at most ``max_len`` items, keeping order.

    ``head`` keeps the first ``max_len``; ``tail`` the last; ``head+tail`` keeps
    ``round(max_len * head_fraction)`` from the start and the rest from the end (Sun et al. 2019:
    128 + 382 for 510). Short inputs come back unchanged.
    """
    if max_len < 0:
        raise ValueError(f"max_len must be >= 0, got {max_len}")
    ids = list(ids)
    if len(ids) <= max_len:
        return ids
    if strategy == "head":
        return ids[:max_len]
    if strategy == "tail":
        return ids[len(ids) - max_len :]
    if strategy == "head+tail":
        if not 0.0 <= head_fraction <= 1.0:
            raise ValueError(f"head_fraction must lie in [0, 1], got {head_fraction}")
        n_head = round(max_len * head_fraction)
        n_tail = max_len - n_head
        return ids[:n_head] + ids[len(ids) - n_tail :]
    raise ValueError(f"unknown truncation strategy {strategy!r}; use 'head', 'tail' or 'head+tail'")


class Vocabulary:
    """A token ↔ id table with special tokens first. Shared by both tokenizers."""

    def __init__(self, tokens: Sequence[str], specials: Sequence[str]):
        if list(tokens[: len(specials)]) != list(specials):
            raise ValueError(f"vocabulary must start with the special tokens {list(specials)}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("vocabulary holds a token twice")
        self.id_to_token = list(tokens)
        self.token_to_id = {t: i for i, t in enumerate(tokens)}
        self.specials = list(specials)

    @classmethod
    def from_counts(
        cls, counts: Counter, specials: Sequence[str], min_count: int, max_size: int | None
    ) -> Vocabulary:
        # Most frequent first, ties broken by the token itself: the same vocabulary on every machine.
        kept = sorted((t for t, n in counts.items() if n >= min_count and t not in specials),
                      key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[: max(0, max_size - len(specials))]
        return cls(list(specials) + kept, specials)

    def __len__(self) -> int:
        return len(self.id_to_token)


class CharTokenizer:
    """Character-level tokenizer for BERT and GPT (introduced in notebook 00_data).

    Special ids are fixed: ``[PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4``; ordinary characters
    start at 5, most frequent first. ``encode`` wraps a review as ``[CLS] text [SEP]``.
    """

    pad_id, unk_id, cls_id, sep_id, mask_id = range(5)

    def __init__(self, vocab: Vocabulary):
        if vocab.specials != SPECIAL_TOKENS:
            raise ValueError(f"a CharTokenizer vocabulary starts with {SPECIAL_TOKENS}")
        self.vocab = vocab
        self.token_to_id = vocab.token_to_id
        self.id_to_token = vocab.id_to_token

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 3, max_size: int | None = None) -> CharTokenizer:
        """Characters seen at least ``min_count`` times in ``texts`` (the pretraining corpus)."""
        counts: Counter = Counter()
        for text in texts:
            counts.update(text)
        return cls(Vocabulary.from_counts(counts, SPECIAL_TOKENS, min_count, max_size))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def num_special(self) -> int:
        return len(SPECIAL_TOKENS)

    def tokenize(self, text: str) -> list[str]:
        return list(text)

    def encode(
        self,
        text: str,
        add_special: bool = True,
        max_len: int | None = None,
        truncation: TruncationStrategy = "head",
    ) -> list[int]:
        """Ids of ``text``; with ``add_special`` as ``[CLS] text [SEP]``; ``max_len`` counts the specials."""
        ids = [self.token_to_id.get(ch, self.unk_id) for ch in text]
        if max_len is not None:
            ids = truncate(ids, max_len - (2 if add_special else 0), truncation)
        return [self.cls_id, *ids, self.sep_id] if add_special else ids

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        out = []
        for i in ids:
            i = int(i)
            if skip_special and i < self.num_special and i != self.unk_id:
                continue
            out.append(self.id_to_token[i])
        return "".join(out)

    def batch_encode(
        self,
        texts: Sequence[str],
        max_len: int,
        truncation: TruncationStrategy = "head",
        add_special: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Encode, truncate to ``max_len`` (specials included) and right-pad a batch.

        Returns ``input_ids`` (B, T) long and ``attention_mask`` (B, T) bool (True at real tokens),
        with T the longest encoded text in the batch.
        """
        return pad_batch([self.encode(t, add_special, max_len, truncation) for t in texts], self.pad_id)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(
            json.dumps({"kind": "char", "tokens": self.id_to_token}, ensure_ascii=False), encoding="utf-8"
        )

    @classmethod
    def load(cls, path: str | Path) -> CharTokenizer:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("kind") != "char":
            raise ValueError(f"{path} is not a CharTokenizer file (kind={data.get('kind')!r})")
        return cls(Vocabulary(data["tokens"], SPECIAL_TOKENS))


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-pad id lists into ``input_ids`` (B, T) and a bool ``attention_mask`` (B, T)."""
    if not sequences:
        raise ValueError("cannot pad an empty batch")
    width = max(1, max(len(s) for s in sequences))
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.bool)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
        attention_mask[row, : len(seq)] = True
    return {"input_ids": input_ids, "attention_mask": attention_mask}


class WordTokenizer:
    """jieba word tokenizer for ELMo (introduced in notebook 02_elmo).

    Ids: ``[PAD]=0 [UNK]=1 <S>=2 </S>=3``, then words most frequent first. Whitespace-only
    tokens are dropped. Words outside the vocabulary still reach ELMo through their characters.
    """

    pad_id, unk_id, bos_id, eos_id = range(4)

    def __init__(self, vocab: Vocabulary):
        if vocab.specials != WORD_SPECIAL_TOKENS:
            raise ValueError(f"a WordTokenizer vocabulary starts with {WORD_SPECIAL_TOKENS}")
        self.vocab = vocab
        self.token_to_id = vocab.token_to_id
        self.id_to_word = vocab.id_to_token

    @staticmethod
    def tokenize(text: str) -> list[str]:
        import jieba

        jieba.setLogLevel(60)  # silence "Building prefix dict ..." on first use
        return [w for w in jieba.lcut(text, HMM=True) if w.strip()]

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 2, max_size: int | None = 20000) -> WordTokenizer:
        counts: Counter = Counter()
        for text in texts:
            counts.update(cls.tokenize(text))
        return cls(Vocabulary.from_counts(counts, WORD_SPECIAL_TOKENS, min_count, max_size))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, words: Sequence[str]) -> list[int]:
        return [self.token_to_id.get(w, self.unk_id) for w in words]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.id_to_word[int(i)] for i in ids]

    def save(self, path: str | Path) -> None:
        Path(path).write_text(
            json.dumps({"kind": "word", "tokens": self.id_to_word}, ensure_ascii=False), encoding="utf-8"
        )

    @classmethod
    def load(cls, path: str | Path) -> WordTokenizer:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("kind") != "word":
            raise ValueError(f"{path} is not a WordTokenizer file (kind={data.get('kind')!r})")
        return cls(Vocabulary(data["tokens"], WORD_SPECIAL_TOKENS))
