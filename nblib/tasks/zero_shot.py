"""Zero-shot sentiment from a causal language model: a prompt after the review, two sets of label words.

Introduced in notebook 04_gpt (the course's own GPT and character tokenizer); notebook
07_pretrained_checkpoints applies the same scorer to UER's Chinese GPT-2 with its Hugging Face
tokenizer. The score of a review is log P(a positive word) − log P(a negative word) as the token
after ``[CLS] review prompt``: above a threshold (0, or one calibrated) the review reads positive.

Both kinds of tokenizer work: the course's ``text.CharTokenizer`` and a Hugging Face (BERT-vocabulary)
tokenizer; :func:`encode_plain` and :func:`token_ids` hide the difference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from nblib.data.text import CharTokenizer, pad_batch

# A review ending in one of these already ends a sentence; lesson 04 closes the others with 。
SENTENCE_ENDS = "。！？!?.…~～"


def label_score(next_token_logits: Tensor, positive_ids: Sequence[int],
                negative_ids: Sequence[int]) -> Tensor:
    """log P(a positive label word) − log P(a negative one), from next-token logits (B, V) → (B,).

    P(a positive word) is the sum of the softmax probabilities of ``positive_ids`` (logsumexp of
    their log-probabilities); with one word per side it is that word's log-probability.
    """
    log_probs = next_token_logits.float().log_softmax(-1)
    return log_probs[:, list(positive_ids)].logsumexp(-1) - log_probs[:, list(negative_ids)].logsumexp(-1)


def encode_plain(tokenizer: Any, text: str) -> list[int]:
    """The ids of ``text`` without special tokens, for a ``CharTokenizer`` or a Hugging Face tokenizer."""
    if isinstance(tokenizer, CharTokenizer):
        return tokenizer.encode(text, add_special=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def token_ids(tokenizer: Any, words: Sequence[str]) -> list[int]:
    """The id of each single-token word; a word the vocabulary lacks is an error."""
    if isinstance(tokenizer, CharTokenizer):
        ids = [tokenizer.token_to_id.get(w, tokenizer.unk_id) for w in words]
        unk = tokenizer.unk_id
    else:
        ids = tokenizer.convert_tokens_to_ids(list(words))
        unk = tokenizer.unk_token_id
    missing = [w for w, i in zip(words, ids, strict=True) if i == unk]
    if missing:
        raise ValueError(f"label words {missing} are not single tokens of this vocabulary")
    return ids


def _cls_pad(tokenizer: Any) -> tuple[int, int]:
    if isinstance(tokenizer, CharTokenizer):
        return tokenizer.cls_id, tokenizer.pad_id
    return tokenizer.cls_token_id, tokenizer.pad_token_id


@torch.no_grad()
def zero_shot_scores(model: nn.Module, tokenizer: Any, texts: Sequence[str], suffix: str,
                     positive: Sequence[str], negative: Sequence[str], max_length: int = 128,
                     batch_size: int = 32, table: Mapping[int, str] | None = None,
                     end_sentence: str | None = None) -> Tensor:
    """:func:`label_score` of the token after ``[CLS] text suffix`` for every text → (N,), float32.

    ``model`` is a causal LM with ``encode(input_ids, attention_mask)`` (hidden states, last one after
    the final LayerNorm) and ``logits(h)``: nblib's ``GPT``. Each text has ``table`` applied
    (``str.translate``; None: as is) and trailing whitespace removed, and is cut (head kept) so the
    prompt fits ``max_length`` tokens with the suffix always whole. With ``end_sentence`` (lesson 04:
    "。") a text that does not end in one of :data:`SENTENCE_ENDS` gets that token appended first, and
    room is kept for it. No [SEP]: for UER's GPT-2 it means "end of text". Batches of ``batch_size``
    are right-padded and the logits read at each row's last real token.
    """
    model.eval()
    pos, neg = token_ids(tokenizer, positive), token_ids(tokenizer, negative)
    end_id = None if end_sentence is None else token_ids(tokenizer, [end_sentence])[0]
    suffix_ids = encode_plain(tokenizer, suffix)
    budget = max_length - 1 - len(suffix_ids) - (end_id is not None)  # tokens left for the review
    if budget < 1:
        raise ValueError(f"suffix of {len(suffix_ids)} tokens leaves no room in {max_length}")
    cls_id, pad_id = _cls_pad(tokenizer)
    device = next(model.parameters()).device
    scores = []
    for start in range(0, len(texts), batch_size):
        rows = []
        for review in texts[start:start + batch_size]:
            review = (review if table is None else review.translate(table)).rstrip()
            ids = encode_plain(tokenizer, review)[:budget]
            if end_id is not None and not review.endswith(tuple(SENTENCE_ENDS)):
                ids.append(end_id)  # end the sentence before the prompt
            rows.append([cls_id, *ids, *suffix_ids])
        batch = pad_batch(rows, pad_id)
        mask = batch["attention_mask"].to(device)  # (B, T), right padding
        h = model.encode(batch["input_ids"].to(device), mask)[-1]  # (B, T, H), after the final LayerNorm
        last = h[torch.arange(len(rows), device=device), mask.sum(1) - 1]  # (B, H): each row's last real token
        scores.append(label_score(model.logits(last), pos, neg).cpu())
    return torch.cat(scores)
