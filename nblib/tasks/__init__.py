"""Lesson 08's shared plumbing for BERT's other three uses: the course encoder, batches, fitting, records.

Introduced in notebook 08_bert_four_uses. The three heads live in :mod:`nblib.tasks.tagging` (one label
per character), :mod:`nblib.tasks.pairs` (two sentences, one label) and :mod:`nblib.tasks.spans` (a passage and
a question, an answer span); this module gives them what they share:

- :class:`CourseEncoder`: lesson 03's pretrained BERT (``runs/<preset>/pretrain/bert.pt``, pretrained
  here with lesson 03's recipe when it is missing) and its random-init twin, built fresh per run.
  Any object with ``encode(input_ids, attention_mask, token_type_ids) -> list[Tensor]`` and
  ``hidden_size`` works as an encoder for the heads (an ELECTRA discriminator, a ``from_hf`` BERT).
- :class:`TaskDataModule`: any list of examples plus a collate, length-grouped training batches.
- :func:`fit_task`: the course's trainer (:func:`nblib.training.classifier.make_trainer`), best epoch restored.
- :func:`write_task_record`: a results record with a ``task`` field, under ``runs/tasks/<preset>/``
  (not ``runs/<preset>/``, whose records are all hotel-sentiment runs that lesson 05 compares).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from nblib import data
from nblib.data import text
from nblib.data.datamodules import LanguageModelDataModule, LengthGroupedSampler, length_sorted
from nblib.models import bert
from nblib.presets import Preset
from nblib.results.records import make_record, runs_dir, write_record
from nblib.training.classifier import make_trainer

LESSON03_RECIPE = {"pre_ln": True, "nsp": False, "whole_word": False}  # lesson 03's parameter defaults


@dataclass
class CourseEncoder:
    """Lesson 03's BERT: the tokenizer it reads with, its config, and its pretrained weights."""

    tokenizer: text.CharTokenizer
    config: bert.BertConfig
    state: dict[str, torch.Tensor]
    info: dict  # the pretraining record part (tokens, steps, seconds, loss, recipe)

    def build(self, init: str, seed: int = 0) -> bert.BertForPreTraining:
        """A fresh encoder: ``"pretrained"`` (lesson 03's weights) or ``"random"`` (seeded init)."""
        if init not in ("pretrained", "random"):
            raise ValueError(f"init must be 'pretrained' or 'random', got {init!r}")
        torch.manual_seed(seed)
        model = bert.BertForPreTraining(self.config)
        if init == "pretrained":
            missing, unexpected = model.load_state_dict(self.state, strict=False)
            if missing or unexpected:
                raise RuntimeError(f"lesson 03's checkpoint does not fit: missing {missing}, "
                                   f"unexpected {unexpected}; rerun notebooks/03_bert.ipynb")
        return model


