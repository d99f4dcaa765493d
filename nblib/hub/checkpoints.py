"""Public Chinese checkpoints as nblib models: ``load_bert``, ``load_gpt2``, ``load_electra``, ``load_encoder``.

Introduced in notebook 07_pretrained_checkpoints. A Hugging Face checkpoint (found by
:func:`nblib.hub.resolve_checkpoint`: a local folder, the cache, then the hub) comes back as its
tokenizer (Hugging Face's, over the checkpoint's vocab.txt) and nblib's own model filled from its
weights: ``BertForPreTraining`` for BERT (bert-base-chinese, hfl/chinese-*-wwm-*), ``GPT`` for UER's
Chinese GPT-2, ``ElectraDiscriminator`` for ELECTRA discriminators. What the tokenizer cannot read
and how batches are made is :mod:`nblib.hub.hf_tokenizer`'s job; fine-tuning from the command line is
:mod:`nblib.hub.finetune`'s. Transformers is imported inside the loaders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nblib.hub import resolve_checkpoint
from nblib.models.bert import BertForPreTraining
from nblib.models.electra import ElectraDiscriminator
from nblib.models.gpt import GPT
from nblib.models.hf_io import CheckpointMismatchError

RECORD_MODEL = "bert-base-chinese"  # the model name results records carry (lesson 05's table)
# The record's model name by the checkpoint's model_type: a BERT (bert-base-chinese, hfl/*-wwm) or
# an ELECTRA discriminator (hfl/chinese-electra-180g-small-discriminator: 12 M parameters, minutes
# of fine-tuning on a CPU where BERT-base takes hours).
RECORD_MODELS = {"bert": RECORD_MODEL, "electra": "chinese-electra"}


def _model_type(folder: Path) -> str:
    return json.loads((folder / "config.json").read_text()).get("model_type", "")


def load_bert(name_or_path: str | Path) -> tuple[Any, BertForPreTraining]:
    """(Hugging Face tokenizer, nblib ``BertForPreTraining``) from a BERT checkpoint.

    The encoder's weights must all be there (a missing one raises ``CheckpointMismatchError``
    naming it); pretraining heads or a pooler the file lacks stay randomly initialised and are
    listed in ``model.load_report`` (fine-tuning trains the pooler and a new head anyway).
    """
    from transformers import AutoTokenizer

    folder = resolve_checkpoint(name_or_path)
    if _model_type(folder) != "bert":
        raise CheckpointMismatchError(f"{folder} holds a {_model_type(folder)!r} model; nblib's BERT loads "
                         "model_type 'bert' checkpoints (bert-base-chinese, hfl/chinese-*-wwm-*)")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = BertForPreTraining.from_hf(folder, strict=False)
    report = model.load_report
    encoder_missing = [k for k in report.missing
                       if k.startswith("bert.") and not k.startswith("bert.pooler.")]
    if encoder_missing:
        raise CheckpointMismatchError(f"{folder} lacks encoder weights {encoder_missing}")
    if len(tokenizer) > model.config.vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens, the model's embedding table "
                         f"{model.config.vocab_size} rows")
    return tokenizer, model


def load_gpt2(name_or_path: str | Path) -> tuple[Any, GPT]:
    """(Hugging Face ``BertTokenizer``, nblib ``GPT``) from a GPT-2 with a BERT vocabulary.

    UER's Chinese GPT-2 (uer/gpt2-chinese-cluecorpussmall) is a ``GPT2LMHeadModel`` trained on
    ``[CLS] text [SEP]`` with Google's Chinese BERT vocabulary, so it is read with a
    ``BertTokenizer``, not GPT-2's byte-level BPE. Missing or unexpected keys raise, naming them.
    """
    from transformers import BertTokenizerFast

    folder = resolve_checkpoint(name_or_path)
    if _model_type(folder) != "gpt2":
        raise CheckpointMismatchError(f"{folder} holds a {_model_type(folder)!r} model, not 'gpt2'")
    if not (folder / "vocab.txt").is_file():
        raise CheckpointMismatchError(f"{folder} has no vocab.txt: nblib reads Chinese GPT-2 checkpoints with "
                         "a BERT vocabulary (like uer/gpt2-chinese-cluecorpussmall)")
    tokenizer = BertTokenizerFast.from_pretrained(folder)
    return tokenizer, GPT.from_hf(folder)


def load_electra(name_or_path: str | Path) -> tuple[Any, ElectraDiscriminator]:
    """(Hugging Face tokenizer, ``ElectraDiscriminator``) from an ELECTRA discriminator checkpoint.

    ``name_or_path``: a local folder (config.json, weights, vocab.txt / tokenizer.json) or a hub
    name such as ``hfl/chinese-electra-180g-small-discriminator``, found the way
    :func:`load_bert` finds BERT checkpoints (cache first; offline, an error
    that gives the download command). A generator checkpoint, another model type, a missing
    encoder weight or a tokenizer larger than the embedding table raise, naming what is wrong.
    """
    from transformers import AutoTokenizer

    folder = resolve_checkpoint(name_or_path)
    model_type = json.loads((folder / "config.json").read_text()).get("model_type", "")
    if model_type != "electra":
        raise CheckpointMismatchError(f"{folder} holds a {model_type!r} model; ElectraDiscriminator loads "
                                      "model_type 'electra' discriminators (hfl/chinese-electra-*-discriminator)")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = ElectraDiscriminator.from_hf(folder)
    if len(tokenizer) > model.config.vocab_size:
        raise ValueError(f"{folder}: the tokenizer has {len(tokenizer)} tokens, the model's embedding "
                         f"table {model.config.vocab_size} rows")
    return tokenizer, model


def load_encoder(name_or_path: str | Path) -> tuple[Any, Any, str]:
    """(tokenizer, model, model_type) for a BERT or an ELECTRA-discriminator checkpoint.

    Both load into the course's own BERT encoder (``model.bert``) and fine-tune the same way,
    through ``[CLS]`` (lesson 03b: ELECTRA's discriminator is a BERT). Another model type raises.
    """
    folder = resolve_checkpoint(name_or_path)
    kind = _model_type(folder)
    if kind == "electra":
        tokenizer, model = load_electra(folder)
        return tokenizer, model, kind
    tokenizer, model = load_bert(folder)  # raises for anything but model_type 'bert'
    return tokenizer, model, "bert"
