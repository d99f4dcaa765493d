"""One classifier for every encoder: pooling, the shared optimiser and trainer, predicting, metrics.

Introduced in notebook 01_baselines (:class:`SentimentClassifier` with mean pooling, the trainer,
the metrics); lesson 02_elmo adds the scalar mix, 04_gpt the last-token pooling.

The comparison is fair because every model goes through the same code here: the same
:class:`SentimentClassifier` (only the pooling rule differs), the same optimiser family and
schedule, the same model selection (best validation macro-F1), the same metrics (torchmetrics).
Any model plugs in through its ``encode(input_ids, attention_mask, **extra) -> list[Tensor]``,
which returns every layer's hidden states ``(L+1) × (B, T, H)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pytorch_lightning as pl
import torch
import torchmetrics
from torch import nn

from nblib.data.datamodules import Collate, length_sorted
from nblib.presets import Preset
from nblib.training.progress import interactive, progress_callback, quiet_lightning

Pooling = Literal["cls", "last", "mean", "mix"]


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
        return adamw_with_warmup(self, self.hparams.lr, self.hparams.weight_decay,
                                  self.hparams.warmup_ratio, betas=(0.9, 0.999))


LR_DECAYS = ("cosine", "linear")  # after the warm-up: cosine to 10% of the peak, or a straight line to 0


def adamw_with_warmup(
    module: pl.LightningModule,
    lr: float,
    weight_decay: float,
    warmup: float | int,
    betas: tuple[float, float],
    decay: str = "cosine",
    **adamw_options: Any,
) -> Any:
    """AdamW, no decay on biases and norms, linear warm-up then cosine decay to 10% of ``lr``.

    ``warmup`` is a fraction of the total steps when below 1, else a number of steps.
    ``decay="linear"``: after the warm-up a straight line from ``lr`` to 0 at the last step (the
    schedule Clark et al. publish for ELECTRA, lesson 03b) instead of the cosine.
    ``adamw_options`` go to ``torch.optim.AdamW`` (``foreach=True`` or ``fused=True``: the same
    update computed in fewer kernels; :class:`nblib.training.pretraining.Pretrainer`'s ``adamw``).
    """
    if decay not in LR_DECAYS:
        raise ValueError(f"decay={decay!r}: use one of {LR_DECAYS}")
    params = [p for p in module.parameters() if p.requires_grad]
    decayed = [p for p in params if p.ndim >= 2]
    not_decayed = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decayed, "weight_decay": weight_decay}, {"params": not_decayed, "weight_decay": 0.0}],
        lr=lr,
        betas=betas,
        **adamw_options,
    )
    planned = max(1, int(module.trainer.estimated_stepping_batches))
    warm = int(warmup * planned) if warmup < 1 else int(warmup)
    warm = min(max(warm, 1), planned)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        # A time cap (TimeCap) may re-plan the run shorter: the cosine then ends where training does.
        total = getattr(module, "planned_steps", None) or planned
        progress = min(1.0, (step - warm) / max(1, total - warm))
        if decay == "linear":
            return 1.0 - progress
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}



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
    clip_grad_norm: float | None = None,
) -> pl.Trainer:
    """A Lightning trainer set up the same way for every run of the course.

    Seeds everything, shows progress (a bar in JupyterLab, one line per epoch under papermill:
    :mod:`nblib.training.progress`, which also silences Lightning's known harmless notices), logs CSV under
    ``run_dir``, keeps the best checkpoint
    by ``monitor`` (validation macro-F1: the model selection of the comparison protocol) and uses
    a GPU when present (``accelerator="auto"``). ``devices=2, strategy="ddp"`` runs data-parallel
    on CPU with gloo; only rank zero writes records (see :func:`write_record`).
    ``clip_grad_norm`` clips the global gradient norm before each step (None: no clipping).
    """
    pl.seed_everything(seed, workers=True, verbose=False)
    quiet_lightning()
    run_dir = Path(run_dir)
    callbacks = [progress_callback(refresh_rate=10), *callbacks]
    if monitor:
        callbacks.append(
            pl.callbacks.ModelCheckpoint(dirpath=run_dir / "checkpoints", monitor=monitor, mode="max",
                                         save_top_k=1, filename="best")
        )
    if precision is None:
        precision = "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"
    epochs = max_epochs if max_epochs is not None else (-1 if max_steps > 0 else preset.finetune_epochs)
    return pl.Trainer(
        default_root_dir=run_dir,
        max_epochs=epochs,
        check_val_every_n_epoch=preset.val_every(epochs) if epochs > 0 and val_check_interval is None else 1,
        max_steps=max_steps,
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        precision=precision,
        callbacks=callbacks,
        logger=pl.loggers.CSVLogger(run_dir, name="logs"),
        enable_checkpointing=bool(monitor),
        enable_model_summary=False,
        enable_progress_bar=interactive(),
        log_every_n_steps=log_every_n_steps,
        val_check_interval=val_check_interval,
        num_sanity_val_steps=0,
        gradient_clip_val=clip_grad_norm,
        gradient_clip_algorithm="norm" if clip_grad_norm else None,
    )


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
    short reviews separately and the predictions themselves (for confusion matrices and examples);
    for the out-of-domain test (``"ood"``) its predictions too (lesson 05's paired intervals)."""
    out: dict[str, Any] = {split_name: evaluate_predictions(frame["label"].tolist(), list(pred))}
    if split_name == "ood":
        out["ood_predictions"] = {"ids": [int(i) for i in frame.index], "pred": [int(x) for x in pred],
                                  "labels": [int(y) for y in frame["label"]]}
    if split_name == "test":
        long = (frame["text"].str.len() > LONG_REVIEW_CHARS).to_numpy()
        y = frame["label"].to_numpy()
        p = pd.Series(list(pred)).to_numpy()
        out["test_long"] = evaluate_predictions(y[long], p[long]) if long.any() else None
        out["test_short"] = evaluate_predictions(y[~long], p[~long]) if (~long).any() else None
        # the true labels too: the comparison's paired intervals read records only, never the corpora
        out["predictions"] = {"ids": [int(i) for i in frame.index], "pred": [int(x) for x in pred],
                              "labels": [int(y) for y in frame["label"]]}
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
