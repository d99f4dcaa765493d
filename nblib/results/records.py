"""Results records and where runs go: one JSON per run, written, read and validated here.

Introduced in notebook 01_baselines (its first records); every later lesson writes through it, and
lesson 05 and :mod:`nblib.results.report` read through it. It imports neither torch nor Lightning, so reading
a record is quick: ``python -c "import nblib.results.records"`` loads no deep-learning code.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nblib.presets import Preset

REPO_ROOT = Path(__file__).resolve().parents[2]  # nblib/<room>/ is two below the checkout
# The id of the `make report` run in progress (set by nblib.results.report): its figures and table carry it.
RUN_ID_ENV = "NBLIB_RUN_ID"


def runs_dir() -> Path:
    """Where checkpoints, executed notebooks and results records go (``NBLIB_RUNS_DIR`` or runs/)."""
    return Path(os.environ.get("NBLIB_RUNS_DIR") or REPO_ROOT / "runs")


RECORD_FIELDS = {
    "model": str, "variant": str, "preset": str, "seed": int, "train_size": int, "parameters": int,
    "pretraining": (dict, type(None)), "finetuning": (dict, type(None)), "val": dict, "test": dict,
    "inference_reviews_per_s": (int, float, type(None)), "versions": dict, "git_revision": str,
    "started": str,
}


def package_versions() -> dict[str, str]:
    """Versions of what produced a record (imported here, when a record is made, not at import)."""
    import numpy
    import pandas as pd
    import pytorch_lightning as pl
    import sklearn
    import torch
    import torchmetrics

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


# What `make report` itself writes into the checkout: changing them does not make the code "dirty"
# (otherwise every record after a run's first figure would say so).
RUN_OUTPUTS = ("figures", "README.md")


def git_revision(root: Path = REPO_ROOT) -> str:
    """The short commit hash of the repository, with ``-dirty`` when tracked files other than a
    run's own outputs (``RUN_OUTPUTS``) changed."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                             capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                *(f":(exclude){path}" for path in RUN_OUTPUTS)],
                               cwd=root, capture_output=True, text=True, timeout=5).stdout.strip()
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
    """Assemble one results record (the fields of the design) from what a run measured.
    ``pretraining`` is kept without its loss history and its tokenizers' vocabularies (both stay in
    the checkpoint)."""
    record: dict[str, Any] = {
        "model": model,
        "variant": variant,
        "preset": preset.name,
        "seed": seed,
        "train_size": train_size,
        "parameters": parameters,
        "pretraining": None if pretraining is None
        else {k: v for k, v in pretraining.items() if k not in ("history", "tokenizers")},
        "finetuning": results.get("finetuning"),
        "val": results["val"],
        "test": results["test"],
        "test_long": results.get("test_long"),
        "test_short": results.get("test_short"),
        "predictions": results.get("predictions"),
        "ood": results.get("ood"),  # the out-of-domain test (waimai reviews), when it was scored
        "ood_predictions": results.get("ood_predictions"),
        "inference_reviews_per_s": results.get("inference_reviews_per_s"),
        "versions": package_versions(),
        "git_revision": git_revision(),
        "started": datetime.fromtimestamp(started or time.time(), timezone.utc).isoformat(timespec="seconds"),
    }
    record.update(extra)
    return record


# What a rerun of the same run may change in its record: times and dates, paths, the git revision.
RERUN_MAY_CHANGE = frozenset({"seconds", "started", "inference_reviews_per_s", "best_checkpoint", "git_revision"})


def without_times(value: Any) -> Any:
    """``value`` (a record or part of one) without the fields of :data:`RERUN_MAY_CHANGE`: what two runs of
    the same job must agree on bit for bit (experiments/compare_runs.py, tests/test_pool.py)."""
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items() if k not in RERUN_MAY_CHANGE}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


def record_path(preset: Preset | str, model: str, variant: str, seed: int, train_size: int | None = None) -> Path:
    """``runs/<preset>/<model>-<variant>[-n<train size>]/<seed>/result.json``."""
    preset_name = preset if isinstance(preset, str) else preset.name
    label = f"{model}-{variant}" + (f"-n{train_size}" if train_size is not None else "")
    return runs_dir() / preset_name / label / str(seed) / "result.json"


def write_record(record: dict, path: str | Path | None = None, trainer: Any = None) -> Path | None:
    """Write ``record`` as JSON (atomically). Under DDP only rank zero writes; others return None.

    ``trainer`` is anything with Lightning's ``is_global_zero`` (a ``pl.Trainer``); without one the
    ``RANK`` environment variable decides."""
    if trainer is not None and not getattr(trainer, "is_global_zero", True):
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
