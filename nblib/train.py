"""Training on Lightning: data modules, one classifier for every model, pretraining, results records.

Introduced in notebook 01_baselines (classifier, trainer, records) and used by every later lesson.

The comparison is fair because every model goes through the same code here: the same
:class:`SentimentClassifier` (only the pooling rule differs), the same optimiser family and
schedule, the same model selection (best validation macro-F1), the same metrics (torchmetrics).
Any model plugs in through its ``encode(input_ids, attention_mask, **extra) -> list[Tensor]``,
which returns every layer's hidden states ``(L+1) × (B, T, H)``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pytorch_lightning as pl
import torch
import torchmetrics
from torch import nn
from torch.utils.data import DataLoader, Sampler

from nblib.presets import Preset

REPO_ROOT = Path(__file__).resolve().parents[1]
Pooling = Literal["cls", "last", "mean", "mix"]
Collate = Callable[[list[str]], dict[str, torch.Tensor]]


def runs_dir() -> Path:
    """Where checkpoints, executed notebooks and results records go (``NBLIB_RUNS_DIR`` or runs/)."""
    return Path(os.environ.get("NBLIB_RUNS_DIR") or REPO_ROOT / "runs")


# ---------------------------------------------------------------------------------------------
# Data modules


class _TextDataset(torch.utils.data.Dataset):
    def __init__(self, texts: Sequence[str], labels: Sequence[int] | None = None):
        self.texts = list(texts)
        self.labels = None if labels is None else [int(y) for y in labels]

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> tuple[str, int]:
        return self.texts[i], (-1 if self.labels is None else self.labels[i])


def _labelled_collate(collate: Collate) -> Callable[[list[tuple[str, int]]], dict[str, torch.Tensor]]:
    def fn(items: list[tuple[str, int]]) -> dict[str, torch.Tensor]:
        batch = collate([text for text, _ in items])
        batch["labels"] = torch.tensor([label for _, label in items], dtype=torch.long)
        return batch

    return fn


class LengthGroupedSampler(Sampler[int]):
    """A shuffled order of review indices in which each run of ``batch_size`` has similar lengths.

    A batch is padded to its longest review, and with random batches of 32 hotel reviews that is
    almost always the 128-token cap (a third of the reviews reach it): ~1/3 of every fine-tuning
    step is padding. Like Hugging Face's ``group_by_length``: shuffle, cut into "mega-batches" of
    ``group_batches`` batches, sort each by length, then shuffle the batches. Randomness comes from
    torch's global generator (as ``RandomSampler``'s), so ``seed_everything`` fixes it and each
    epoch differs. The padded width of a batch falls from ~128 to ~86 tokens on the hotel reviews.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, group_batches: int = 50):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths = torch.as_tensor(list(lengths))
        self.batch_size = batch_size
        self.group_size = batch_size * group_batches

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        order = torch.randperm(len(self.lengths))
        batches = []
        for start in range(0, len(order), self.group_size):
            group = order[start : start + self.group_size]
            group = group[torch.argsort(self.lengths[group], descending=True, stable=True)]
            batches += list(group.split(self.batch_size))
        # The one short batch (the last of the last group) stays last, so the DataLoader, which cuts
        # this order every `batch_size` indices, cuts exactly these batches.
        full = [b for b in batches if len(b) == self.batch_size]
        rest = [b for b in batches if len(b) != self.batch_size]
        shuffled = [full[i] for i in torch.randperm(len(full)).tolist()] + rest
        for batch in shuffled:
            yield from batch.tolist()


def length_sorted(lengths: Sequence[int]) -> list[int]:
    """Indices longest first: evaluation batches then pad little (metrics ignore the order)."""
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