def course_encoder(preset: Preset, seed: int = 0, corpus: Sequence[str] | None = None) -> CourseEncoder:
    """Load lesson 03's pretrained BERT, or pretrain it exactly as lesson 03 does when it is missing.

    The checkpoint ``runs/<preset>/pretrain/bert.pt`` describes itself (model config, tokenizer
    vocabulary: :func:`nblib.training.pretraining.load_pretrained`); the fine-tuning config is that config
    with BERT's fine-tuning dropout (0.1), as in lesson 03. When the checkpoint is absent, lesson
    03's pretraining runs here with its default recipe on the same corpus (``corpus`` replaces it in
    tests) and is cached under the same name (seconds in ``smoke``, minutes in ``small``).
    Introduced in notebook 08_bert_four_uses.
    """
    import dataclasses

    from nblib.training import pretraining, saved_runs

    path = runs_dir() / preset.name / "pretrain" / "bert.pt"
    if pretraining.saved_pretraining(preset, "bert") is None:
        print(f"{path} is missing: pretraining BERT here with lesson 03's recipe {LESSON03_RECIPE}")
        corpus = list(data.pretraining_corpus(max_texts=preset.max_corpus_texts, seed=seed)
                      if corpus is None else corpus)
        tokenizer = text.CharTokenizer.build(corpus, min_count=preset.min_char_count)
        n_heldout = max(1, len(corpus) // 100)
        collate = bert.make_collate(tokenizer, preset.pretrain_seq_len, nsp=LESSON03_RECIPE["nsp"],
                                    whole_word=LESSON03_RECIPE["whole_word"],
                                    mlm_probability=preset.mlm_probability)
        lm_data = LanguageModelDataModule(corpus[:-n_heldout], corpus[-n_heldout:], collate,
                                          preset.pretrain_batch_size, seed=seed,
                                          chars_read=bert.characters_read(preset.pretrain_seq_len))
        torch.manual_seed(seed)
        model = bert.BertForPreTraining(bert.BertConfig.from_preset(
            preset, tokenizer.vocab_size, pre_ln=LESSON03_RECIPE["pre_ln"], pretraining=True))
        pretraining.pretrain(model, lm_data, preset, pretraining.PretrainingRun("bert", seed=seed, recipe=LESSON03_RECIPE))
    model, info = pretraining.load_pretrained(preset, "bert")
    if not isinstance(model, bert.BertForPreTraining) or not info.get("tokenizers"):
        raise RuntimeError(f"{path} is not a BERT checkpoint with its vocabulary; rerun notebooks/03_bert.ipynb")
    tokenizer = saved_runs.tokenizer_from_vocabulary(next(iter(info["tokenizers"].values())))
    defaults = bert.BertConfig()
    config = dataclasses.replace(model.config, hidden_dropout_prob=defaults.hidden_dropout_prob,
                                 attention_probs_dropout_prob=defaults.attention_probs_dropout_prob)
    info = {k: v for k, v in info.items() if k not in ("history", "tokenizers")}
    return CourseEncoder(tokenizer, config, model.state_dict(), info)


class TaskDataModule(pl.LightningDataModule):
    """Examples of any kind for fine-tuning: ``parts`` maps train/val/test to lists, ``collate``
    turns a list of examples into a batch (labels included), ``length`` sizes an example so
    training batches group similar lengths (:class:`nblib.data.datamodules.LengthGroupedSampler`)."""

    def __init__(self, parts: dict[str, Sequence[Any]], collate: Callable[[list[Any]], dict],
                 batch_size: int = 32, length: Callable[[Any], int] = len,
                 eval_batch_size: int | None = None):
        super().__init__()
        for name in ("train", "val"):
            if not parts.get(name):
                raise ValueError(f"the {name} part is empty")
        self.parts = {k: list(v) for k, v in parts.items()}
        self.collate, self.length = collate, length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or 2 * batch_size

    def _loader(self, name: str) -> DataLoader:
        items = self.parts[name]
        lengths = [self.length(x) for x in items]
        if name == "train":
            sampler: Any = LengthGroupedSampler(lengths, self.batch_size)
            size = self.batch_size
        else:
            sampler, size = length_sorted(lengths), self.eval_batch_size
        return DataLoader(items, batch_size=size, sampler=sampler, collate_fn=self.collate)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")


def fit_task(module: pl.LightningModule, datamodule: pl.LightningDataModule, preset: Preset,
             run_dir: str | Path, *, seed: int, monitor: str, max_epochs: int) -> dict:
    """Fine-tune with the course's trainer, keep the best epoch by ``monitor`` (a validation
    metric, higher is better) and load it back. Returns the record's ``finetuning`` part."""
    trainer = make_trainer(preset, run_dir, seed=seed, max_epochs=max_epochs, monitor=monitor,
                           log_every_n_steps=10)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    seconds = time.perf_counter() - start
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best:
        module.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
    score = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
    return {"epochs": trainer.current_epoch, "steps": trainer.global_step, "seconds": round(seconds, 2),
            "best_checkpoint": best, f"best_{monitor}": None if score is None else round(float(score), 4)}


def encoder_parameters(encoder: nn.Module) -> int:
    """Parameters of the encoder proper (without BERT's pretraining heads, unused by the tasks)."""
    core = getattr(encoder, "bert", encoder)
    return sum(p.numel() for p in core.parameters())


def task_record_path(preset: Preset | str, task: str, model: str, variant: str, seed: int) -> Path:
    """``runs/tasks/<preset>/<task>/<model>-<variant>/<seed>/result.json``."""
    name = preset if isinstance(preset, str) else preset.name
    return runs_dir() / "tasks" / name / task / f"{model}-{variant}" / str(seed) / "result.json"


def write_task_record(*, task: str, model: str, variant: str, preset: Preset, seed: int,
                      train_size: int, parameters: int, val: dict, test: dict, finetuning: dict,
                      pretraining: dict | None, started: float, **extra: Any) -> Path:
    """One results record for a lesson-08 run, through :mod:`nblib.results.records` with ``task`` set.

    ``val``/``test`` hold the task's metrics; the record format's ``accuracy``, ``macro_f1`` and
    ``recall`` keys must be present (None where the task has no such number)."""
    record = make_record(model=model, variant=variant, preset=preset, seed=seed, train_size=train_size,
                         parameters=parameters, results={"val": val, "test": test, "finetuning": finetuning},
                         pretraining=pretraining, started=started, task=task, **extra)
    path = task_record_path(preset, task, model, variant, seed)
    write_record(record, path)
    return path


def read_task_records(preset: Preset | str, task: str | None = None) -> list[dict]:
    """Every lesson-08 record of ``preset`` (of one ``task`` when given), read back and validated."""
    from nblib.results.records import load_record

    name = preset if isinstance(preset, str) else preset.name
    root = runs_dir() / "tasks" / name / (task or "")
    return [load_record(p) for p in sorted(root.rglob("result.json"))] if root.exists() else []
