"""Pretraining any model on unlabelled text: the Lightning module, the character budget, the cache.

Introduced in notebook 02_elmo (the biLM's pretraining); 03_bert explains the budget (the same
characters of corpus for every model, on every machine: ``preset.pretrain_chars``); 04_gpt reuses
it. :class:`TimeCap` is an opt-in cap for slow laptops (``MAX_PRETRAIN_MINUTES``).
A model plugs in through ``pretraining_step(batch) -> {"loss", ...}``. Two opt-in speed-ups,
off by default (``benchmarks/bench_pretraining.py`` measures them): ``precision="bf16-mixed"``
(bf16 autocast: other numbers) and ``adamw="foreach"``/``"fused"`` (the same AdamW update in fewer
kernels).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from nblib.data.datamodules import LanguageModelDataModule
from nblib.presets import Preset
from nblib.results.records import runs_dir
from nblib.training.classifier import adamw_with_warmup, make_trainer
from nblib.training.runcache import fresh
from nblib.training.saved_runs import build_model, model_spec, tokenizer_vocabulary

ADAMW_IMPLEMENTATIONS = ("for-loop", "foreach", "fused")


class Pretrainer(pl.LightningModule):
    """Runs any model's ``pretraining_step(batch) -> {"loss", ...}`` (MLM+NSP, causal LM, biLM).

    AdamW with betas (0.9, 0.98), linear warm-up then cosine decay (``lr_decay="linear"``: a
    straight line to 0, ELECTRA's published schedule): the recipe that left the MLM
    plateau is a matter of optimiser steps, so the schedule counts steps, not epochs. Held-out
    loss is measured once at the end by :func:`evaluate_pretraining`, on fixed batches.

    ``adamw`` picks torch's implementation of the same update: ``"for-loop"`` (torch's CPU
    default, a few kernels per parameter tensor), ``"foreach"`` (each kernel over all tensors at
    once) or ``"fused"`` (one kernel). Same math; ``"fused"`` may differ in the last bits.
    ``lean_logging`` hands the step's numbers to Lightning (``self.log``, ~2.5 ms a step on a CPU)
    only on the steps its logger writes (every ``log_every_n_steps``) and the last one: the same
    CSV log and history; the progress line shows a loss up to that many steps old.
    """

    def __init__(self, model: nn.Module, lr: float = 1e-3, warmup_steps: int = 300,
                 weight_decay: float = 0.01, adamw: str = "for-loop", lean_logging: bool = False,
                 lr_decay: str = "cosine"):
        super().__init__()
        if adamw not in ADAMW_IMPLEMENTATIONS:
            raise ValueError(f"adamw={adamw!r}: use one of {ADAMW_IMPLEMENTATIONS}")
        self.model = model
        self.save_hyperparameters(ignore=["model"])
        self.tokens_seen = 0
        self.history: list[dict[str, float]] = []

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.model.pretraining_step(batch)
        self.tokens_seen += int(batch["attention_mask"].sum()) * self.trainer.world_size
        step, every = self.global_step + 1, self.trainer.log_every_n_steps
        written = every > 0 and step % every == 0 or step >= self.trainer.max_steps > 0
        if written or not self.hparams.get("lean_logging"):
            for k, v in out.items():
                self.log(f"train_{k}", v, prog_bar=k == "loss", batch_size=len(batch["attention_mask"]))
        self.history.append({"step": self.global_step, "tokens": self.tokens_seen,
                             **{k: float(v.detach()) for k, v in out.items()}})
        return out["loss"]

    def configure_optimizers(self) -> Any:
        adamw = self.hparams.get("adamw", "for-loop")
        options = {} if adamw == "for-loop" else {adamw: True}
        return adamw_with_warmup(self, self.hparams.lr, self.hparams.weight_decay,
                                  self.hparams.warmup_steps, betas=(0.9, 0.98),
                                  decay=self.hparams.get("lr_decay", "cosine"), **options)


MAX_MINUTES_ENV = "NBLIB_MAX_PRETRAIN_MINUTES"  # `MAX_PRETRAIN_MINUTES=13 make report` sets it


def max_pretrain_minutes(preset: Preset) -> float | None:
    """The opt-in time cap: ``$NBLIB_MAX_PRETRAIN_MINUTES`` if set, else the preset's (None: no cap)."""
    value = os.environ.get(MAX_MINUTES_ENV, "").strip()
    if not value or value.lower() == "none":
        return preset.pretrain_max_minutes
    try:
        minutes = float(value)
    except ValueError:
        raise ValueError(f"{MAX_MINUTES_ENV}={value!r} is not a number of minutes") from None
    if minutes <= 0:
        raise ValueError(f"{MAX_MINUTES_ENV} must be positive, got {value}")
    return minutes