class ClassificationDataModule(pl.LightningDataModule):
    """Hotel reviews for fine-tuning: train/val/test frames (``text``, ``label``) and a collate.

    ``collate`` turns a list of texts into the model's input dict (e.g. a tokenizer's
    ``batch_encode`` with a fixed ``max_len``); labels are added here. With ``group_by_length``
    (default) batches hold reviews of similar length in characters (:class:`LengthGroupedSampler`),
    which cuts the padding a batch carries by a third on the hotel reviews.
    """

    def __init__(
        self,
        train: pd.DataFrame,
        val: pd.DataFrame,
        test: pd.DataFrame,
        collate: Collate,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        group_by_length: bool = True,
    ):
        super().__init__()
        self.group_by_length = group_by_length
        self.frames = {"train": train, "val": val, "test": test}
        for name, frame in self.frames.items():
            if not {"text", "label"} <= set(frame.columns):
                raise ValueError(f"{name} frame needs columns 'text' and 'label', has {list(frame.columns)}")
            if len(frame) == 0:
                raise ValueError(f"{name} frame is empty")
        self.collate = _labelled_collate(collate)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or 2 * batch_size

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        frame = self.frames[name]
        dataset = _TextDataset(frame["text"].tolist(), frame["label"].tolist())
        size = self.batch_size if name == "train" else self.eval_batch_size
        if not self.group_by_length:
            return DataLoader(dataset, batch_size=size, shuffle=shuffle, collate_fn=self.collate)
        lengths = [len(t) for t in dataset.texts]
        sampler = LengthGroupedSampler(lengths, size) if shuffle else length_sorted(lengths)
        return DataLoader(dataset, batch_size=size, sampler=sampler, collate_fn=self.collate)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


class LanguageModelDataModule(pl.LightningDataModule):
    """Unlabelled text for pretraining; ``collate`` builds the objective's batch (masking, shifting).

    Training batches group texts of similar length (:class:`LengthGroupedSampler`): the corpus is
    mostly short reviews (45 characters on average, 8% over 128), so a random batch of 16 cut at
    128 would be ~62% padding, a grouped one ~3%. The held-out batches keep the corpus order.
    """

    def __init__(
        self,
        train_texts: Sequence[str],
        val_texts: Sequence[str],
        collate: Collate,
        batch_size: int = 32,
    ):
        super().__init__()
        if not train_texts:
            raise ValueError("no pretraining text")
        self.train_texts, self.val_texts = list(train_texts), list(val_texts)
        self.collate = collate
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        sampler = LengthGroupedSampler([len(t) for t in self.train_texts], self.batch_size)
        return DataLoader(self.train_texts, batch_size=self.batch_size, sampler=sampler,
                          collate_fn=self.collate, drop_last=True)

    def heldout_dataloader(self) -> DataLoader:
        """Held-out text for :func:`evaluate_pretraining` (not a Lightning validation loop)."""
        return DataLoader(self.val_texts, batch_size=self.batch_size, collate_fn=self.collate)


# ---------------------------------------------------------------------------------------------
# Pooling and the shared classifier


