"""Lesson 03b's ELECTRA pretraining inputs, built as the lesson builds them, for the probes in this folder.

Section 3 of notebooks/03b_electra.ipynb: lesson 03's corpus and character vocabulary, the corpus's last 1% held
out, lesson 03's masked-LM collate at BERT's 15% (no NSP), length-grouped batches in the seeded order, and the
pretraining config (pre-LN, lambda = 50, a generator ``generator_size`` as wide as the discriminator).
A probe imports it as a sibling module (``python experiments/<probe>.py`` puts this folder on the path).
"""

from __future__ import annotations

from pathlib import Path

import torch

from nblib import data
from nblib.data import datamodules, text
from nblib.models import bert, electra
from nblib.presets import Preset

RTD_WEIGHT, PRE_LN = 50.0, True  # lesson 03b's defaults


def pretraining_parts(preset: Preset, *, seed: int = 0, generator_size: float = 0.5
                      ) -> tuple[text.CharTokenizer, datamodules.LanguageModelDataModule, electra.ElectraConfig]:
    """(tokenizer, masked-LM data, ``ElectraConfig`` for pretraining) exactly as lesson 03b builds them."""
    corpus = data.pretraining_corpus(max_texts=preset.max_corpus_texts, seed=seed)
    tokenizer = text.CharTokenizer.build(corpus, min_count=preset.min_char_count)  # lesson 03's vocabulary
    n_heldout = max(1, len(corpus) // 100)
    lm_data = datamodules.LanguageModelDataModule(
        corpus[:-n_heldout], corpus[-n_heldout:], bert.make_collate(tokenizer, preset.pretrain_seq_len),
        preset.pretrain_batch_size, seed=seed, chars_read=bert.characters_read(preset.pretrain_seq_len))
    config = electra.ElectraConfig.from_preset(preset, tokenizer.vocab_size, pretraining=True,
                                               generator_size=generator_size, rtd_weight=RTD_WEIGHT, pre_ln=PRE_LN)
    return tokenizer, lm_data, config


def fine_tuning_discriminator(preset: Preset, checkpoint: str | Path | None, seed: int, *,
                              generator_size: float = 0.5) -> tuple[text.CharTokenizer, electra.ElectraDiscriminator]:
    """(tokenizer, the discriminator lesson 03b fine-tunes): fine-tuning dropout, seeded with ``seed``, with the
    discriminator weights of ELECTRA's pretraining ``checkpoint`` (None: random init). The pretraining model is
    built before seeding, so the global stream after the seed (the classifier head's init, dropout) is the lesson's."""
    tokenizer, _, pretrain_config = pretraining_parts(preset, seed=0, generator_size=generator_size)
    state = None
    if checkpoint is not None:
        pretrained = electra.ElectraForPreTraining(pretrain_config)
        pretrained.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"])
        state = pretrained.discriminator.state_dict()
    torch.manual_seed(seed)
    encoder = electra.ElectraDiscriminator(bert.BertConfig.from_preset(preset, tokenizer.vocab_size, pre_ln=PRE_LN))
    if state is not None:
        encoder.load_state_dict(state)
    return tokenizer, encoder
