"""ELECTRA's published optimisation (linear decay to 0, gradient norm clipped at 1) against the shared loop's.

Lesson 03b pretrained ELECTRA with the course's shared pretraining loop: warm-up, then a cosine to 10% of the peak,
and no gradient clipping. Clark et al. decay linearly to 0 and clip the global gradient norm at 1
(``electra.PUBLISHED_OPTIMISATION``). This probe pretrains ELECTRA exactly as lesson 03b does (``small``: its corpus,
vocabulary, 5 M characters, generator 1/2, lambda = 50, pre-LN, seed 0) with the published optimisation into the
runs folder ``NBLIB_RUNS_DIR`` (a scratch folder: ``<runs>/small/pretrain/electra.pt``), measures the discriminator
on held-out text (replaced-token ROC-AUC, recall, RTD loss against the base rate), then fine-tunes the discriminator
as lesson 03b does (mean pooling, the preset's rate, ``Preset.few_label_epochs``, the same stratified subsets) at
the label counts and seeds given, as one-thread jobs on the course's pool, and prints validation only. With
``--baseline PATH`` (lesson 03b's ``electra.pt`` of a run made with the shared loop) it measures and fine-tunes that
checkpoint the same way, side by side.

Run: NBLIB_RUNS_DIR=<scratch> NBLIB_DATA_MIRROR=<mirror> .venv/bin/python experiments/electra_recipe_probe.py \
     --baseline <clone>/runs/small/pretrain/electra.pt --counts 100 1000 all --seeds 0
``--pretrain-chars N`` pretrains on another budget (three times `small`'s: is the replaced-token AUC budget-bound?).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
from electra_lesson import PRE_LN, RTD_WEIGHT, fine_tuning_discriminator, pretraining_parts

from nblib import course, data
from nblib.data import datamodules
from nblib.models import bert, electra
from nblib.presets import get_preset
from nblib.results.records import runs_dir
from nblib.training import pool, pretraining, saved_runs

GENERATOR_SIZE, SEED = 0.5, 0  # lesson 03b's defaults


def heldout(model, lm_data) -> dict:
    keys = ("roc_auc", "recall", "precision", "average_precision", "rtd_loss", "base_rate_entropy",
            "generator_mlm_acc")
    metrics = electra.replaced_token_metrics(model, lm_data.heldout_dataloader(), seed=SEED)
    return {k: round(float(metrics[k]), 4) for k in keys}


def finetune_run(*, checkpoint: str, name: str, n: int | None, seed: int, scratch: str,
                 preset_name: str) -> dict:
    """One fine-tuning of the discriminator in ``checkpoint`` as lesson 03b's; validation scores only."""
    preset = get_preset(preset_name)
    split = data.split().limit(preset.max_train_reviews, preset.max_eval_reviews)
    tokenizer, encoder = fine_tuning_discriminator(preset, checkpoint, seed, generator_size=GENERATOR_SIZE)
    frame = split.train if n is None else datamodules.subsample(split.train, n, seed=SEED)
    started = time.time()
    _, _, results = course.fit_variant(
        encoder, preset=preset, split=split, collate=saved_runs.TokenCollate(tokenizer, preset.max_len),
        pooling=bert.classification_pooling(nsp=False), seed=seed, lr=preset.finetune_lr_for("electra"),
        frame=frame, max_epochs=None if n is None else preset.few_label_epochs(n),
        run_dir=f"{scratch}/{name}-{n or 'all'}-{seed}")
    return {"checkpoint": name, "labels": n or "all", "seed": seed,
            "val_acc": round(results["val"]["accuracy"], 4), "val_f1": round(results["val"]["macro_f1"], 4),
            "seconds": round(time.time() - started)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="lesson 03b's electra.pt made with the shared loop's optimisation")
    parser.add_argument("--counts", nargs="+", default=["100", "1000", "all"], help="label counts; 'all'")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--preset", default="small", help="smoke: a quick check that the probe runs")
    parser.add_argument("--pretrain-chars", type=int, default=None,
                        help="another pretraining budget than the preset's (the fine-tunings are the lesson's)")
    args = parser.parse_args()
    preset = get_preset(args.preset)
    if args.pretrain_chars is not None:
        preset = preset.replace(pretrain_chars=args.pretrain_chars)
    preset.configure_torch()
    _, lm_data, config = pretraining_parts(preset, seed=SEED, generator_size=GENERATOR_SIZE)
    torch.manual_seed(SEED)
    model = electra.ElectraForPreTraining(config)
    recipe = {"objective": "electra", "pre_ln": PRE_LN, "generator_size": GENERATOR_SIZE, "rtd_weight": RTD_WEIGHT}
    info = pretraining.pretrain(model, lm_data, preset, pretraining.PretrainingRun("electra", seed=SEED, recipe=recipe, **electra.PUBLISHED_OPTIMISATION))
    path = runs_dir() / preset.name / "pretrain" / "electra.pt"
    print(f"published optimisation: {info['steps']} steps, {info['seconds']} s; held-out {info['val']}", flush=True)
    checkpoints = {"published": str(path)}
    rows = {"published": heldout(model, lm_data)}
    if args.baseline:
        base = electra.ElectraForPreTraining(config)
        base.load_state_dict(torch.load(args.baseline, map_location="cpu", weights_only=True)["state_dict"])
        checkpoints["shared loop"] = args.baseline
        rows["shared loop"] = heldout(base, lm_data)
    print("held-out replaced-token metrics:", json.dumps(rows, indent=1), flush=True)

    scratch = tempfile.mkdtemp(prefix="electra_recipe_probe_")
    counts = [None if c == "all" else int(c) for c in args.counts]
    jobs = [{"checkpoint": c, "name": name, "n": n, "seed": seed, "scratch": scratch,
             "preset_name": args.preset}
            for n in counts for seed in args.seeds for name, c in checkpoints.items()]
    results = pool.run_jobs(finetune_run, jobs, threads=1, desc="ELECTRA fine-tunings", cache=False)
    print(f"{'checkpoint':>12} {'labels':>6} {'seed':>4} {'val acc':>7} {'val F1':>6} {'seconds':>7}")
    for r in results:
        print(f"{r['checkpoint']:>12} {r['labels']:>6} {r['seed']:>4} {r['val_acc']:>7.4f} {r['val_f1']:>6.4f} "
              f"{r['seconds']:>7}")


if __name__ == "__main__":
    main()
