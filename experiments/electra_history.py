"""ELECTRA's discriminator over its pretraining, from a checkpoint's own history (research log, the 300-label rows of
the complete run of 88edcf0): means per window of optimiser steps of the training batches' replaced-token ROC-AUC,
recall at logit 0, and the generator's masked-LM accuracy, then the held-out scores the checkpoint keeps.

Usage: ``.venv/bin/python experiments/electra_history.py <runs>/small/pretrain/electra.pt [--window 1000]``"""
import argparse
import json

import numpy as np
import torch

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("checkpoint")
parser.add_argument("--window", type=int, default=1000, help="optimiser steps per row")
args = parser.parse_args()
info = json.loads(torch.load(args.checkpoint, map_location="cpu", weights_only=True)["info"])
history = [h for h in info["history"] if "rtd_auc" in h]
steps = np.array([h["step"] for h in history])
print(f"{'steps':>13} {'points':>6} {'ROC-AUC':>7} {'recall':>6} {'generator MLM acc':>17}")
for low in range(0, int(steps.max()) + 1, args.window):
    part = [h for h, s in zip(history, steps, strict=True) if low <= s < low + args.window]
    if part:
        mean = {k: np.mean([h[k] for h in part]) for k in ("rtd_auc", "rtd_recall", "mlm_acc")}
        print(f"{low:>6}-{low + args.window - 1:>6} {len(part):>6} {mean['rtd_auc']:>7.3f} {mean['rtd_recall']:>6.3f} "
              f"{mean['mlm_acc']:>17.3f}")
print("held-out at the end:", {k: info["val"][k] for k in ("rtd_auc", "rtd_recall", "rtd_precision", "mlm_acc")
                               if k in info["val"]})
