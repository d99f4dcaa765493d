"""Chinese reviews through a Hugging Face BERT vocabulary: its gaps, [UNK] counts, batches, decoding.

Introduced in notebook 07_pretrained_checkpoints. Google's Chinese vocab.txt (bert-base-chinese, the
hfl models, UER's GPT-2) lacks curly quotes, ellipses, dashes, full-width Latin letters and
uppercase: ``normalization_table`` / ``normalize_text`` map them to characters it has, and
``count_unk`` measures what is left. ``HFCollate`` turns reviews into a batch for nblib's BERT with
the checkpoint's tokenizer; ``decode`` turns ids back into Chinese text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

# Characters missing from Google's Chinese BERT vocab.txt (shared by bert-base-chinese, the hfl
# models and UER's GPT-2), each mapped to characters the vocabulary has.
GAP_REPLACEMENTS = {
    "“": '"', "”": '"', "‘": "'", "’": "'",  # curly quotes
    "…": "...",  # ellipsis
    "—": "-", "–": "-", "―": "-",  # dashes
    "～": "~", "＊": "*",  # full-width symbols that BERT's tokenizer does not split off as punctuation
}


def normalization_table(vocab: Mapping[str, int] | None = None) -> dict[int, str]:
    """A ``str.translate`` table: curly quotes, ellipses, dashes, ～ and ＊ to ASCII, full-width
    Latin letters and digits to ASCII, uppercase Latin to lowercase.

    With a ``vocab`` (``tokenizer.get_vocab()``) a character is left alone when the vocabulary
    has it both as a token and as a word-inner piece (``x`` and ``##x``: WordPiece needs the
    second inside words such as ``３０``), and a replacement is used only when the vocabulary has
    every character it produces.
    """
    pairs = dict(GAP_REPLACEMENTS)
    for offset in range(26):
        lower = chr(ord("a") + offset)
        pairs[chr(ord("A") + offset)] = lower
        pairs[chr(0xFF21 + offset)] = lower  # Ａ..Ｚ
        pairs[chr(0xFF41 + offset)] = lower  # ａ..ｚ
    for digit in range(10):
        pairs[chr(0xFF10 + digit)] = str(digit)  # ０..９
    if vocab is not None:
        pairs = {src: dst for src, dst in pairs.items()
                 if not (src in vocab and f"##{src}" in vocab) and all(ch in vocab for ch in dst)}
    return {ord(src): dst for src, dst in pairs.items()}


DEFAULT_TABLE = normalization_table()


def normalize_text(text: str, table: Mapping[int, str] | None = None) -> str:
    """``text`` with the characters of ``table`` (default: ``DEFAULT_TABLE``) replaced."""
    return text.translate(DEFAULT_TABLE if table is None else table)


@dataclass
class UnkReport:
    """How often a tokenizer falls back to [UNK] on a set of texts."""

    texts: int  # texts looked at
    texts_with_unk: int  # texts with at least one [UNK]
    tokens: int  # tokens produced (specials excluded)
    unk_tokens: int  # of which [UNK]
    top: list[tuple[str, int]] = field(default_factory=list)  # strings read as [UNK], most frequent first


def count_unk(texts: Sequence[str], tokenizer: Any, top: int = 15, batch_size: int = 512) -> UnkReport:
    """Count [UNK] tokens over ``texts`` and collect the strings behind them (offset mapping)."""
    unk = tokenizer.unk_token_id
    with_unk = n_tokens = n_unk = 0
    culprits: Counter[str] = Counter()
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start:start + batch_size])
        enc = tokenizer(chunk, add_special_tokens=False, return_offsets_mapping=True)
        for text, ids, offsets in zip(chunk, enc["input_ids"], enc["offset_mapping"], strict=True):
            hits = [text[a:b] for i, (a, b) in zip(ids, offsets, strict=True) if i == unk]
            with_unk += bool(hits)
            n_tokens += len(ids)
            n_unk += len(hits)
            culprits.update(hits)
    return UnkReport(len(texts), with_unk, n_tokens, n_unk, culprits.most_common(top))


# ---------------------------------------------------------------------------------------------
# Batches with the checkpoint's tokenizer


class HFCollate:
    """Texts → a batch for nblib's BERT: input_ids, attention_mask (bool), token_type_ids.

    ``[CLS] text [SEP]`` with the checkpoint's tokenizer, the text cut after its first
    ``max_length - 2`` tokens (head truncation, as the course's character tokenizer), padded to
    the longest text of the batch. ``table`` normalises the tokenizer gaps first (None: don't).
    """

    def __init__(self, tokenizer: Any, max_length: int = 128, table: Mapping[int, str] | None = None):
        if max_length < 3:
            raise ValueError(f"max_length {max_length} leaves no room for text between [CLS] and [SEP]")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.table = table

    def __call__(self, texts: Sequence[str]) -> dict[str, Tensor]:
        if self.table is not None:
            texts = [t.translate(self.table) for t in texts]
        enc = self.tokenizer(list(texts), max_length=self.max_length, truncation=True,
                             padding=True, return_token_type_ids=True, return_tensors="pt")
        return {"input_ids": enc["input_ids"],  # (B, T)
                "attention_mask": enc["attention_mask"].bool(),  # (B, T), True at real tokens
                "token_type_ids": enc["token_type_ids"]}  # (B, T), all 0: one segment


def decode(tokenizer: Any, ids: Sequence[int]) -> str:
    """Token ids → Chinese text: specials dropped, no spaces between characters, ## pieces joined."""
    special = set(tokenizer.all_special_ids)
    tokens = tokenizer.convert_ids_to_tokens([int(i) for i in ids if int(i) not in special])
    return "".join(t[2:] if t.startswith("##") else t for t in tokens)
