"""Fine-tuning one classifier: fit, keep the best epoch, save the run so it can be loaded, score it.

Introduced in notebook 01_baselines and used by every fine-tuning run of the course. It sits above
:mod:`nblib.training.classifier` (the model, trainer, metrics) and :mod:`nblib.training.saved_runs`
(a run folder that describes itself), and joins them: a fitted run is always a loadable one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from nblib.data.datamodules import ClassificationDataModule, Collate
from nblib.presets import Preset
from nblib.training.classifier import SentimentClassifier, make_trainer, predict, score_predictions
from nblib.training.saved_runs import save_classifier


def fit_classifier(
    model: SentimentClassifier,
    datamodule: ClassificationDataModule,
    collate: Collate,
    preset: Preset,
    run_dir: str | Path,
    *,
    seed: int = 0,
    **trainer_kwargs: Any,
) -> tuple[pl.Trainer, dict]:
    """Fine-tune, restore the best epoch by validation macro-F1, then score val and test.

    Returns the trainer and a dict with ``finetuning`` (epochs, seconds), ``val`` and ``test``
    metrics, ``test_long``/``test_short`` (reviews over / up to 128 characters), the test
    predictions and the inference throughput: the parts of a results record a run measures.
    """
    trainer = make_trainer(preset, run_dir, seed=seed, **trainer_kwargs)
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    seconds = time.perf_counter() - start
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best:
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        model.load_state_dict(state)
    if trainer.is_global_zero:  # classifier.json beside the record: load_classifier(run_dir) reads it back
        save_classifier(run_dir, model, collate, weights=best or None)
    out: dict[str, Any] = {"finetuning": {"epochs": trainer.current_epoch, "seconds": round(seconds, 2),
                                          "best_checkpoint": best}}
    for name in ("val", "test", "ood"):
        if name not in datamodule.frames:
            continue  # no out-of-domain frame given
        frame = datamodule.frames[name]
        pred, prob, speed = predict(model, frame["text"].tolist(), collate)
        out.update(score_predictions(frame, pred, prob, split_name=name))
        if name == "test":
            out["inference_reviews_per_s"] = round(speed, 1)
    return trainer, out
