"""The encoders' rows of a complete run (research log, "complete run of 88edcf0"): per label count, each
model's and variant's mean test and out-of-domain accuracy over its seeds (and its lowest seed), then ELECTRA
minus BERT, both pretrained, with the comparison's paired bootstrap (``comparison.records_gap``).

Usage: ``.venv/bin/python experiments/encoder_rows.py runs/small``"""
import sys
from pathlib import Path

import numpy as np

from nblib.results import comparison

records = [r for r in comparison.load_records(Path(sys.argv[1])) if r.get("task", "sentiment") == "sentiment"]
labels = comparison.labels_from_records(records)
counts = sorted({r.get("label_count") for r in records}, key=lambda n: (n is None, n or 0))


def row(model: str, variant: str, count: int | None) -> list[dict]:
    return [r for r in records if r["model"] == model and r["variant"] == variant and r.get("label_count") == count]


print("model variant labels seeds test accuracy (mean, lowest seed) ood accuracy (mean)")
for model in ("bert", "electra", "gpt", "elmo"):
    for variant in ("pretrained", "random"):
        for count in counts:
            if seeds := row(model, variant, count):
                test = [r["test"]["accuracy"] for r in seeds]
                ood = [r["ood"]["accuracy"] for r in seeds if r.get("ood")] or [np.nan]
                print(model, variant, count or "all", len(seeds), f"{np.mean(test):.3f} {min(test):.3f}",
                      f"{np.mean(ood):.3f}")
print(f"majority class share of test: {labels['test'].value_counts(normalize=True).max():.3f}")
for count in counts:
    electra, bert = row("electra", "pretrained", count), row("bert", "pretrained", count)
    if electra and bert:
        for part, part_labels in labels.items():
            g = comparison.records_gap(electra, bert, part_labels, part)
            print(f"electra - bert (pretrained), labels {count or 'all'}, {part}: {g['gain']:+.1f} "
                  f"[{g['low']:+.1f}, {g['high']:+.1f}] {comparison.verdict(g['low'], g['high'])}")
