"""Progress that reads like a page of a book: widgets in JupyterLab, one line per epoch elsewhere.

Two jobs, both applied by the course's trainer factory (introduced in notebook 01_baselines):

- :func:`quiet_lightning` silences the notices every Lightning run prints and that say nothing to a
  learner ("GPU available: False", the cloud-logging tips, one deprecation inside Lightning's own
  code, the logging-interval hint on small data sets). Each is named here, by logger or by message;
  every other warning still shows.
- :func:`progress_callback` picks the progress display. In JupyterLab (with ipywidgets installed) a
  live tqdm bar; when nobody watches (papermill, the test suite, ``make report``: they set
  ``NBLIB_PROGRESS=lines``) a :class:`LineProgress` that prints one line per epoch, or about ten
  lines for a long step-based run, so an executed notebook keeps no progress-bar debris.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings

import pytorch_lightning as pl

PROGRESS_ENV = "NBLIB_PROGRESS"  # "bar" (default) or "lines"

# Lightning's info-level notices: device summary, "Trainer.fit stopped", the litlogger/litmodels tips.
_QUIET_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
                  "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
# Warnings that are known and harmless here, by message (regular expressions).
_HARMLESS_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",  # inside Lightning's own _pytree helper
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    r"The '\w+_dataloader' does not have many workers",  # the course loads in the main process
    r".*does not have many workers which may be a bottleneck",
)


def quiet_lightning() -> None:
    """Silence the known harmless Lightning notices (idempotent; real warnings still show)."""
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in _HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


def interactive() -> bool:
    """Whether a person is watching: not under papermill/pytest/make report (``NBLIB_PROGRESS``)."""
    return os.environ.get(PROGRESS_ENV, "bar") != "lines"


class LineProgress(pl.Callback):
    """One line per epoch (or ~``lines`` lines over a step-based run): loss, validation metric, time."""

    def __init__(self, lines: int = 10, stream=None):
        super().__init__()
        self.lines = lines
        self.stream = stream
        self._start = 0.0
        self._every = 0  # steps between two lines of a step-based run (0: report by epoch)
        self._next_report = 0

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    def _metrics(self, trainer: pl.Trainer) -> str:
        shown = []
        for key, value in trainer.callback_metrics.items():
            if key.startswith(("train_loss", "loss", "val_")) and value.numel() == 1:
                shown.append(f"{key} {float(value):.3f}")
        return "  ".join(sorted(shown)[:4])

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()
        self._every = max(1, trainer.max_steps // self.lines) if trainer.max_steps > 0 else 0
        self._next_report = self._every

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._next_report and trainer.global_step >= self._next_report:
            self._next_report = trainer.global_step + self._every
            self._print(f"step {trainer.global_step:,}/{trainer.max_steps:,}  {self._metrics(trainer)}  "
                        f"({time.perf_counter() - self._start:.0f} s)")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.max_steps > 0 and trainer.max_epochs in (None, -1):
            return  # a step-based run reports by steps
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        self._print(f"epoch {trainer.current_epoch + 1}{total}  {self._metrics(trainer)}  "
                    f"({time.perf_counter() - self._start:.0f} s)")


def progress_callback(refresh_rate: int = 10) -> pl.Callback:
    """A tqdm bar (widgets in JupyterLab) when someone watches, else :class:`LineProgress`."""
    if interactive():
        return pl.callbacks.TQDMProgressBar(refresh_rate=refresh_rate)
    return LineProgress()
