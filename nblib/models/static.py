"""The "before contextual embeddings" baseline: one vector per character, no context.

Introduced in notebook 01_baselines. A bag of vectors averaged over the review: whatever a
character means in a sentence, it gets the same vector, which is what ELMo, BERT and GPT fix.
"""

from __future__ import annotations

import torch
from torch import nn


class StaticEmbedding(nn.Module):
    """An embedding table behind the encoder protocol: ``encode`` returns one layer (B, T, H)."""

    def __init__(self, vocab_size: int, hidden_size: int, pad_id: int = 0):
        super().__init__()
        self.hidden_size = hidden_size
        self.embedding = nn.Embedding(vocab_size, hidden_size, padding_idx=pad_id)
        nn.init.normal_(self.embedding.weight, std=0.1)
        with torch.no_grad():
            self.embedding.weight[pad_id].zero_()

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: torch.Tensor) -> list[torch.Tensor]:
        return [self.embedding(input_ids)]  # 1 × (B, T, H): the vector does not look at neighbours
