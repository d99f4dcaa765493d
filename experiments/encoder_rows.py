"""The encoders' rows of a complete run (research log, "complete run of 88edcf0"). Per label count: each model/variant's mean test and OOD accuracy over seeds, and ELECTRA − BERT (pretrained)
with the comparison's paired bootstrap. Usage: python experiments/encoder_rows.py runs/small"""
import sys
from pathlib import Path

import numpy as np

from nblib.results import comparison as c

root = Path(sys.argv[1])
records = [r for r in c.load_records(root) if r.get("task", "sentiment") == "sentiment"]
labels = c.labels_from_records(records)
counts = sorted({r.get("label_count") for r in records}, key=lambda x: (x is None, x or 0))
print("model variant labels seeds test_acc(mean, min) ood_acc(mean)")
for model in ("bert", "electra", "gpt", "elmo"):
    for variant in ("pretrained", "random"):
        for n in counts:
            rs = [r for r in records if r["model"] == model and r["variant"] == variant and r.get("label_count") == n]
            if not rs:
                continue
            t = [c.correctness([r], labels["test"], "test")[0].mean() for r in rs]
            o = [c.correctness([r], labels["ood"], "ood")[0].mean() for r in rs] if "ood" in labels else [np.nan]
            print(model, variant, n or "all", len(rs), f"{np.mean(t):.3f} {np.min(t):.3f}", f"{np.mean(o):.3f}")
majority = labels["test"].value_counts(normalize=True).max()
print(f"majority class share of test: {majority:.3f}")
for n in counts:
    e = [r for r in records if r["model"] == "electra" and r["variant"] == "pretrained" and r.get("label_count") == n]
    b = [r for r in records if r["model"] == "bert" and r["variant"] == "pretrained" and r.get("label_count") == n]
    if not e or not b:
        continue
    for part in labels:
        p, ids = c.correctness(e, labels[part], part)
        q, _ = c.correctness(b, labels[part], part, ids)
        g = c.paired_gap(p, q)
        print(f"electra - bert (pretrained), labels {n or 'all'}, {part}: {g['gain']:+.1f} [{g['low']:+.1f}, {g['high']:+.1f}] {c.verdict(g['low'], g['high'])}")
