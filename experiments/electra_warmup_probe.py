"""Does a longer warm-up give lesson 03b's discriminator its foothold? A short ELECTRA pretraining.

Clark et al. warm up for 10,000 steps at batch 128: for thousands of steps their generator learns at a tiny
rate and its samples stay close to uniform, which a discriminator learns to catch at once (a rare character in
a common place; docs/experiments.md, "Which replacements the discriminator can learn from"). Lesson 03b warms
up for 300 steps at batch 12, and its generator reaches unigram quality within ~50 steps. This probe builds
lesson 03b's model and data exactly (``small``, generator ½, λ = 50, pre-LN, seed 0) and pretrains ``STEPS``
steps with ``WARMUP`` warm-up steps at the preset's rate, then prints the per-step training ROC-AUC of the
discriminator on the replaced characters, averaged over blocks of 500 steps, and
``electra.replaced_token_metrics`` on the first 50 held-out batches.

The baseline is the same columns of lesson 03b's own pretraining log (300 warm-up steps; its CSV is
``<runs>/small/pretrain/electra/logs/version_0/metrics.csv``): ``--baseline CSV`` prints its blocks beside.

Run: NBLIB_RUNS_DIR=<scratch> NBLIB_DATA_MIRROR=<mirror> .venv/bin/python experiments/electra_warmup_probe.py 3000 3000 \
        [--baseline <runs>/small/pretrain/electra/logs/version_0/metrics.csv]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import torch
from electra_lesson import pretraining_parts

from nblib.models import electra
from nblib.presets import get_preset
from nblib.training import pretraining

BLOCK = 500  # steps per printed block


def auc_blocks(csv_path: Path, steps: int) -> dict[int, float]:
    """Mean ``train_rtd_auc`` per block of ``BLOCK`` steps, up to ``steps``, from a Lightning CSV log."""
    sums: dict[int, list[float]] = {}
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("train_rtd_auc") and int(row["step"]) < steps:
                sums.setdefault(int(row["step"]) // BLOCK, []).append(float(row["train_rtd_auc"]))
    return {b: sum(v) / len(v) for b, v in sorted(sums.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("warmup", type=int, help="warm-up steps (lesson 03b: the preset's 300)")
    parser.add_argument("steps", type=int, help="steps to pretrain (lesson 03b: 9,481 at small)")
    parser.add_argument("--baseline", type=Path, help="lesson 03b's metrics.csv, printed beside")
    args = parser.parse_args()

    preset = get_preset("small").replace(warmup_steps=args.warmup)
    preset.configure_torch()
    _, lm_data, config = pretraining_parts(preset, seed=0, generator_size=0.5)
    torch.manual_seed(0)
    model = electra.ElectraForPreTraining(config)
    name = f"electra-warmup{args.warmup}"
    info = pretraining.pretrain(model, lm_data, preset, pretraining.PretrainingRun(name, seed=0, max_steps=args.steps, recipe={"probe_warmup": args.warmup}))
    print(f"warm-up {args.warmup}, {info['steps']} steps, {info['seconds']} s")
    logs = sorted((pretraining.runs_dir() / preset.name / "pretrain" / name / "logs").glob("version_*/metrics.csv"))
    probe = auc_blocks(logs[-1], args.steps) if logs else {}
    base = auc_blocks(args.baseline, args.steps) if args.baseline else {}
    print("steps | probe train ROC-AUC | lesson 03b train ROC-AUC")
    for b in sorted(set(probe) | set(base)):
        print(f"{b * BLOCK + 1}-{(b + 1) * BLOCK} | {probe.get(b, float('nan')):.3f} | {base.get(b, float('nan')):.3f}")
    held = electra.replaced_token_metrics(model, lm_data.heldout_dataloader(), max_batches=50, seed=0)
    print("held-out:", json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in held.items()}))


if __name__ == "__main__":
    main()
