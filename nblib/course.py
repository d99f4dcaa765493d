"""One fine-tuning run of the comparison, start to record: ``finetune_variant(...) -> (classifier, record)``.

Introduced in notebook 02_elmo and used by 03_bert and 04_gpt: every pretrained-vs-random run of the
course is the same steps (the shared classifier on an encoder, the data module of the fixed split, the
trainer with model selection on validation, the results record under ``runs/<preset>/<model>-<variant>``),
so the lessons write only what differs: the encoder, its pooling, its collate and its options.
The learning rate defaults to the preset's choice for the model (``Preset.finetune_lr_for``).
:func:`fit_variant` is the same run without a record (lesson 03's truncation study).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from nblib.classifier import Pooling, SentimentClassifier, count_parameters, fit_classifier
from nblib.datamodules import ClassificationDataModule, Collate
from nblib.presets import Preset
from nblib.records import make_record, record_path, write_record


def fit_variant(
    encoder: nn.Module,
    *,
    preset: Preset,
    split: Any,
    collate: Collate,
    pooling: Pooling,
    seed: int,
    lr: float,
    run_dir: str | Path,
    frame: pd.DataFrame | None = None,
    max_epochs: int | None = None,
    classifier_options: dict | None = None,
) -> tuple[SentimentClassifier, Any, dict]:
    """Fine-tune ``encoder`` (already built and seeded by the caller) on ``frame`` (default: the
    split's train reviews) with checkpoints and logs in ``run_dir``, and score val, test and
    out-of-domain. Writes no results record. Returns the classifier, the trainer and the results
    (``classifier.fit_classifier``'s dict)."""
    frame = split.train if frame is None else frame
    clf = SentimentClassifier(encoder, pooling=pooling, lr=lr, **(classifier_options or {}))
    datamodule = ClassificationDataModule(frame, split.val, split.test, collate, preset.finetune_batch_size,
                                          ood=getattr(split, "ood", None))
    trainer, results = fit_classifier(clf, datamodule, collate, preset, run_dir, seed=seed,
                                      max_epochs=max_epochs)
    return clf, trainer, results


def finetune_variant(
    encoder: nn.Module,
    *,
    model: str,
    variant: str,
    preset: Preset,
    split: Any,
    collate: Collate,
    pooling: Pooling,
    seed: int,
    frame: pd.DataFrame | None = None,
    label_count: int | None = None,
    lr: float | None = None,
    max_epochs: int | None = None,
    pretraining: dict | None = None,
    classifier_options: dict | None = None,
    run_dir: str | Path | None = None,
    **record_extra: Any,
) -> tuple[SentimentClassifier, dict]:
    """Fine-tune ``encoder`` (already built and seeded by the caller, pretrained or not) as
    ``model``/``variant`` on ``frame`` (default: the split's train reviews), score val, test and
    out-of-domain, and write the record ``runs/<preset>/<model>-<variant>[-n<label_count>]/<seed>``
    (or into ``run_dir``, for runs that are not part of the comparison: ``experiments/``).

    ``lr`` defaults to ``preset.finetune_lr_for(model, variant)``; ``classifier_options`` go to
    :class:`SentimentClassifier` (``lm_loss_weight``, ``freeze_encoder``, ``num_layers``, ...);
    ``record_extra`` into the record (``finetune_lr``, ``trainable_parameters`` and ``label_count``
    are added here). Returns the classifier (on the CPU) and the record.
    """
    started = time.time()
    frame = split.train if frame is None else frame
    lr = preset.finetune_lr_for(model, variant) if lr is None else lr
    run_dir = record_path(preset, model, variant, seed, label_count).parent if run_dir is None else Path(run_dir)
    clf, trainer, results = fit_variant(encoder, preset=preset, split=split, collate=collate, pooling=pooling,
                                        seed=seed, lr=lr, run_dir=run_dir, frame=frame, max_epochs=max_epochs,
                                        classifier_options=classifier_options)
    extra = {} if label_count is None else {"label_count": label_count}
    trainable = sum(p.numel() for p in clf.parameters() if p.requires_grad)
    record = make_record(model=model, variant=variant, preset=preset, seed=seed, train_size=len(frame),
                         parameters=count_parameters(encoder), results=results, pretraining=pretraining,
                         started=started, finetune_lr=lr, trainable_parameters=trainable,
                         **extra, **record_extra)
    write_record(record, run_dir / "result.json", trainer=trainer)
    return clf.cpu(), record
