"""Why do lesson 03's few-label runs sit at the majority class? A recipe probe on validation only.

Lesson 03's BERT (the cached ``runs/<preset>/pretrain/bert.pt``, pretrained or random init) is fine-tuned
on the same stratified subsets lesson 03 uses (``datamodules.subsample``, seed 0) under two schedules:

- ``epochs``: today's ``Preset.few_label_epochs`` (until ~3,000 reviews are seen, at most 10 epochs:
  100 labels = 40 optimiser steps);
- ``steps``: at least ``MIN_STEPS`` optimiser steps (``Preset.few_label_min_steps``; 100 labels at
  batch 32 = 4 steps an epoch), validated at most ``max_val_checks`` times.

It prints validation accuracy and macro-F1 (never test: the choice is made on validation) and the
seconds of each run. Records go to a scratch folder, not to ``runs/<preset>/``.

Run: NBLIB_DATA_MIRROR=<mirror> .venv/bin/python experiments/few_label_probe.py 150 [COUNTS ...]
(in a checkout whose runs/small/pretrain/bert.pt exists; see docs/experiments.md, lesson 03).
"""

from __future__ import annotations

import math
import sys
import tempfile
import time

from nblib import course, data, tasks
from nblib.data import datamodules
from nblib.presets import get_preset
from nblib.training import saved_runs


def main(min_steps: int, counts: tuple[int, ...] = (100, 300)) -> None:
    preset = get_preset("small")
    preset.configure_torch()
    split = data.split().limit(preset.max_train_reviews, preset.max_eval_reviews)
    encoder = tasks.course_encoder(preset, seed=0)  # lesson 03's pretrained BERT, read back
    collate = saved_runs.TokenCollate(encoder.tokenizer, preset.max_len)
    scratch = tempfile.mkdtemp(prefix="few_label_probe_")
    print(f"{'labels':>6} {'init':>10} {'schedule':>8} {'epochs':>6} {'steps':>5} {'val acc':>7} "
          f"{'val F1':>6} {'seconds':>7}")
    for n in counts:
        subset = datamodules.subsample(split.train, n, seed=0)
        per_epoch = math.ceil(len(subset) / preset.finetune_batch_size)
        schedules = {"epochs": preset, "steps": preset.replace(few_label_min_steps=min_steps)}
        for init in ("pretrained", "random"):
            for name, schedule in schedules.items():
                epochs = schedule.few_label_epochs(n)
                started = time.time()
                _, _, results = course.fit_variant(
                    encoder.build(init, seed=0), preset=schedule, split=split, collate=collate, pooling="cls",
                    seed=0, lr=preset.finetune_lr_for("bert", init), frame=subset, max_epochs=epochs,
                    run_dir=f"{scratch}/{n}-{init}-{name}")
                print(f"{n:>6} {init:>10} {name:>8} {epochs:>6} {epochs * per_epoch:>5} "
                      f"{results['val']['accuracy']:>7.3f} {results['val']['macro_f1']:>6.3f} "
                      f"{time.time() - started:>7.0f}", flush=True)


if __name__ == "__main__":
    # e.g. `few_label_probe.py 300 1000`: a floor of 300 steps, probed at 1,000 labels only
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 150,
         tuple(int(n) for n in sys.argv[2:]) or (100, 300))