@dataclass(frozen=True)
class PretrainingRun:
    """One pretraining run of :func:`pretrain`, beyond what the preset fixes (the budget, the batch,
    the schedule's warm-up): its name, its seed, the lesson's recipe and the options. Each field that
    changes a number is part of the checkpoint's cache key (the options only when they differ from
    their defaults, so the defaults keep existing checkpoints); ``lean_logging`` changes none and is not."""

    name: str  # the checkpoint: runs/<preset>/pretrain/<name>.pt
    seed: int = 0  # Lightning's seed for the run (the model's initialisation is the caller's)
    # JSON-able: what the lesson chose for this model (pre-LN, NSP, LSTM size); kept in the checkpoint
    recipe: dict | None = None
    max_steps: int | None = None  # fixed steps instead of the preset's character budget (no budget, no cap)
    lr: float | None = None  # peak learning rate (None: preset.pretrain_lr)
    lr_decay: str = "cosine"  # after warm-up: cosine to 10%, or "linear" to 0 (ELECTRA's published schedule)
    clip_grad_norm: float | None = None  # the global gradient norm is clipped to this before each step
    precision: str | None = None  # Lightning's precision; "bf16-mixed": bf16 autocast, an opt-in speed-up
    adamw: str = "for-loop"  # torch's AdamW implementation: "foreach" / "fused" (same update, fewer kernels)
    lean_logging: bool = False  # self.log only on the steps the logger writes: no number changes


