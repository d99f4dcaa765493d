"""How many validation passes does a label-efficiency run need, and would early stopping move its choice?

Runs lesson 03's label-efficiency grid (the course BERT pretrained and from random init, every seed and label
count of the preset, today's schedule: ``preset.few_label_epochs(n)`` epochs validated at most
``preset.max_val_checks`` times, the best check by validation macro-F1 kept) on the pool, then reads each run's
validation log and asks, on validation only (no test number is read):

- with half the validation passes (every other check, the last one kept), which check is chosen, and how far
  its validation macro-F1 falls below the chosen one's;
- with early stopping after ``patience`` checks without a better validation macro-F1, where the run stops (the
  share of its epochs saved) and whether it still keeps the same check.

Run (the preset's BERT checkpoint is pretrained first if the runs folder has none):
    NBLIB_DATA_MIRROR=../shared/data NBLIB_RUNS_DIR=<scratch> .venv/bin/python experiments/few_label_schedule.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from nblib import tasks
from nblib.course import finetune_variant
from nblib.data import datamodules
from nblib.data import split as fixed_split
from nblib.presets import get_preset
from nblib.results import records
from nblib.training import pool, saved_runs


def finetune(preset_name: str, variant: str, seed: int, n_labels: int) -> dict:
    """One label-efficiency run of lesson 03's BERT, as the lesson runs it; returns its record."""
    preset = get_preset(preset_name)
    course = tasks.course_encoder(preset, seed=0)
    split = fixed_split().limit(preset.max_train_reviews, preset.max_eval_reviews)
    frame = datamodules.subsample(split.train, n_labels, seed=0)
    _, record = finetune_variant(
        course.build(variant, seed=seed), model="bert", variant=variant, preset=preset, split=split, frame=frame,
        label_count=n_labels, collate=saved_runs.TokenCollate(course.tokenizer, preset.max_len), pooling="cls",
        seed=seed, max_epochs=preset.few_label_epochs(n_labels),
        pretraining=course.info if variant == "pretrained" else None)
    return record


def validation_curve(run_dir: Path) -> pd.DataFrame:
    """The run's validation checks (epoch, val_macro_f1), from its newest CSV log."""
    logs = sorted((run_dir / "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    frame = pd.read_csv(logs[-1])
    return frame.dropna(subset=["val_macro_f1"])[["epoch", "val_macro_f1"]].reset_index(drop=True)


def first_best(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))  # ties: the earliest, as ModelCheckpoint


def early_stop(values: list[float], patience: int) -> int:
    """How many checks a run with early stopping makes (it stops ``patience`` checks after its best)."""
    best, since = float("-inf"), 0
    for i, v in enumerate(values):
        if v > best:
            best, since = v, 0
        else:
            since += 1
            if since >= patience:
                return i + 1
    return len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--patience", type=int, nargs="*", default=[2, 3])
    args = parser.parse_args()
    preset = get_preset(args.preset)
    tasks.course_encoder(preset, seed=0)  # pretrain once here, before the workers need it
    grid = [{"preset_name": preset.name, "variant": variant, "seed": seed, "n_labels": n}
            for n in preset.label_counts for seed in preset.seeds for variant in ("pretrained", "random")]
    pool.run_jobs(finetune, grid, threads=preset.threads_per_job, desc="label-efficiency runs")
    rows = []
    for job in grid:
        run_dir = records.record_path(preset, "bert", job["variant"], job["seed"], job["n_labels"]).parent
        curve = validation_curve(run_dir)
        values = curve["val_macro_f1"].tolist()
        chosen = first_best(values)
        half = list(range(len(values) - 1, -1, -2))[::-1]  # every other check, the last one kept
        chosen_half = half[first_best([values[i] for i in half])]
        row = {"labels": job["n_labels"], "init": job["variant"], "seed": job["seed"], "checks": len(values),
               "epochs": int(curve["epoch"].iloc[-1]) + 1, "chosen check": chosen + 1,
               "val macro-F1": round(values[chosen], 4),
               "half the checks: chosen": chosen_half + 1,
               "half: val macro-F1 lost": round(values[chosen] - values[chosen_half], 4)}
        for p in args.patience:
            stop = early_stop(values, p)
            kept = first_best(values[:stop])
            row[f"patience {p}: checks made"] = stop
            row[f"patience {p}: same choice"] = kept == chosen
            row[f"patience {p}: val macro-F1 lost"] = round(values[chosen] - values[kept], 4)
        rows.append(row)
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 30)
    print(table.to_string(index=False))
    print("\nby label count (mean over inits and seeds):")
    summary = {"half the checks: val macro-F1 lost (mean, max)": table.groupby("labels")["half: val macro-F1 lost"]
               .agg(lambda s: f"{s.mean():.4f}, {s.max():.4f}")}
    for p in args.patience:
        summary[f"patience {p}: share of checks made"] = (table[f"patience {p}: checks made"] / table["checks"]
                                                          ).groupby(table["labels"]).mean().round(3)
        summary[f"patience {p}: same choice"] = table.groupby("labels")[f"patience {p}: same choice"].mean().round(3)
        summary[f"patience {p}: val macro-F1 lost (max)"] = table.groupby("labels")[
            f"patience {p}: val macro-F1 lost"].max()
    print(pd.DataFrame(summary).to_string())


if __name__ == "__main__":
    main()