class ScalarMix(nn.Module):
    """ELMo's scalar mix: γ · Σ_j softmax(w)_j · h_j (Peters et al. 2018), introduced in 02_elmo.

    ``w`` starts at zero (an even average) and ``γ`` at one; the task learns both. With
    ``layer_norm`` each layer is first normalised per token (zero mean, unit variance over its H
    features, no learned scale): layers of very different scales then start on an equal footing.
    ELMo's option normalised over the whole batch; per token keeps a review's vector independent
    of the batch it is in.
    """

    def __init__(self, num_layers: int, layer_norm: bool = False):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_layers))
        self.gamma = nn.Parameter(torch.ones(()))
        self.layer_norm = layer_norm

    def forward(self, layers: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(layers) != len(self.weights):
            raise ValueError(f"ScalarMix built for {len(self.weights)} layers, got {len(layers)}")
        norm = torch.softmax(self.weights, dim=0)
        mixed = 0
        for w, h in zip(norm, layers, strict=True):  # h: (B, T, H)
            if self.layer_norm:
                h = nn.functional.layer_norm(h, h.shape[-1:])
            mixed = mixed + w * h
        return self.gamma * mixed  # (B, T, H)


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of ``h`` (B, T, H) over real positions (``mask`` (B, T) True)."""
    m = mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
    return (h * m).sum(1) / m.sum(1).clamp(min=1)  # (B, H)


def last_real_token(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The hidden state at each row's last real token, whatever the padding side (GPT pooling)."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask, positions, -1).amax(dim=1).clamp(min=0)  # (B,)
    return h[torch.arange(h.shape[0], device=h.device), last]  # (B, H)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class SentimentClassifier(pl.LightningModule):
    """One classifier for every encoder: pool the hidden states, dropout, a linear layer.

    Pooling rules: ``cls`` (BERT: ``h[-1][:, 0]`` through the model's ``pool`` if it has one),
    ``last`` (GPT: the last real token), ``mean`` (masked mean of the last layer),
    ``mix`` (ELMo: :class:`ScalarMix` of all layers, then masked mean). ``layer`` picks another
    layer than the last for ``cls``/``last``/``mean`` (used by the per-layer probes).
    ``lm_loss_weight`` λ adds GPT-1's auxiliary language-model loss through ``encoder.lm_loss``.
    ``freeze_encoder`` trains only the head (and the scalar mix), as ELMo is usually used;
    ``mix_layer_norm`` normalises each layer per token before the mix (see :class:`ScalarMix`).
    """

    def __init__(
        self,
        encoder: nn.Module,
        pooling: Pooling = "cls",
        num_classes: int = 2,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        dropout: float = 0.1,
        lm_loss_weight: float = 0.0,
        freeze_encoder: bool = False,
        layer: int = -1,
        num_layers: int | None = None,
        mix_layer_norm: bool = False,
    ):
        super().__init__()
        if pooling not in ("cls", "last", "mean", "mix"):
            raise ValueError(f"unknown pooling {pooling!r}; use 'cls', 'last', 'mean' or 'mix'")
        if lm_loss_weight and not hasattr(encoder, "lm_loss"):
            raise ValueError("lm_loss_weight > 0 needs an encoder with an lm_loss method (GPT)")
        self.save_hyperparameters(ignore=["encoder"])
        self.encoder = encoder
        if freeze_encoder:
            encoder.requires_grad_(False)
        if pooling == "mix":
            if num_layers is None:
                raise ValueError("pooling='mix' needs num_layers (the length of encode()'s list)")
            self.mix = ScalarMix(num_layers, layer_norm=mix_layer_norm)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.hidden_size, num_classes)
        metrics = torchmetrics.MetricCollection(
            {
                "accuracy": torchmetrics.Accuracy(task="multiclass", num_classes=num_classes),
                "macro_f1": torchmetrics.F1Score(task="multiclass", num_classes=num_classes, average="macro"),
                "recall": torchmetrics.Recall(task="multiclass", num_classes=num_classes, average=None),
            }
        )
        self.val_metrics = metrics.clone(prefix="val_")
        self.test_metrics = metrics.clone(prefix="test_")

    def pooled(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        mask = inputs["attention_mask"].bool()
        if self.hparams.freeze_encoder:
            self.encoder.eval()  # no dropout inside a frozen encoder
        hidden = self.encoder.encode(**inputs)  # (L+1) × (B, T, H)
        h = hidden[self.hparams.layer]
        rule = self.hparams.pooling
        if rule == "cls":
            pooled = h[:, 0]
            if hasattr(self.encoder, "pool") and self.hparams.layer == -1:
                pooled = self.encoder.pool(pooled)
        elif rule == "last":
            pooled = last_real_token(h, mask)
        elif rule == "mean":
            pooled = masked_mean(h, mask)
        else:
            pooled = masked_mean(self.mix(hidden), mask)  # per-token mix; padding is averaged away
        return pooled, hidden  # (B, H)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        pooled, _ = self.pooled(batch)
        return self.head(self.dropout(pooled))  # (B, C)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        pooled, hidden = self.pooled(batch)
        logits = self.head(self.dropout(pooled))
        loss = nn.functional.cross_entropy(logits, batch["labels"])
        self.log("train_loss", loss, prog_bar=True, batch_size=len(logits))
        if self.hparams.lm_loss_weight:
            lm = self.encoder.lm_loss(hidden[-1], batch["input_ids"], batch["attention_mask"])
            self.log("train_lm_loss", lm, batch_size=len(logits))
            loss = loss + self.hparams.lm_loss_weight * lm
        return loss

    def _eval_step(self, batch: dict[str, torch.Tensor], metrics: torchmetrics.MetricCollection) -> None:
        logits = self(batch)
        metrics.update(logits.argmax(-1), batch["labels"])

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics)

    def _log_metrics(self, metrics: torchmetrics.MetricCollection) -> None:
        values = metrics.compute()
        for name, value in values.items():
            if value.ndim == 0:
                self.log(name, value, prog_bar=name.endswith("macro_f1"), sync_dist=True)
            else:  # per-class recall
                for c, v in enumerate(value):
                    self.log(f"{name}_{c}", v, sync_dist=True)
        metrics.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics(self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_metrics(self.test_metrics)

    def configure_optimizers(self) -> Any:
        return _adamw_with_warmup(self, self.hparams.lr, self.hparams.weight_decay,
                                  self.hparams.warmup_ratio, betas=(0.9, 0.999))


def _adamw_with_warmup(
    module: pl.LightningModule,
    lr: float,
    weight_decay: float,
    warmup: float | int,
    betas: tuple[float, float],
) -> Any:
    """AdamW, no decay on biases and norms, linear warm-up then cosine decay to 10% of ``lr``.

    ``warmup`` is a fraction of the total steps when below 1, else a number of steps.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=betas,
    )
    planned = max(1, int(module.trainer.estimated_stepping_batches))
    warm = int(warmup * planned) if warmup < 1 else int(warmup)
    warm = min(max(warm, 1), planned)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        # A time cap (TimeCap) may re-plan the run shorter: the cosine then ends where training does.
        total = getattr(module, "planned_steps", None) or planned
        progress = (step - warm) / max(1, total - warm)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


# ---------------------------------------------------------------------------------------------
# Trainer


def make_trainer(
    preset: Preset,
    run_dir: str | Path,
    *,
    seed: int = 0,
    max_epochs: int | None = None,
    max_steps: int = -1,
    monitor: str | None = "val_macro_f1",
    accelerator: str = "auto",
    devices: int | str = "auto",
    strategy: str = "auto",
    precision: str | None = None,
    log_every_n_steps: int = 20,
    val_check_interval: int | float | None = None,
    callbacks: Sequence[pl.Callback] = (),
) -> pl.Trainer:
    """A Lightning trainer set up the same way for every run of the course.

    Seeds everything, shows a progress bar, logs CSV under ``run_dir``, keeps the best checkpoint
    by ``monitor`` (validation macro-F1: the model selection of the comparison protocol) and uses
    a GPU when present (``accelerator="auto"``). ``devices=2, strategy="ddp"`` runs data-parallel
    on CPU with gloo; only rank zero writes records (see :func:`write_record`).
    """
    pl.seed_everything(seed, workers=True, verbose=False)
    run_dir = Path(run_dir)
    callbacks = [pl.callbacks.TQDMProgressBar(refresh_rate=10), *callbacks]
    if monitor:
        callbacks.append(
            pl.callbacks.ModelCheckpoint(dirpath=run_dir / "checkpoints", monitor=monitor, mode="max",
                                         save_top_k=1, filename="best")
        )
    if precision is None:
        precision = "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"
    return pl.Trainer(
        default_root_dir=run_dir,
        max_epochs=max_epochs if max_epochs is not None else (-1 if max_steps > 0 else preset.finetune_epochs),
        max_steps=max_steps,
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        precision=precision,
        callbacks=callbacks,
        logger=pl.loggers.CSVLogger(run_dir, name="logs"),
        enable_checkpointing=bool(monitor),
        enable_model_summary=False,
        log_every_n_steps=log_every_n_steps,
        val_check_interval=val_check_interval,
        num_sanity_val_steps=0,
    )


def subsample(frame: pd.DataFrame, n: int | None, seed: int = 0) -> pd.DataFrame:
    """At most ``n`` rows, stratified by label (a fixed seeded sample: the label-efficiency runs)."""
    if n is None or n >= len(frame):
        return frame
    share = frame["label"].value_counts(normalize=True)
    parts = [frame[frame["label"] == y].sample(n=max(1, round(n * share[y])), random_state=seed)
             for y in share.index]
    return pd.concat(parts).sample(frac=1.0, random_state=seed)


def evaluate_predictions(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int = 2) -> dict:
    """accuracy, macro-F1 and per-class recall with torchmetrics (the same code for every model)."""
    t = torch.as_tensor(list(y_true), dtype=torch.long)
    p = torch.as_tensor(list(y_pred), dtype=torch.long)
    kw = {"task": "multiclass", "num_classes": num_classes}
    recall = torchmetrics.functional.recall(p, t, average=None, **kw)
    return {
        "accuracy": float(torchmetrics.functional.accuracy(p, t, **kw)),
        "macro_f1": float(torchmetrics.functional.f1_score(p, t, average="macro", **kw)),
        "recall": {str(c): float(r) for c, r in enumerate(recall)},
        "n": len(t),
    }


LONG_REVIEW_CHARS = 128  # "long" reviews: those a 128-token model must truncate


def score_predictions(
    frame: pd.DataFrame, pred: Sequence[int], prob: Sequence[float] | None = None, split_name: str = "test"
) -> dict:
    """Metrics of ``pred`` on ``frame`` (``text``, ``label``); for the test split also the long and
    short reviews separately and the predictions themselves (for confusion matrices and examples)."""
    out: dict[str, Any] = {split_name: evaluate_predictions(frame["label"].tolist(), list(pred))}
    if split_name == "test":
        long = (frame["text"].str.len() > LONG_REVIEW_CHARS).to_numpy()
        y = frame["label"].to_numpy()
        p = pd.Series(list(pred)).to_numpy()
        out["test_long"] = evaluate_predictions(y[long], p[long]) if long.any() else None
        out["test_short"] = evaluate_predictions(y[~long], p[~long]) if (~long).any() else None
        out["predictions"] = {"ids": [int(i) for i in frame.index], "pred": [int(x) for x in pred]}
        if prob is not None:
            out["predictions"]["prob_positive"] = [round(float(x), 4) for x in prob]
    return out


@torch.no_grad()
def predict(
    model: SentimentClassifier, texts: Sequence[str], collate: Collate, batch_size: int = 64
) -> tuple[list[int], list[float], float]:
    """Predicted labels, positive-class probabilities and reviews/s for ``texts`` (eval mode).

    Reviews are batched longest first (less padding) and the answers returned in input order."""
    model.eval()
    device = next(model.parameters()).device
    order = length_sorted([len(t) for t in texts])
    labels = [0] * len(texts)
    probs = [0.0] * len(texts)
    start = time.perf_counter()
    for i in range(0, len(order), batch_size):
        rows = order[i : i + batch_size]
        batch = {k: v.to(device) for k, v in collate([texts[r] for r in rows]).items()}
        p = torch.softmax(model(batch).float(), dim=-1)
        for r, label, prob in zip(rows, p.argmax(-1).tolist(), p[:, 1].tolist(), strict=True):
            labels[r], probs[r] = label, prob
    seconds = time.perf_counter() - start
    return labels, probs, len(texts) / max(seconds, 1e-9)


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
    out: dict[str, Any] = {"finetuning": {"epochs": trainer.current_epoch, "seconds": round(seconds, 2),
                                          "best_checkpoint": best}}
    for name in ("val", "test"):
        frame = datamodule.frames[name]
        pred, prob, speed = predict(model, frame["text"].tolist(), collate)
        out.update(score_predictions(frame, pred, prob, split_name=name))
        if name == "test":
            out["inference_reviews_per_s"] = round(speed, 1)
    return trainer, out


# ---------------------------------------------------------------------------------------------
# Pretraining


class Pretrainer(pl.LightningModule):
    """Runs any model's ``pretraining_step(batch) -> {"loss", ...}`` (MLM+NSP, causal LM, biLM).

    AdamW with betas (0.9, 0.98), linear warm-up then cosine decay: the recipe that left the MLM
    plateau is a matter of optimiser steps, so the schedule counts steps, not epochs. Held-out
    loss is measured once at the end by :func:`evaluate_pretraining`, on fixed batches.
    """

    def __init__(self, model: nn.Module, lr: float = 1e-3, warmup_steps: int = 300,
                 weight_decay: float = 0.01):
        super().__init__()
        self.model = model
        self.save_hyperparameters(ignore=["model"])
        self.tokens_seen = 0
        self.history: list[dict[str, float]] = []

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.model.pretraining_step(batch)
        self.tokens_seen += int(batch["attention_mask"].sum()) * self.trainer.world_size
        for k, v in out.items():
            self.log(f"train_{k}", v, prog_bar=k == "loss", batch_size=len(batch["attention_mask"]))
        self.history.append({"step": self.global_step, "tokens": self.tokens_seen,
                             **{k: float(v.detach()) for k, v in out.items()}})
        return out["loss"]

    def configure_optimizers(self) -> Any:
        return _adamw_with_warmup(self, self.hparams.lr, self.hparams.weight_decay,
                                  self.hparams.warmup_steps, betas=(0.9, 0.98))


def pretrain(
    model: nn.Module,
    datamodule: LanguageModelDataModule,
    preset: Preset,
    name: str,
    *,
    seed: int = 0,
    max_steps: int | None = None,
    budget_steps: int | None = None,
    lr: float | None = None,
    precision: str | None = None,
    recipe: dict | None = None,
    force: bool = False,
) -> dict:
    """Pretrain ``model`` for the preset's token budget, or load the cached checkpoint.

    Without ``max_steps`` the number of steps is :func:`steps_for_budget`: the preset's
    ``pretrain_tokens`` counted as real (unpadded) tokens, capped by ``preset.pretrain_max_minutes``:
    :class:`TimeCap` re-plans the run from its measured speed to what fits in that time (the
    schedule follows, so its cosine still ends where training does).
    ``budget_steps`` replaces the token count where the budget is not counted in the batches'
    ``attention_mask`` (ELMo's is in characters, its mask in words); the cap still applies. The plan
    is kept in the result's ``budget``. ``max_steps`` fixes the steps: no budget, no cap.

    ``recipe`` (JSON-able) names what else the lesson chose for this model (pre-LN, NSP, LSTM size):
    it is part of the cache key, so a changed recipe retrains, and it is kept in the checkpoint for
    later lessons (:func:`saved_pretraining`).

    The checkpoint lives in ``runs/<preset>/pretrain/<name>.pt`` with the loss history and the
    budget actually spent; a rerun with the same pretraining settings (budget, batch, schedule,
    time cap, ``max_steps``, ``budget_steps``, seed, recipe) reuses it, other settings retrain
    (``force=True`` always retrains).
    Returns the record's ``pretraining`` part: tokens, steps, seconds, final loss, history.
    """
    path = _checkpoint_path(preset.name, name)
    lr = lr or preset.pretrain_lr
    # What the checkpoint depends on besides the model's shape (which _load_checked checks): a
    # changed budget or schedule retrains instead of silently reusing an old checkpoint.
    settings = {"pretrain_tokens": preset.pretrain_tokens, "pretrain_seq_len": preset.pretrain_seq_len,
                "pretrain_batch_size": preset.pretrain_batch_size, "pretrain_lr": lr,
                "warmup_steps": preset.warmup_steps, "pretrain_dropout": preset.pretrain_dropout,
                "pretrain_max_minutes": None if max_steps is not None else preset.pretrain_max_minutes,
                "max_steps": max_steps, "budget_steps": budget_steps, "seed": seed, "recipe": recipe}
    if path.exists() and not force:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        info = json.loads(saved["info"])
        if info.get("settings") == settings:
            _load_checked(model, saved["state_dict"], path)
            info["cached"] = True
            return info
        print(f"{path}: made with other settings ({info.get('settings')}), retraining with {settings}")
    plan = None
    if max_steps is None:
        plan = (steps_for_budget(datamodule, preset.pretrain_tokens, seed=seed) if budget_steps is None
                else {"budget_tokens": preset.pretrain_tokens, "steps": budget_steps})
        max_steps = plan["steps"]
    cap = None
    if plan is not None and preset.pretrain_max_minutes is not None:
        cap = TimeCap(preset.pretrain_max_minutes * 60, max_steps)
    module = Pretrainer(model, lr=lr, warmup_steps=min(preset.warmup_steps, max_steps))
    run_dir = runs_dir() / preset.name / "pretrain" / name
    trainer = make_trainer(preset, run_dir, seed=seed, max_steps=max_steps, monitor=None,
                           precision=precision, log_every_n_steps=10, callbacks=[cap] if cap else [])
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    seconds = time.perf_counter() - start
    history = module.history
    tail = history[-20:] if history else []
    info = {
        "tokens": module.tokens_seen,
        "steps": trainer.global_step,
        "seconds": round(seconds, 1),
        "final_loss": round(sum(h["loss"] for h in tail) / max(1, len(tail)), 4),
        "val": evaluate_pretraining(model, datamodule.heldout_dataloader()),
        "history": history[:: max(1, len(history) // 400)],  # ≤ ~400 points for the loss curve
        "cached": False,
        "settings": settings,
        "recipe": recipe,
    }
    if plan is not None:
        info["budget"] = plan if cap is None else {**plan, "time_cap": cap.report()}
    if trainer.is_global_zero:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"state_dict": model.state_dict(), "info": json.dumps(info)}, tmp)
        os.replace(tmp, path)  # a crash mid-save never leaves a half checkpoint under the real name
    return info


def _checkpoint_path(preset_name: str, name: str) -> Path:
    return runs_dir() / preset_name / "pretrain" / f"{name}.pt"


def saved_pretraining(preset: Preset | str, name: str) -> dict | None:
    """The info of the cached checkpoint ``runs/<preset>/pretrain/<name>.pt`` (settings, recipe,
    budget, losses; no weights), or None when there is none. Lesson 06 reads the recipes with it."""
    path = _checkpoint_path(preset if isinstance(preset, str) else preset.name, name)
    if not path.exists():
        return None
    return json.loads(torch.load(path, map_location="cpu", weights_only=True)["info"])


def steps_for_budget(datamodule: LanguageModelDataModule, budget_tokens: int, *, seed: int = 0,
                     sample_batches: int = 20) -> dict[str, Any]:
    """Optimiser steps that read ``budget_tokens`` real tokens: the budget divided by the mean
    ``attention_mask`` sum of a few random batches (padding is not counted). Introduced in 03_bert.

    Counting real tokens, not ``batch × seq_len`` slots, is what makes "the same token budget" the
    same for every model: short reviews are padded, and how much depends on the objective's batch
    layout (NSP pairs, words vs characters). ELMo's lesson counts characters the same way.
    """
    texts = datamodule.train_texts
    rng = torch.Generator().manual_seed(seed)
    counts = []
    for _ in range(sample_batches):
        picks = torch.randint(len(texts), (datamodule.batch_size,), generator=rng).tolist()
        counts.append(int(datamodule.collate([texts[i] for i in picks])["attention_mask"].sum()))
    per_step = sum(counts) / len(counts)
    return {"budget_tokens": budget_tokens, "tokens_per_step_estimate": round(per_step, 1),
            "steps": max(1, math.ceil(budget_tokens / per_step))}


class TimeCap(pl.Callback):
    """Stop pretraining within ``max_seconds`` by re-planning its length from its own speed.
    Introduced in 02_elmo (which times a probe by hand to show what the cap allows), explained again
    in 03_bert.

    Every ``check_every`` steps it measures the mean time per step so far (from step ``skip`` on,
    leaving out the first steps' start-up), and sets the run's last step to what the remaining time
    allows, never beyond the planned budget. The learning-rate schedule reads the same number
    (``planned_steps``), so its cosine still ends where training does; a re-plan moves it a little,
    which shows in the loss curve only as a slightly faster decay. Time before the first step and
    the held-out evaluation after the last are not counted.
    """

    def __init__(self, max_seconds: float, budget_steps: int, *, check_every: int = 100, skip: int = 20,
                 clock: Callable[[], float] = time.perf_counter):
        self.max_seconds, self.budget_steps = max_seconds, budget_steps
        self.check_every, self.skip, self.clock = check_every, skip, clock
        self.started: float | None = None
        self.skip_time: float | None = None
        self.seconds_per_step: float | None = None
        self.planned = budget_steps
        self.replans = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = self.clock()
        pl_module.planned_steps = self.planned

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step == self.skip:
            self.skip_time = self.clock()
        if self.skip_time is None or step <= self.skip or step % self.check_every:
            return
        now = self.clock()
        self.seconds_per_step = (now - self.skip_time) / (step - self.skip)
        left = self.max_seconds - (now - self.started)
        planned = max(step + 1, min(self.budget_steps, step + int(left / self.seconds_per_step)))
        if planned != self.planned:
            self.planned, self.replans = planned, self.replans + 1
            pl_module.planned_steps = planned
            trainer.fit_loop.epoch_loop.max_steps = planned

    def report(self) -> dict[str, Any]:
        """What the cap did, for the pretraining record."""
        return {"max_seconds": self.max_seconds,
                "seconds_per_step": None if self.seconds_per_step is None else round(self.seconds_per_step, 4),
                "steps_planned": self.planned, "capped": self.planned < self.budget_steps,
                "replans": self.replans}


@torch.no_grad()
def evaluate_pretraining(model: nn.Module, loader: DataLoader, max_batches: int = 50) -> dict[str, float]:
    """Average each output of ``model.pretraining_step`` over up to ``max_batches`` held-out batches."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sums: dict[str, float] = {}
    n = 0
    for i, batch in enumerate(loader):
        if i == max_batches:
            break
        out = model.pretraining_step({k: v.to(device) for k, v in batch.items()})
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        n += 1
    model.train(was_training)
    return {k: round(v / max(n, 1), 4) for k, v in sums.items()}


def _load_checked(model: nn.Module, state: dict, where: Path) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(
            f"checkpoint {where} does not fit this model: missing keys {missing}, unexpected keys "
            f"{unexpected}. It was made with another preset or model version; delete it to retrain."
        )


# ---------------------------------------------------------------------------------------------
# Results records


RECORD_FIELDS = {
    "model": str, "variant": str, "preset": str, "seed": int, "train_size": int, "parameters": int,
    "pretraining": (dict, type(None)), "finetuning": (dict, type(None)), "val": dict, "test": dict,
    "inference_reviews_per_s": (int, float, type(None)), "versions": dict, "git_revision": str,
    "started": str,
}


def package_versions() -> dict[str, str]:
    import numpy
    import sklearn

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pytorch_lightning": pl.__version__,
        "torchmetrics": torchmetrics.__version__,
        "numpy": numpy.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
        "threads": str(torch.get_num_threads()),
    }


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=5).stdout.strip()
        return (rev + ("-dirty" if dirty else "")) if rev else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def make_record(
    *,
    model: str,
    variant: str,
    preset: Preset,
    seed: int,
    train_size: int,
    parameters: int,
    results: dict,
    pretraining: dict | None = None,
    started: float | None = None,
    **extra: Any,
) -> dict:
    """Assemble one results record (the fields of the design) from what a run measured."""
    record: dict[str, Any] = {
        "model": model,
        "variant": variant,
        "preset": preset.name,
        "seed": seed,
        "train_size": train_size,
        "parameters": parameters,
        "pretraining": None if pretraining is None
        else {k: v for k, v in pretraining.items() if k != "history"},
        "finetuning": results.get("finetuning"),
        "val": results["val"],
        "test": results["test"],
        "test_long": results.get("test_long"),
        "test_short": results.get("test_short"),
        "predictions": results.get("predictions"),
        "inference_reviews_per_s": results.get("inference_reviews_per_s"),
        "versions": package_versions(),
        "git_revision": git_revision(),
        "started": datetime.fromtimestamp(started or time.time(), timezone.utc).isoformat(timespec="seconds"),
    }
    record.update(extra)
    return record


def record_path(preset: Preset | str, model: str, variant: str, seed: int, train_size: int | None = None) -> Path:
    """``runs/<preset>/<model>-<variant>[-n<train size>]/<seed>/result.json``."""
    preset_name = preset if isinstance(preset, str) else preset.name
    label = f"{model}-{variant}" + (f"-n{train_size}" if train_size is not None else "")
    return runs_dir() / preset_name / label / str(seed) / "result.json"


def write_record(record: dict, path: str | Path | None = None, trainer: pl.Trainer | None = None) -> Path | None:
    """Write ``record`` as JSON (atomically). Under DDP only rank zero writes; others return None."""
    if trainer is not None and not trainer.is_global_zero:
        return None
    if int(os.environ.get("RANK", "0")) != 0 and trainer is None:
        return None
    validate_record(record, "record")
    path = Path(path) if path else record_path(record["preset"], record["model"], record["variant"],
                                               record["seed"], record.get("label_count"))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_record(path: str | Path) -> dict:
    """Read and validate one results record; a bad file raises naming it."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecordError(f"{path}: no such results record (has the lesson that writes it run?)") from None
    except json.JSONDecodeError as err:
        raise RecordError(f"{path}: not valid JSON ({err})") from None
    validate_record(record, str(path))
    return record


class RecordError(ValueError):
    """A results record is malformed; the message names the file and the field."""


def validate_record(record: dict, where: str) -> None:
    for name, kind in RECORD_FIELDS.items():
        if name not in record:
            raise RecordError(f"{where}: missing field {name!r}")
        if not isinstance(record[name], kind):
            raise RecordError(f"{where}: field {name!r} should be {kind}, got {type(record[name]).__name__}")
    for split_name in ("val", "test"):
        for metric in ("accuracy", "macro_f1", "recall"):
            if metric not in record[split_name]:
                raise RecordError(f"{where}: field {split_name}.{metric} missing")