def pretrain(
    model: nn.Module,
    datamodule: LanguageModelDataModule,
    preset: Preset,
    run: PretrainingRun,
    *,
    force: bool = False,
) -> dict:
    """Pretrain ``model`` on the preset's budget of characters, or load the cached checkpoint.

    Without ``max_steps`` the run reads exactly ``preset.pretrain_chars`` characters of corpus
    (:meth:`LanguageModelDataModule.plan`: the steps follow from the seeded batch order and the
    data module's ``chars_read``), the same for every model on every machine, however long it
    takes. A time cap (:func:`max_pretrain_minutes`, opt-in for slow laptops) makes
    :class:`TimeCap` stop earlier; the result then says ``"cut_at_minutes"`` and the comparison
    marks the row instead of comparing it. ``run.max_steps`` fixes the steps: no budget, no cap.

    ``run.recipe`` (JSON-able) names what else the lesson chose for this model (pre-LN, NSP, LSTM size):
    it is part of the cache key, so a changed recipe retrains, and it is kept in the checkpoint for
    later lessons (:func:`saved_pretraining`). The checkpoint also describes itself: the model's
    class and config, the collate's function and settings, and the tokenizers' vocabularies
    (:func:`describe_inputs`); these are part of the cache key too (the vocabularies by their
    sha256), and :func:`load_pretrained` rebuilds the model from them alone.

    The checkpoint lives in ``runs/<preset>/pretrain/<name>.pt`` with the loss history and the
    budget actually spent; a rerun with the same pretraining settings (budget, batch, schedule,
    time cap, ``run``) reuses it, other settings retrain (``force=True`` always retrains).
    ``run.precision`` and ``run.adamw`` are opt-in speed-ups (:class:`Pretrainer`,
    ``benchmarks/bench_pretraining.py``); ``run.lr_decay`` and ``run.clip_grad_norm`` change the
    recipe: lesson 03b passes ELECTRA's published ones (``electra.PUBLISHED_OPTIMISATION``). Returns the record's ``pretraining`` part: characters, tokens, steps,
    estimated FLOPs, seconds, final and held-out loss, history, the plan.
    """
    max_steps = run.max_steps  # set from the character budget below when None
    path = _checkpoint_path(preset.name, run.name)
    lr = run.lr or preset.pretrain_lr
    minutes = None if max_steps is not None else max_pretrain_minutes(preset)
    # What the checkpoint depends on besides the model's shape (which _load_checked checks): a
    # changed budget or schedule retrains instead of silently reusing an old checkpoint.
    settings = {"pretrain_chars": preset.pretrain_chars, "pretrain_seq_len": preset.pretrain_seq_len,
                "pretrain_batch_size": preset.pretrain_batch_size, "pretrain_lr": lr,
                "warmup_steps": preset.warmup_steps, "pretrain_dropout": preset.pretrain_dropout,
                "pretrain_max_minutes": minutes, "max_steps": run.max_steps, "seed": run.seed,
                "data_seed": datamodule.seed, "recipe": run.recipe}
    # The opt-in speed-ups enter the key only when used, so the default keeps existing checkpoints.
    if run.precision is not None:
        settings["precision"] = run.precision
    if run.adamw != "for-loop":
        settings["adamw"] = run.adamw
    if run.lr_decay != "cosine":
        settings["lr_decay"] = run.lr_decay
    if run.clip_grad_norm is not None:
        settings["clip_grad_norm"] = run.clip_grad_norm
    model_desc, collate_desc, vocabularies = describe_inputs(model, datamodule.collate)
    settings.update(model=model_desc, collate=collate_desc)
    # as the checkpoint will hold them: through JSON (a tuple, as ELMo's filters, comes back a list)
    settings = json.loads(json.dumps(settings))
    if path.exists() and not force and not fresh():  # make report FRESH=1: retrain, then overwrite
        saved = torch.load(path, map_location="cpu", weights_only=True)
        info = json.loads(saved["info"])
        if info.get("settings") == settings:
            _load_checked(model, saved["state_dict"], path)
            info["cached"] = True
            return info
        print(f"{path}: made with other settings ({info.get('settings')}), retraining with {settings}")
    plan = None
    if max_steps is None:
        plan = datamodule.plan(preset.pretrain_chars)
        max_steps = plan["steps"]
    cap = TimeCap(minutes * 60, max_steps) if minutes is not None else None
    module, trainer = pretraining_trainer(model, preset, runs_dir() / preset.name / "pretrain" / run.name,
                                          max_steps=max_steps, seed=run.seed, lr=lr, precision=run.precision,
                                          adamw=run.adamw, lean_logging=run.lean_logging, lr_decay=run.lr_decay,
                                          clip_grad_norm=run.clip_grad_norm, callbacks=[cap] if cap else [])
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    seconds = time.perf_counter() - start
    history = module.history
    tail = history[-20:] if history else []
    steps = trainer.global_step
    parameters = sum(p.numel() for p in model.parameters())
    info = {
        "characters": int(datamodule.chars_per_step(steps).sum()) if steps else 0,
        "tokens": module.tokens_seen,
        "steps": steps,
        # the usual estimate for a training step: 6 FLOPs per parameter and token (forward 2, backward 4)
        "estimated_flops": float(6 * parameters * module.tokens_seen),
        "seconds": round(seconds, 1),
        "final_loss": round(sum(h["loss"] for h in tail) / max(1, len(tail)), 4),
        "val": evaluate_pretraining(model, datamodule.heldout_dataloader()),
        "history": history[:: max(1, len(history) // 400)],  # ≤ ~400 points for the loss curve
        "cached": False,
        "settings": settings,
        "recipe": run.recipe,
        "model": model_desc,
        "tokenizers": vocabularies,
    }
    if plan is not None:
        info["budget"] = plan if cap is None else {**plan, "time_cap": cap.report()}
        if cap is not None and cap.report()["capped"]:
            info["cut_at_minutes"] = minutes
            print(f"pretraining {run.name} was cut at {minutes:g} min: {info['characters']:,} of "
                  f"{plan['budget_chars']:,} characters; the comparison will not compare it")
    saved_info = json.dumps(info)
    if trainer.is_global_zero:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"state_dict": model.state_dict(), "info": saved_info}, tmp)
        os.replace(tmp, path)  # a crash mid-save never leaves a half checkpoint under the real name
    # The info as the checkpoint holds it (through JSON: ELMo's filter tuples come back lists), so that a
    # fine-tuning run reading it has the same cache key after this fresh pretraining as after a cached one.
    return json.loads(saved_info)


