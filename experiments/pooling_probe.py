"""Mean pooling or ``[CLS]`` + pooler for lesson 03's BERT? A probe on validation only, at every label count.

Lesson 03 pretrains BERT with masked LM and no next-sentence prediction, so neither the ``[CLS]`` output nor the
pooler (tanh(W h_[CLS] + b)) is ever trained before fine-tuning; the mean of the last layer reads positions the
masked LM did train. Earlier probes (docs/experiments.md, lesson 03) found mean pooling ~10 points better on
validation at 100 labels for the pretrained encoder and level with all labels. This probe runs the lesson's own
fine-tuning (``course.fit_variant``, the preset's learning rate per init, ``Preset.few_label_epochs``, the same
stratified subsets as lesson 03) for both inits and both poolings at the label counts given, as one-thread jobs
on the course's pool (``nblib.training.pool``), and prints validation accuracy and macro-F1 only (the choice is made on
validation; nothing here reads test or out-of-domain scores). Runs go to a scratch folder, not ``runs/<preset>/``.
``--lrs`` replaces the preset's fine-tuning rate by each rate of a grid (the same grid for both inits).

Run (in a checkout whose ``runs/small/pretrain/bert.pt`` exists, e.g. after ``make report``):
    NBLIB_DATA_MIRROR=<mirror> .venv/bin/python experiments/pooling_probe.py --counts 1000 all --seeds 0
    NBLIB_DATA_MIRROR=<mirror> .venv/bin/python experiments/pooling_probe.py --counts 100 1000 --seeds 0 1 \
        --poolings mean --lrs 1e-4 5e-4
"""

from __future__ import annotations

import argparse
import tempfile
import time

from nblib import course, data, tasks
from nblib.data import datamodules
from nblib.presets import get_preset
from nblib.training import pool, saved_runs


def probe_run(*, init: str, pooling: str, n: int | None, seed: int, scratch: str, lr: float | None = None) -> dict:
    """One fine-tuning of lesson 03's BERT (``init`` pretrained or random) with ``pooling`` at ``lr`` (None: the
    preset's rate for the init); validation scores."""
    preset = get_preset("small")
    split = data.split().limit(preset.max_train_reviews, preset.max_eval_reviews)
    encoder = tasks.course_encoder(preset, seed=0)
    collate = saved_runs.TokenCollate(encoder.tokenizer, preset.max_len)
    frame = split.train if n is None else datamodules.subsample(split.train, n, seed=0)
    epochs = None if n is None else preset.few_label_epochs(n)
    lr = preset.finetune_lr_for("bert", init) if lr is None else lr
    started = time.time()
    _, _, results = course.fit_variant(
        encoder.build(init, seed=seed), preset=preset, split=split, collate=collate, pooling=pooling, seed=seed,
        lr=lr, frame=frame, max_epochs=epochs, run_dir=f"{scratch}/{n or 'all'}-{init}-{pooling}-{seed}-{lr:g}")
    return {"labels": n or "all", "init": init, "pooling": pooling, "seed": seed, "lr": lr,
            "val_acc": round(results["val"]["accuracy"], 4), "val_f1": round(results["val"]["macro_f1"], 4),
            "seconds": round(time.time() - started)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", nargs="+", default=["1000", "all"], help="label counts; 'all' for every review")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--inits", nargs="+", default=["pretrained", "random"], choices=("pretrained", "random"))
    parser.add_argument("--poolings", nargs="+", default=["cls", "mean"], choices=("cls", "mean"))
    parser.add_argument("--lrs", nargs="+", type=float, default=[None],
                        help="fine-tuning rates to try (default: the preset's rate for each init)")
    args = parser.parse_args()
    counts = [None if c == "all" else int(c) for c in args.counts]
    scratch = tempfile.mkdtemp(prefix="pooling_probe_")
    jobs = [{"init": init, "pooling": pooling, "n": n, "seed": seed, "scratch": scratch, "lr": lr}
            for n in counts for seed in args.seeds for init in args.inits for pooling in args.poolings
            for lr in args.lrs]
    rows = pool.run_jobs(probe_run, jobs, threads=1, desc="pooling probe runs", cache=False)
    print(f"{'labels':>6} {'init':>10} {'pooling':>7} {'lr':>7} {'seed':>4} {'val acc':>7} {'val F1':>6} {'seconds':>7}")
    for r in rows:
        print(f"{r['labels']:>6} {r['init']:>10} {r['pooling']:>7} {r['lr']:>7g} {r['seed']:>4} {r['val_acc']:>7.4f} "
              f"{r['val_f1']:>6.4f} {r['seconds']:>7}")


if __name__ == "__main__":
    main()
