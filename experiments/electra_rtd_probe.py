"""Does lesson 03b's ELECTRA discriminator learn at the small size? A short pretraining at a given rate.

Builds the model and data exactly as notebook 03b_electra does (small preset, generator 1/4, lambda 50, pre-LN)
and pretrains ``STEPS`` steps at ``LR``; the Lightning CSV under ``$NBLIB_RUNS_DIR/small/pretrain/electra``
has ``train_rtd_acc`` and ``train_replaced_share`` per step (a discriminator stuck at the base rate has
rtd_acc = 1 - replaced_share). See docs/experiments.md, lesson 03b.

Run: NBLIB_RUNS_DIR=<scratch> NBLIB_DATA_MIRROR=<mirror> .venv/bin/python experiments/electra_rtd_probe.py 1e-3 1500
"""

from __future__ import annotations

import json
import sys

import torch
from electra_lesson import pretraining_parts

from nblib.models import electra
from nblib.presets import get_preset
from nblib.training import pretraining


def main(lr: float, steps: int) -> None:
    preset = get_preset("small")
    preset.configure_torch()
    _, lm_data, config = pretraining_parts(preset, seed=0, generator_size=0.25)
    torch.manual_seed(0)
    model = electra.ElectraForPreTraining(config)
    info = pretraining.pretrain(model, lm_data, preset, pretraining.PretrainingRun("electra", seed=0, max_steps=steps, lr=lr, recipe={"probe_lr": lr}))
    print("lr", lr, "steps", steps, "held-out", json.dumps(info.get("val")))


if __name__ == "__main__":
    main(float(sys.argv[1]), int(sys.argv[2]))