def pretraining_trainer(model: nn.Module, preset: Preset, run_dir: str | Path, *, max_steps: int,
                        seed: int = 0, lr: float | None = None, precision: str | None = None,
                        adamw: str = "for-loop", lean_logging: bool = False,
                        lr_decay: str = "cosine", clip_grad_norm: float | None = None,
                        callbacks: list[pl.Callback] | None = None,
                        ) -> tuple[Pretrainer, pl.Trainer]:
    """The (:class:`Pretrainer`, Lightning trainer) pair :func:`pretrain` fits: the one place that
    sets up a pretraining run, so ``benchmarks/bench_pretraining.py`` times exactly this path."""
    module = Pretrainer(model, lr=lr or preset.pretrain_lr, warmup_steps=min(preset.warmup_steps, max_steps),
                        adamw=adamw, lean_logging=lean_logging, lr_decay=lr_decay)
    trainer = make_trainer(preset, run_dir, seed=seed, max_steps=max_steps, monitor=None,
                           precision=precision, log_every_n_steps=10, callbacks=list(callbacks or []),
                           clip_grad_norm=clip_grad_norm)
    return module, trainer


def _checkpoint_path(preset_name: str, name: str) -> Path:
    return runs_dir() / preset_name / "pretrain" / f"{name}.pt"


def describe_inputs(model: nn.Module, collate: Any) -> tuple[dict, dict, dict]:
    """(model spec, collate spec, tokenizer vocabularies) of a pretraining run, JSON-able.

    The collate is described when it is a ``functools.partial`` (``bert.make_collate``,
    ``elmo.make_collate``, ``partial(gpt.collate_causal_lm, ...)``): its function's name and its
    keyword settings, each tokenizer by the sha256 of its vocabulary (the vocabularies themselves
    are the third value). Anything else is described by its name only."""
    try:
        model_desc = model_spec(model)
    except ValueError:
        model_desc = {"class": f"{type(model).__module__}.{type(model).__qualname__}"}
    func = getattr(collate, "func", collate)
    collate_desc: dict[str, Any] = {"function": f"{getattr(func, '__module__', '?')}."
                                                f"{getattr(func, '__qualname__', type(func).__name__)}"}
    vocabularies: dict[str, Any] = {}
    for key, value in (getattr(collate, "keywords", None) or {}).items():
        vocabulary = tokenizer_vocabulary(value)
        if vocabulary is not None:
            vocabularies[key] = vocabulary
            text = json.dumps(vocabulary["tokens"], ensure_ascii=False).encode("utf-8")
            collate_desc[key] = {"kind": vocabulary["kind"], "size": len(vocabulary["tokens"]),
                                 "sha256": hashlib.sha256(text).hexdigest()}
        elif isinstance(value, (str, int, float, bool, type(None))):
            collate_desc[key] = value
        else:
            collate_desc[key] = type(value).__name__
    return model_desc, collate_desc, vocabularies


def load_pretrained(preset: Preset | str, name: str) -> tuple[nn.Module, dict]:
    """(model with the pretrained weights, in eval mode; the checkpoint's info) of
    ``runs/<preset>/pretrain/<name>.pt``, rebuilt from the checkpoint alone: its model class and
    config, no guessing. ``info["tokenizers"]`` holds the vocabularies
    (:func:`nblib.training.saved_runs.tokenizer_from_vocabulary`). Introduced in 06_inside_the_models."""
    path = _checkpoint_path(preset if isinstance(preset, str) else preset.name, name)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no pretraining checkpoint (run the lesson that pretrains "
                                f"{name!r} with this preset and NBLIB_RUNS_DIR)")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    info = json.loads(saved["info"])
    if "config" not in info.get("model", {}) and "kwargs" not in info.get("model", {}):
        raise ValueError(f"{path} does not describe its model (made before checkpoints did): "
                         "rerun its lesson to rebuild it")
    model = build_model(info["model"], path)
    _load_checked(model, saved["state_dict"], path)
    return model.eval(), info


def saved_pretraining(preset: Preset | str, name: str) -> dict | None:
    """The info of the cached checkpoint ``runs/<preset>/pretrain/<name>.pt`` (settings, recipe,
    budget, losses; no weights), or None when there is none. Lesson 06 reads the recipes with it."""
    path = _checkpoint_path(preset if isinstance(preset, str) else preset.name, name)
    if not path.exists():
        return None
    return json.loads(torch.load(path, map_location="cpu", weights_only=True)["info"])


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
